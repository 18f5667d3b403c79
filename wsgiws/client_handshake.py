"""The client side of the opening handshake (RFC 6455 section 4.1), sans-I/O.

:func:`parse_uri` checks a ``ws://`` or ``wss://`` URI; :class:`ClientHandshake`
builds the upgrade request (with a fresh random key) and reads the server's
answer incrementally. The response head is bounded; a ``101`` is validated
(``Upgrade``, ``Connection``, ``Sec-WebSocket-Accept``, subprotocol, extension)
and anything else becomes :class:`~wsgiws.exceptions.HandshakeRejected` with the
status, headers and the start of the body. Nothing here touches a socket.
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote, urlsplit

from .deflate import DeflateOptions, NegotiationError, client_accept, client_offer
from .exceptions import HandshakeRejected, InvalidHandshake, InvalidURI
from .handshake import accept_key, header_tokens
from .http import MAX_HEAD_SIZE, HeadError, HeadReader, parse_response_head
from .protocol import Extension

__all__ = [
    "ClientHandshake",
    "HandshakeResult",
    "WebSocketURI",
    "header_list",
    "parse_uri",
]

#: How much of a refusal's body is kept for the exception.
MAX_BODY_SIZE: Final = 64 * 1024

#: Request headers the handshake owns; a user may not set them.
RESERVED_HEADERS: Final = frozenset(
    {
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-accept",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "content-length",
        "transfer-encoding",
    }
)

USER_AGENT: Final = f"wsgiws (Python {sys.version_info[0]}.{sys.version_info[1]})"

HeadersLike = Mapping[str, str] | Iterable[tuple[str, str]]


@dataclass(frozen=True)
class WebSocketURI:
    """A parsed ``ws://`` or ``wss://`` URI."""

    secure: bool
    host: str
    port: int
    #: Path and query, percent-encoded, as sent in the request line.
    resource: str = "/"
    #: ``(user, password)`` from ``ws://user:password@host/`` (sent as Basic auth).
    user_info: tuple[str, str] | None = None

    @property
    def default_port(self) -> bool:
        return self.port == (443 if self.secure else 80)

    @property
    def host_header(self) -> str:
        """The ``Host`` header: brackets around an IPv6 literal, the port unless default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.default_port else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{'wss' if self.secure else 'ws'}://{self.host_header}{self.resource}"


def parse_uri(uri: str) -> WebSocketURI:
    """Split a WebSocket URI (RFC 6455 section 3) or raise :class:`InvalidURI`."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise InvalidURI(f"{uri!r} is not a valid URI: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise InvalidURI(f"{uri!r} is not a WebSocket URI (scheme must be ws or wss)")
    if "#" in uri:
        raise InvalidURI(f"{uri!r}: a WebSocket URI cannot have a fragment")
    host = parts.hostname
    if not host:
        raise InvalidURI(f"{uri!r} has no host")
    secure = scheme == "wss"
    if port is None:
        port = 443 if secure else 80
    path = parts.path or "/"
    resource = path + (f"?{parts.query}" if parts.query else "")
    # Percent-encode what cannot appear in a request line (spaces, non-ASCII), keep the rest.
    resource = quote(resource, safe="!#$%&'()*+,/:;=?@[]~")
    user_info = None
    if parts.username is not None:
        user_info = (unquote(parts.username), unquote(parts.password or ""))
    return WebSocketURI(secure, host, port, resource, user_info)


def header_list(headers: HeadersLike | None) -> list[tuple[str, str]]:
    """Extra request headers as checked ``(name, value)`` pairs (ValueError if invalid)."""
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    result = []
    for name, value in items:
        name, value = str(name), str(value)
        if not name or any(c in name for c in ":\r\n \t") or any(c in value for c in "\r\n"):
            raise ValueError(f"invalid header {name!r}: {value!r}")
        result.append((name, value))
    return result


