"""Exceptions a WebSocket user can catch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

__all__ = [
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "HandshakeRejected",
    "HijackError",
    "InvalidHandshake",
    "InvalidState",
    "InvalidURI",
    "PolicyViolation",
    "ReceiveTimeout",
    "Reject",
    "WebSocketError",
]


class WebSocketError(Exception):
    """Base class of wsgiws's own errors."""


class ConnectionClosed(WebSocketError):
    """The connection is closed; ``code`` and ``reason`` say how.

    ``code`` is the peer's close code when the peer closed (1005 if its close
    frame carried none), ours when we closed first or failed the connection,
    and 1006 when TCP ended without a closing handshake.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"WebSocket closed with code {self.code}" + (
            f": {self.reason}" if self.reason else ""
        )


class ConnectionClosedOK(ConnectionClosed):
    """A normal close (1000, 1001, or a close frame with no code)."""


class ConnectionClosedError(ConnectionClosed):
    """Anything else: a protocol error, an abnormal end (1006), a keepalive timeout (1011)."""


class PolicyViolation(WebSocketError):
    """Raised by a :class:`~wsgiws.observer.ConnectionObserver` to close a connection.

    The connection closes with ``code`` (1008 Policy Violation by default) and
    ``reason``; the message that caused it is not delivered.
    """

    def __init__(self, reason: str = "", code: int = 1008) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class InvalidState(WebSocketError, RuntimeError):
    """The operation is not allowed in the connection's state (sending after the close started).

    A ``RuntimeError`` too, for code written against earlier versions. The
    :class:`~wsgiws.WebSocket` turns it into :class:`ConnectionClosed` for its users.
    """


class ReceiveTimeout(WebSocketError, TimeoutError):
    """``receive(timeout=...)`` waited that long and no message came. The connection stays open."""


class HijackError(WebSocketError):
    """The WSGI server gives no access to its socket, so it cannot carry a WebSocket."""


class InvalidURI(WebSocketError, ValueError):
    """A client was given a URI that is not a valid ``ws://`` or ``wss://`` URI."""


class InvalidHandshake(WebSocketError):
    """A client's opening handshake failed: the server's answer breaks RFC 6455 section 4."""


class HandshakeRejected(InvalidHandshake):
    """The server answered the opening handshake with something other than ``101``.

    ``status`` is the HTTP status code, ``headers`` the response headers (a list of
    ``(name, value)`` pairs in the order received) and ``body`` the start of the response
    body (bounded), so a caller can see why: a 403 for a foreign Origin, a 404, a 426.
    """

    def __init__(
        self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``default``."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return default

    def __str__(self) -> str:
        text = f"server rejected WebSocket connection: HTTP {self.status}"
        if self.reason:
            text += f" {self.reason}"
        snippet = self.body[:200].decode("utf-8", "replace").strip()
        return text + (f" ({snippet})" if snippet else "")


class Reject(Exception):
    """Refuse a WebSocket request with an ordinary HTTP response.

    Raised by the handshake for a bad request, and by handlers that refuse a
    connection before accepting it (``raise Reject(403, "members only")``).
    """

    def __init__(
        self,
        status: int,
        reason: str = "",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.headers = list(headers)

    def response(self) -> tuple[str, list[tuple[str, str]], bytes]:
        """The WSGI status line, headers and body for this refusal."""
        body = (self.reason or _REASONS.get(self.status, "Error")).encode("utf-8") + b"\n"
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            *self.headers,
        ]
        return f"{self.status} {_REASONS.get(self.status, 'Error')}", headers, body


_REASONS: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    426: "Upgrade Required",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}
