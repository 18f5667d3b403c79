"""gunicorn integration: drain WebSockets when a worker stops.

In ``gunicorn.conf.py``::

    from wsgiws.gunicorn import post_worker_init

or, next to hooks of your own::

    import wsgiws.gunicorn

    def post_worker_init(worker):
        wsgiws.gunicorn.post_worker_init(worker)
        ...

gunicorn stops a worker by setting ``worker.alive = False``: on SIGTERM, on
SIGHUP (the arbiter starts new workers and sends the old ones SIGTERM), on
``max_requests`` and on ``--reload``. It then stops accepting and waits up to
``graceful_timeout`` for the requests in progress, a WebSocket being one that
never ends by itself, before killing them. The hook watches ``worker.alive``
and, as soon as it turns false, starts :func:`wsgiws.drain.start`: every open
WebSocket gets ``1001 Going Away`` and a closing handshake bounded to fit in
``graceful_timeout``, and upgrade requests that still arrive get 503.

Under ``-k gevent`` the hook also lets each WebSocket leave gunicorn's request
once its 101 is out (:func:`wsgiws.servers.gunicorn.serve_detached`): the
connection then holds none of gunicorn's per-request objects (about a third of
an idle connection's memory). Such a connection no longer takes one of
gunicorn's ``worker_connections`` slots, so wsgiws counts it instead: past
``worker_connections`` open WebSockets an upgrade gets ``503`` (unless the app
set ``max_connections``), and a stopping worker waits for its WebSockets after
gunicorn's own wait, bounded by the drain's close timeout.

The hook runs in each worker after the app is loaded, so it works with
``--preload`` too (nothing is set up in the master).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from . import drain, limits
from .servers.gunicorn import enable_detach, warn_sync_worker

__all__ = ["POLL_INTERVAL", "install_drain", "post_worker_init"]

#: How often the watcher looks at ``worker.alive`` (seconds).
POLL_INTERVAL = 0.1


def post_worker_init(worker: Any) -> None:
    """gunicorn server hook: call it (or name it) in ``gunicorn.conf.py``."""
    kind = type(worker).__name__
    timeout = getattr(worker.cfg, "timeout", None)
    if kind == "SyncWorker":
        warn_sync_worker(timeout, worker.log.warning)
    elif kind == "ThreadWorker":
        worker.log.info(
            "wsgiws: gthread worker: each open WebSocket holds one of the %s threads; "
            "connections beyond that wait for a free thread",
            getattr(worker.cfg, "threads", "?"),
        )
    install_drain(worker)
    if _is_gevent_worker(worker):
        _detach_websockets(worker)


def _is_gevent_worker(worker: Any) -> bool:
    """``-k gevent`` (gunicorn's own HTTP handling on gevent), not ``gevent_pywsgi``."""
    try:
        from gunicorn.workers.ggevent import GeventWorker
    except ImportError:  # pragma: no cover - gunicorn without gevent support
        return False
    return isinstance(worker, GeventWorker) and getattr(worker, "server_class", None) is None


def _detach_websockets(worker: Any) -> None:
    enable_detach()
    connections = getattr(worker, "worker_connections", None)
    limits.set_default_max_connections(connections if isinstance(connections, int) else None)
    close_timeout = close_timeout_for(worker)
    run = worker.run

    def run_then_wait_for_websockets() -> None:
        run()
        # gunicorn waited for the greenlets of its pool; the WebSockets left it at the 101.
        drain.start(close_timeout=close_timeout)  # a no-op when the watcher already began
        deadline = time.monotonic() + close_timeout + 1.0
        while drain.open_websockets():
            left = deadline - time.monotonic()
            if left <= 0:
                worker.log.warning(
                    "wsgiws: %d WebSocket(s) still open after the drain; exiting",
                    len(drain.open_websockets()),
                )
                return
            worker.notify()  # the arbiter's heartbeat, as gunicorn's own wait gives it
            drain.wait_closed(min(1.0, left))

    worker.run = run_then_wait_for_websockets


def close_timeout_for(worker: Any) -> float:
    """How long each WebSocket waits for its client's close frame during the drain.

    gunicorn checks for finished requests about once a second and kills what is
    left at ``graceful_timeout``: leave it room.
    """
    graceful = float(getattr(worker.cfg, "graceful_timeout", 30) or 0)
    return max(0.5, min(10.0, graceful - 2.0))


def install_drain(worker: Any) -> threading.Thread:
    """Start the watcher that drains the worker's WebSockets once it stops.

    Under gevent workers ``threading`` is monkey-patched, so the watcher is a
    greenlet; under ``gthread`` and ``sync`` it is a daemon thread.
    """
    close_timeout = close_timeout_for(worker)

    def watch() -> None:
        while worker.alive:
            time.sleep(POLL_INTERVAL)
        started = time.monotonic()
        count = drain.start(close_timeout=close_timeout)
        if count:
            worker.log.info(
                "wsgiws: worker %s stopping: closing %d WebSocket(s) with 1001",
                worker.pid,
                count,
            )
            if drain.wait_closed(close_timeout + 1.0):
                worker.log.info(
                    "wsgiws: all WebSockets closed in %.2f s", time.monotonic() - started
                )
            else:
                worker.log.warning(
                    "wsgiws: %d WebSocket(s) still open after the drain",
                    len(drain.open_websockets()),
                )

    thread = threading.Thread(target=watch, name="wsgiws-drain", daemon=True)
    thread.start()
    return thread
