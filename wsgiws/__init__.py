"""wsgiws: WebSockets (RFC 6455) for WSGI applications on gevent and gunicorn.

The pieces most apps need::

    from wsgiws import WebSocketMiddleware, WebSocket, ConnectionClosed
"""

from .exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    HandshakeRejected,
    HijackError,
    InvalidHandshake,
    InvalidState,
    InvalidURI,
    ReceiveTimeout,
    WebSocketError,
)
from .handshake import Reject
from .middleware import WebSocketMiddleware, WebSocketOptions, run_session
from .protocol import CloseCode
from .websocket import ConnectionState, WebSocket

__all__ = [
    "CloseCode",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "ConnectionState",
    "HandshakeRejected",
    "HijackError",
    "InvalidHandshake",
    "InvalidState",
    "InvalidURI",
    "ReceiveTimeout",
    "Reject",
    "WebSocket",
    "WebSocketError",
    "WebSocketMiddleware",
    "WebSocketOptions",
    "run_session",
]

__version__ = "0.1.0"
