"""What a connection reports about itself: the one hook that logs, metrics and limits use.

The connection layer (:mod:`wsgiws.websocket`) holds at most one observer per
WebSocket (``WebSocket(observer=...)``, also ``ws.observer``) and calls it at
these points only. With no observer the cost is one ``is None`` test per
message (none when the observer needs no call per message: see its
``per_message``). Observers run in the greenlet (or thread) that moves the
message, so they must be quick and must not block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from .websocket import WebSocket

__all__ = ["CloseInitiator", "ConnectionObserver"]

#: Who ended a connection: we sent the first close frame ("local"), the peer did
#: ("remote"), or TCP ended without a closing handshake ("abnormal", code 1006).
CloseInitiator = Literal["local", "remote", "abnormal"]


class ConnectionObserver(Protocol):
    """The hooks below; and an optional attribute ``per_message`` (True when absent),
    read once when the connection opens. False: :meth:`message_received` and
    :meth:`message_sent` are never called, which saves two calls per message; what
    passed is in ``ws.traffic`` (counted by the engine)."""

    def opened(self, ws: WebSocket) -> None:
        """The opening handshake completed (server: the 101 went out; client: it came in)."""

    def message_received(self, ws: WebSocket, text: bool, size: int) -> bool:
        """A whole data message arrived (``size``: payload bytes after inflation).

        Return False to drop it (it is not handed to the application). May raise
        :class:`wsgiws.exceptions.PolicyViolation`: the connection then closes with
        that exception's code and reason and the message is not delivered.
        """

    def message_sent(self, ws: WebSocket, text: bool, size: int) -> None:
        """A whole data message went to the writer (``size``: payload bytes before deflate)."""

    def pong_received(self, ws: WebSocket, rtt: float) -> None:
        """A pong answered one of our pings (keepalive's or ``ping()``'s) after ``rtt`` seconds."""

    def closed(self, ws: WebSocket, code: int, reason: str, initiator: CloseInitiator) -> None:
        """The connection ended (called once; ``code`` as in ``ws.close_code``)."""
