"""The opening handshake (RFC 6455 section 4), sans-I/O.

:func:`validate_request` reads a WSGI environ and either returns what the
server answers with ``101 Switching Protocols`` or raises :class:`Reject`
carrying the HTTP status, headers and plain-text reason to answer instead.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from .exceptions import Reject
from .protocol import Extension

__all__ = [
    "GUID",
    "Accept",
    "Reject",
    "accept_key",
    "check_origin",
    "header_tokens",
    "select_subprotocol",
    "validate_request",
]

GUID: Final = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: RFC 6455 4.2.1: a key is "a base64-encoded value that, when decoded, is 16 bytes in
#: length". That is exactly 22 base64 digits and "==" (what b64decode(validate=True)
#: accepts as 16 bytes), checked without decoding.
_KEY_RE: Final = re.compile(r"[A-Za-z0-9+/]{22}==")

#: Negotiates an extension from the request's ``Sec-WebSocket-Extensions`` value:
#: returns the response header value and the extension, or None to decline.
ExtensionNegotiator = Callable[[str], "tuple[str, Extension] | None"]


@dataclass
class Accept:
    """A valid handshake: what the 101 response says."""

    key: str
    subprotocol: str | None = None
    extension: Extension | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)

    def response_headers(self) -> list[tuple[str, str]]:
        headers = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept_key(self.key)),
        ]
        if self.subprotocol is not None:
            headers.append(("Sec-WebSocket-Protocol", self.subprotocol))
        headers.extend(self.headers)
        return headers


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return binascii.b2a_base64(digest, newline=False).decode("ascii")  # (b64encode's C part)


def header_tokens(value: str | None) -> list[str]:
    """The comma-separated tokens of a header value, stripped (servers join repeats with ',')."""
    if not value:
        return []
    return [token.strip() for token in value.split(",") if token.strip()]


def is_upgrade_request(environ: Mapping[str, Any]) -> bool:
    """Does this request ask for a WebSocket (``Upgrade: websocket``)?"""
    upgrade = environ.get("HTTP_UPGRADE")
    return bool(upgrade) and "websocket" in (t.lower() for t in header_tokens(upgrade))


def select_subprotocol(offered: Iterable[str], supported: Sequence[str]) -> str | None:
    """The first of the server's ``supported`` subprotocols the client offered (exact match)."""
    offered_set = set(offered)
    for name in supported:
        if name in offered_set:
            return name
    return None


def _origin_netloc(origin: str) -> tuple[str, str] | None:
    """``(scheme, host[:port])`` of an Origin header, with default ports dropped."""
    scheme, sep, rest = origin.partition("://")
    if not sep or not rest or "/" in rest:
        return None
    scheme = scheme.lower()
    host = rest.lower()
    default = {"http": ":80", "https": ":443", "ws": ":80", "wss": ":443"}.get(scheme)
    if default and host.endswith(default):
        host = host[: -len(default)]
    return scheme, host


def check_origin(
    origin: str | None, host: str | None, allowed: Sequence[str] | None, *, secure: bool = False
) -> bool:
    """Is a request from ``origin`` to ``host`` allowed?

    No Origin header (a non-browser client): allowed. With ``allowed`` None the
    Origin's host and port must equal the Host header (same origin); otherwise
    the Origin must be listed exactly, or ``"*"`` must be listed.
    """
    if origin is None:
        return True
    if allowed is not None:
        if "*" in allowed:
            return True
        parsed = _origin_netloc(origin)
        wanted = {_origin_netloc(a) for a in allowed}
        return (parsed is not None and parsed in wanted) or origin in allowed
    parsed = _origin_netloc(origin)
    if parsed is None or not host:
        return False
    host = host.strip().lower()
    default = ":443" if secure else ":80"
    if host.endswith(default):
        host = host[: -len(default)]
    return parsed[1] == host


def validate_request(
    environ: Mapping[str, Any],
    *,
    subprotocols: Sequence[str] = (),
    require_subprotocol: bool = False,
    origins: Sequence[str] | None = None,
    negotiate_extension: ExtensionNegotiator | None = None,
) -> Accept:
    """Check an upgrade request; return what to accept it with, or raise :class:`Reject`."""
    if environ.get("REQUEST_METHOD") != "GET":
        raise Reject(400, "WebSocket handshake must use GET")
    version = environ.get("SERVER_PROTOCOL", "")
    if version != "HTTP/1.1" and (
        not version.startswith("HTTP/") or _version_tuple(version[5:]) < (1, 1)
    ):
        raise Reject(400, "WebSocket handshake needs HTTP/1.1 or later")
    host = environ.get("HTTP_HOST")
    if not host:
        raise Reject(400, "missing Host header")
    # (The fast paths: the values every client sends, compared before tokenizing.)
    upgrade = environ.get("HTTP_UPGRADE")
    if upgrade != "websocket" and "websocket" not in [t.lower() for t in header_tokens(upgrade)]:
        raise Reject(
            426,
            "this endpoint speaks WebSocket only (missing 'Upgrade: websocket')",
            [("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
        )
    connection = environ.get("HTTP_CONNECTION")
    if connection != "Upgrade" and "upgrade" not in (t.lower() for t in header_tokens(connection)):
        raise Reject(400, "missing 'Connection: Upgrade'")
    if environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip() != "13":
        raise Reject(
            426,
            "unsupported Sec-WebSocket-Version (this server speaks 13)",
            [("Sec-WebSocket-Version", "13")],
        )
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
    if _KEY_RE.fullmatch(key) is None:
        raise Reject(400, "Sec-WebSocket-Key must be the base64 of 16 bytes")
    origin = environ.get("HTTP_ORIGIN")
    if origin is not None and not check_origin(
        origin, host, origins, secure=environ.get("wsgi.url_scheme") == "https"
    ):
        raise Reject(403, f"origin {origin!r} is not allowed")
    subprotocol = None
    if subprotocols:
        offered = header_tokens(environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL"))
        subprotocol = select_subprotocol(offered, subprotocols)
    if subprotocol is None and require_subprotocol:
        raise Reject(
            400,
            "no supported subprotocol offered (supported: " + ", ".join(subprotocols) + ")",
        )
    accept = Accept(key=key, subprotocol=subprotocol)
    extensions = environ.get("HTTP_SEC_WEBSOCKET_EXTENSIONS")
    if extensions and negotiate_extension is not None:
        negotiated = negotiate_extension(extensions)
        if negotiated is not None:
            header, accept.extension = negotiated
            accept.headers.append(("Sec-WebSocket-Extensions", header))
    return accept


def _version_tuple(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return (0, 0)
