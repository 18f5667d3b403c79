"""uWSGI in gevent mode (``--gevent N`` with ``--http-socket``).

uWSGI puts no socket in the environ (it is told apart by ``uwsgi.version``),
but its ``uwsgi`` module, importable inside the app, gives the client socket's
descriptor: ``uwsgi.connection_fd()``. We speak WebSocket on a duplicate of it
wrapped in a gevent socket (uWSGI's gevent loop is gevent's own hub, so our
greenlets and timers run beside its request greenlets). What uWSGI does around
that, from its source (core/, proto/, plugins/gevent/, 2.0):

- The 101 goes through its ``start_response``/``write``, so it is logged as
  ``(HTTP/1.1 101)``. Once the app returns ``[]`` uWSGI writes nothing more and
  closes its descriptor; ours is shut down after the closing handshake, which
  is what sends the FIN.
- Bytes the client sent right behind its handshake stay in uWSGI's request
  parser (``proto_parser_remains``), reachable only as a request body limited
  by ``Content-Length``: they are lost. RFC 6455 section 4.1 forbids them (the
  client "MUST wait for a response from the server before sending any further
  data"); browsers and the usual clients wait.
- Each open WebSocket holds one of the ``--gevent N`` async cores for its life.
- Not ``--http11-socket``: with uWSGI 2.0.31 and gevent 26 its keep-alive path
  fails in the gevent loop (``'io' object has no attribute 'stop'``), WebSocket
  or not: a second request on a connection hangs, or the worker aborts in libev.
- Reload (``SIGHUP``, ``--touch-reload``, the master FIFO's ``r``) sends each
  worker SIGHUP: it stops accepting and waits, one second at a time, for its
  requests to end, up to ``--worker-reload-mercy`` (60 s), then is killed.
  Stop (SIGINT, SIGQUIT; SIGTERM with ``--die-on-term``) and brutal reload (SIGTERM
  without it, uWSGI 2.0's default) send SIGINT or SIGTERM: the worker's hub is
  stopped at once, then ``uwsgi.atexit`` runs and the worker exits.

So on the first WebSocket a worker accepts, :func:`install_drain` adds gevent
handlers for those three signals that start :func:`wsgiws.drain.start`, and
chains ``uwsgi.atexit`` to wait for the closing handshakes before the worker
exits: every open WebSocket gets ``1001 Going Away`` on reload and on stop.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable, Mapping
from typing import Any, cast

from .. import drain
from ..exceptions import HijackError
from ._hijack import Hijack

#: The worker signals that end it (see the module docstring).
DRAIN_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)

_drain_installed_in: int | None = None  # the pid of the worker that installed it


def find(environ: Mapping[str, Any]) -> Hijack | None:
    if "uwsgi.version" not in environ:
        return None
    try:
        import uwsgi
    except ImportError:  # an environ copied from uWSGI, outside it
        return None
    loop = getattr(uwsgi, "loop", None)
    if loop not in (b"gevent", "gevent"):
        raise HijackError(
            f"uWSGI's {_text(loop) or 'default'} loop cannot serve WebSockets with wsgiws; "
            "run it in gevent mode (--gevent N with --http-socket)"
        )
    from gevent import socket as gsocket

    # A duplicate: uWSGI closes its own descriptor when the app returns.
    sock = gsocket.socket(fileno=os.dup(uwsgi.connection_fd()))
    install_drain(uwsgi)
    return Hijack(cast(socket.socket, sock), _nothing_buffered)


def _nothing_buffered() -> bytes:
    return b""  # what uWSGI's parser read past the request cannot be had (see above)


def close_timeout_for(uwsgi: Any) -> float:
    """How long each WebSocket waits for its client's close frame during the drain:
    well inside ``--worker-reload-mercy``, after which uWSGI kills the worker."""
    mercy = float(_text(uwsgi.opt.get("worker-reload-mercy")) or 60)
    return max(0.5, min(10.0, mercy - 2.0))


def install_drain(uwsgi: Any) -> None:
    """Drain this worker's WebSockets with 1001 when it is told to stop (once per worker)."""
    global _drain_installed_in
    if _drain_installed_in == os.getpid():
        return
    _drain_installed_in = os.getpid()
    import gevent

    close_timeout = close_timeout_for(uwsgi)

    def log(message: str) -> None:
        uwsgi.log(f"wsgiws: worker {os.getpid()}: {message}")  # into uWSGI's own log

    def start() -> None:
        count = drain.start(close_timeout=close_timeout)
        if count:
            log(f"stopping: closing {count} WebSocket(s) with 1001")

    for signum in DRAIN_SIGNALS:
        gevent.signal_handler(signum, start)

    previous: Callable[[], object] | None = getattr(uwsgi, "atexit", None)

    def atexit() -> None:
        # On stop the hub is halted before this runs: the closes run while we wait here.
        start()
        if not drain.wait_closed(close_timeout + 1.0, sleep=gevent.sleep):
            log(f"{len(drain.open_websockets())} WebSocket(s) still open after the drain")
        if previous is not None:
            previous()

    uwsgi.atexit = atexit


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return "" if value is None or value is True else str(value)
