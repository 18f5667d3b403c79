"""A bound on how long a client may take to send its request head, for gevent.pywsgi.

gevent.pywsgi waits for a request line and headers as long as the client likes:
a client that opens TCP and sends one header line a minute holds a greenlet and
a socket forever ("slowloris"). gunicorn's gevent workers bound that read by
``keepalive`` (2 s by default) and nginx by ``client_header_timeout`` (60 s);
plain pywsgi has nothing, so serve with this handler::

    from gevent.pywsgi import WSGIServer
    from wsgiws.pywsgi_handler import HandshakeTimeoutHandler

    WSGIServer(("0.0.0.0", 8000), app, handler_class=HandshakeTimeoutHandler).serve_forever()

From the moment the handler waits for a request line to the end of its headers
at most :attr:`HandshakeTimeoutHandler.handshake_timeout` seconds (10) pass: a
request head still incomplete then is answered ``408 Request Timeout`` and the
connection closed, with a log line. The app (and a WebSocket's whole life) runs
without the bound. Set another value with a subclass attribute. It applies to
every request, upgrade or not: nobody knows which it is before the headers are in.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import gevent
from gevent.pywsgi import WSGIHandler

__all__ = ["HandshakeTimeoutHandler"]

logger = logging.getLogger("wsgiws")

_RESPONSE_408: Final = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
)


class HandshakeTimedOut(Exception):
    """Raised in the handler's greenlet when the request head took too long."""


class HandshakeTimeoutHandler(WSGIHandler):  # type: ignore[misc]
    handshake_timeout: float = 10.0

    _handshake_timer: Any = None

    def handle_one_request(self) -> Any:
        self._handshake_timer = gevent.Timeout.start_new(self.handshake_timeout, HandshakeTimedOut)
        try:
            return super().handle_one_request()
        finally:
            self._handshake_timer.close()

    def read_requestline(self) -> Any:
        try:
            return super().read_requestline()
        except HandshakeTimedOut:  # nothing (or half a line) came: close without a word
            self._timed_out()
            return None

    def read_request(self, raw_requestline: Any) -> Any:
        try:
            return super().read_request(raw_requestline)
        finally:
            self._handshake_timer.close()  # the head is in: the app runs unbounded

    def _handle_client_error(self, ex: Exception) -> Any:
        if isinstance(ex, HandshakeTimedOut):
            self._timed_out()
            return ("408", _RESPONSE_408)
        return super()._handle_client_error(ex)

    def _timed_out(self) -> None:
        logger.info(
            "request head from %s not complete after %g s; closing (handshake_timeout)",
            self.client_address[0] if self.client_address else "?",
            self.handshake_timeout,
        )
