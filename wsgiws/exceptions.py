"""Exceptions a WebSocket user can catch."""

from __future__ import annotations

from .handshake import Reject

__all__ = [
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "HijackError",
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


class ReceiveTimeout(WebSocketError, TimeoutError):
    """``receive(timeout=...)`` waited that long and no message came. The connection stays open."""


class HijackError(WebSocketError):
    """The WSGI server gives no access to its socket, so it cannot carry a WebSocket."""