@dataclass
class HandshakeResult:
    """What a successful handshake agreed on."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    subprotocol: str | None = None
    extension: Extension | None = None
    #: Bytes after the response head: the first frames from the server.
    leftover: bytes = b""


class ClientHandshake:
    """One opening handshake, client side.

    >>> hs = ClientHandshake(parse_uri("ws://example.com/chat"), subprotocols=["chat"])
    >>> request = hs.request()          # write these bytes
    >>> hs.receive_data(b"HTTP/1.1 101 ...")   # feed what comes back until it returns True
    >>> result = hs.result()            # or InvalidHandshake / HandshakeRejected

    ``compression`` is the permessage-deflate offer (None: offer no extension).
    The key is fresh and random unless given (tests).
    """

    def __init__(
        self,
        uri: WebSocketURI,
        *,
        subprotocols: Sequence[str] | None = None,
        headers: HeadersLike | None = None,
        origin: str | None = None,
        compression: DeflateOptions | None = None,
        user_agent: str | None = USER_AGENT,
        key: str | None = None,
        max_head_size: int = MAX_HEAD_SIZE,
        max_body_size: int = MAX_BODY_SIZE,
    ) -> None:
        self.uri = uri
        self.subprotocols = list(subprotocols or ())
        for name in self.subprotocols:
            if not name or any(c in name for c in ', \t\r\n;"') or not name.isprintable():
                raise ValueError(f"invalid subprotocol name {name!r}")
        self.extra_headers = header_list(headers)
        for name, _ in self.extra_headers:
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by the WebSocket handshake itself")
        self.origin = origin
        self.compression = compression
        self.user_agent = user_agent
        self.key = key if key is not None else base64.b64encode(os.urandom(16)).decode("ascii")
        self.max_head_size = max_head_size
        self.max_body_size = max_body_size
        self._reader = HeadReader(max_head_size)
        self._head: tuple[int, str, list[tuple[str, str]]] | None = None
        self._body = bytearray()
        self._body_left: int | None = None  # Content-Length still to come
        self._chunked = False
        self._eof = False
        self._done = False
        self.leftover = b""

    # ---------------------------------------------------------------- request

    def request_headers(self) -> list[tuple[str, str]]:
        names = {name.lower() for name, _ in self.extra_headers}
        headers: list[tuple[str, str]] = []
        if "host" not in names:
            headers.append(("Host", self.uri.host_header))
        headers += [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", self.key),
            ("Sec-WebSocket-Version", "13"),
        ]
        if self.origin is not None and "origin" not in names:
            headers.append(("Origin", self.origin))
        if self.subprotocols:
            headers.append(("Sec-WebSocket-Protocol", ", ".join(self.subprotocols)))
        if self.compression is not None:
            headers.append(("Sec-WebSocket-Extensions", client_offer(self.compression)))
        if self.uri.user_info is not None and "authorization" not in names:
            user, password = self.uri.user_info
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            headers.append(("Authorization", f"Basic {token}"))
        if self.user_agent and "user-agent" not in names:
            headers.append(("User-Agent", self.user_agent))
        return headers + self.extra_headers

    def request(self) -> bytes:
        """The upgrade request to send."""
        lines = [f"GET {self.uri.resource} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in self.request_headers()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")

    # --------------------------------------------------------------- response

    def receive_data(self, data: bytes) -> bool:
        """Feed bytes from the server; True once the response is complete.

        Raises :class:`InvalidHandshake` for a malformed or oversized response head.
        """
        if self._done:
            self.leftover += bytes(data)
            return True
        if self._head is None:
            data = self._parse_head(data)
            if self._head is None:
                return False
            if self._head[0] == 101:
                self.leftover = data
                self._done = True
                return True
        self._take_body(data)
        return self._done

    def receive_eof(self) -> None:
        """The server closed the connection."""
        self._eof = True
        if self._head is None:
            raise InvalidHandshake(
                "connection closed during the opening handshake"
                + (
                    f" after {self._reader.buffered} bytes of response"
                    if self._reader.buffered
                    else ""
                )
            )
        self._done = True

    def _parse_head(self, data: bytes) -> bytes:
        """Feed the head reader; once the final head is read, return the bytes after it."""
        while True:
            try:
                head = self._reader.feed(data)
                if head is None:
                    return b""
                parsed = parse_response_head(head)
            except HeadError as exc:
                raise InvalidHandshake(f"bad response: {exc}") from None
            data = self._reader.rest
            if 100 <= parsed.status < 200 and parsed.status != 101:
                continue  # interim (100 Continue, 103 Early Hints): the real answer follows
            self._head = (parsed.status, parsed.reason, parsed.headers)
            return data

    def _take_body(self, data: bytes) -> None:
        assert self._head is not None
        if self._body_left is None and not self._chunked:
            headers = self._head[2]
            encoding = [t.lower() for t in header_tokens(_get_all(headers, "transfer-encoding"))]
            length = _get_all(headers, "content-length")
            if "chunked" in encoding:
                self._chunked = True
            elif length is not None:
                try:
                    self._body_left = int(length.split(",")[0].strip())
                except ValueError:
                    self._body_left = self.max_body_size
            elif self._head[0] in (204, 304) or self._head[0] < 200:
                self._body_left = 0
            else:
                self._body_left = -1  # until EOF
        self._body += data
        if self._chunked:
            body, finished = _dechunk(bytes(self._body), self.max_body_size)
            if finished or len(body) >= self.max_body_size:
                self._done = True
        elif self._body_left is not None and self._body_left >= 0:
            if len(self._body) >= min(self._body_left, self.max_body_size):
                self._done = True
        elif len(self._body) >= self.max_body_size:
            self._done = True

    def _response_body(self) -> bytes:
        if self._chunked:
            return _dechunk(bytes(self._body), self.max_body_size)[0]
        limit = self.max_body_size
        if self._body_left is not None and self._body_left >= 0:
            limit = min(limit, self._body_left)
        return bytes(self._body[:limit])

    def result(self) -> HandshakeResult:
        """Validate the complete response: the agreed parameters, or an exception."""
        if not self._done or self._head is None:
            raise InvalidHandshake("the handshake response is incomplete")
        status, reason, headers = self._head
        if status != 101:
            raise HandshakeRejected(status, reason, headers, self._response_body())
        upgrade = _get_all(headers, "upgrade")
        if upgrade is None or upgrade.strip().lower() != "websocket":
            raise InvalidHandshake(f"101 response without 'Upgrade: websocket' (got {upgrade!r})")
        connection = [t.lower() for t in header_tokens(_get_all(headers, "connection"))]
        if "upgrade" not in connection:
            raise InvalidHandshake("101 response without 'Connection: Upgrade'")
        accept = _get_list(headers, "sec-websocket-accept")
        if len(accept) != 1:
            raise InvalidHandshake(
                "101 response without Sec-WebSocket-Accept"
                if not accept
                else "101 response with several Sec-WebSocket-Accept headers"
            )
        if accept[0].strip() != accept_key(self.key):
            raise InvalidHandshake(
                f"wrong Sec-WebSocket-Accept {accept[0].strip()!r} "
                f"(expected {accept_key(self.key)!r})"
            )
        subprotocol = None
        protocols = _get_list(headers, "sec-websocket-protocol")
        if protocols:
            tokens = header_tokens(", ".join(protocols))
            if len(tokens) != 1:
                raise InvalidHandshake(f"server chose several subprotocols: {tokens}")
            if tokens[0] not in self.subprotocols:
                raise InvalidHandshake(
                    f"server chose subprotocol {tokens[0]!r}, which was not offered"
                    + (f" (offered: {', '.join(self.subprotocols)})" if self.subprotocols else "")
                )
            subprotocol = tokens[0]
        extension: Extension | None = None
        extensions = _get_list(headers, "sec-websocket-extensions")
        if extensions:
            value = ", ".join(extensions)
            if self.compression is None:
                raise InvalidHandshake(
                    f"server accepted extension(s) {value!r}, but none were offered"
                )
            try:
                extension = client_accept(value, self.compression)
            except NegotiationError as exc:
                raise InvalidHandshake(f"bad Sec-WebSocket-Extensions: {exc}") from None
        return HandshakeResult(status, reason, headers, subprotocol, extension, self.leftover)


def _get_list(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in headers if key.lower() == name]


def _get_all(headers: list[tuple[str, str]], name: str) -> str | None:
    values = _get_list(headers, name)
    return ", ".join(values) if values else None


def _dechunk(data: bytes, limit: int) -> tuple[bytes, bool]:
    """Decode as much of a chunked body as has arrived: (body so far, finished)."""
    out = bytearray()
    pos = 0
    while len(out) < limit:
        line_end = data.find(b"\r\n", pos)
        if line_end == -1:
            return bytes(out), False
        size_text = data[pos:line_end].split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return bytes(out), True  # malformed: keep what we have
        if size == 0:
            return bytes(out), True
        start = line_end + 2
        out += data[start : start + size]
        if len(data) < start + size + 2:
            return bytes(out[:limit]), False
        pos = start + size + 2
    return bytes(out[:limit]), True
