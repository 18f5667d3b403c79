"""gunicorn's own HTTP workers (``-k gevent``, ``gthread``, ``sync``).

gunicorn puts the socket in ``gunicorn.socket``; bytes read past the request
headers stay in its parser's unreader, behind ``wsgi.input``.

On the ``sync`` worker (a standard socket, ``wsgi.multithread`` false) one
WebSocket takes the whole worker, and the arbiter kills the worker, with its
socket, once it has been busy for ``timeout`` seconds: the first upgrade logs a
warning saying so (:func:`wsgiws.gunicorn.post_worker_init` says it at start-up).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from . import Hijack

logger = logging.getLogger("wsgiws")

SYNC_WORKER_WARNING = (
    "gunicorn's sync worker serves one connection at a time and kills the worker "
    "(every open WebSocket with it) after `timeout` seconds (%s) of one request: "
    "a WebSocket there lives at most `timeout` seconds and blocks all other requests. "
    "Use -k gevent (or -k gthread) for WebSockets."
)
_warned_sync = False


def is_sync_worker(environ: Mapping[str, Any]) -> bool:
    """gunicorn's sync worker: a standard socket and a single-threaded environ."""
    sock = environ.get("gunicorn.socket")
    return isinstance(sock, socket.socket) and not environ.get("wsgi.multithread")


def warn_sync_worker(
    timeout: object = "see --timeout", log: Callable[..., object] | None = None
) -> None:
    """Log :data:`SYNC_WORKER_WARNING` once per process (with ``log``, e.g. gunicorn's)."""
    global _warned_sync
    if not _warned_sync:
        _warned_sync = True
        (log or logger.warning)("wsgiws: " + SYNC_WORKER_WARNING, timeout)


def find(environ: Mapping[str, Any]) -> Hijack | None:
    from . import ENVIRON_START_RESPONSE, Hijack, is_socket

    sock = environ.get("gunicorn.socket")
    if not is_socket(sock):
        return None
    # This request is the connection's last: once the app returns, gunicorn must not
    # parse a next request from a socket we closed (a Request, a parser and a read per
    # connection for nothing). Its 101 still says "Connection: upgrade" (gunicorn's
    # Response puts the upgrade first); the access log line is written as before.
    response = getattr(environ.get(ENVIRON_START_RESPONSE), "__self__", None)
    force_close = getattr(response, "force_close", None)
    if callable(force_close):
        force_close()
    if is_sync_worker(environ):
        warn_sync_worker()
    body = environ.get("wsgi.input")
    unreader = getattr(getattr(body, "reader", None), "unreader", None)

    def take_buffered() -> bytes:
        if unreader is None:
            return b""
        take = getattr(unreader, "take_buffered", None)
        if take is not None:
            return bytes(take())
        buf = getattr(unreader, "buf", None)  # older gunicorn: a BytesIO
        if buf is None:
            return b""
        data = bytes(buf.getvalue())
        buf.seek(0)
        buf.truncate()
        return data

    return Hijack(cast(socket.socket, sock), take_buffered)
