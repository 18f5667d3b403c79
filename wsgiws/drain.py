"""Draining: closing every open WebSocket of the process with ``1001 Going Away``.

A worker that stops (a deploy, a reload, ``max_requests`` recycling) should not
cut its WebSockets: each client should get a close frame with code 1001 and a
completed closing handshake, so it knows to reconnect (to another worker).

Every server-side :class:`~wsgiws.WebSocket` the middleware accepts registers here
while it is open (its observer, :class:`wsgiws.monitor.SessionObserver`, does it).
:func:`start` begins a drain: from then on :func:`draining` is true, the callbacks
given to :func:`on_drain` run, new upgrade requests are refused with ``503 Service
Unavailable``, and every open WebSocket is closed with 1001, each in its own greenlet
or thread. Under gunicorn, :func:`wsgiws.gunicorn.post_worker_init`
starts the drain when the worker is told to stop; elsewhere call :func:`start`
from your own shutdown code.

Handlers learn that a drain started by checking :func:`draining`, or by
registering a callback::

    from wsgiws import drain

    @drain.on_drain
    def tell_clients() -> None:
        for ws in drain.open_websockets():
            ws.send('{"type": "reconnect"}')
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from ._runtime import os_lock

if TYPE_CHECKING:
    from .websocket import WebSocket

__all__ = [
    "DEFAULT_REASON",
    "draining",
    "on_drain",
    "open_websockets",
    "remove_drain_callback",
    "start",
    "wait_closed",
]

logger = logging.getLogger("wsgiws")

#: The close reason sent with 1001 during a drain.
DEFAULT_REASON = "server restarting"

C = TypeVar("C", bound=Callable[[], object])

# Critical sections below never block or switch greenlets, so one OS lock serves
# greenlets and threads alike (see os_lock).
_lock = os_lock()
_open: dict[int, WebSocket] = {}
_callbacks: list[Callable[[], object]] = []
_draining = False
_code = 1001
_reason = DEFAULT_REASON
_close_timeout: float | None = None


def draining() -> bool:
    """Has a drain started in this process (the server is stopping)?"""
    return _draining


def open_websockets() -> list[WebSocket]:
    """The open server-side WebSockets of this process (a snapshot)."""
    with _lock:
        return list(_open.values())


def on_drain(callback: C) -> C:
    """Call ``callback()`` when a drain starts, before the WebSockets are closed.

    Usable as a decorator. Callbacks run in the greenlet or thread that started
    the drain, one after another: keep them short (a final message, a flag).
    """
    with _lock:
        _callbacks.append(callback)
    return callback


def remove_drain_callback(callback: Callable[[], object]) -> None:
    """Undo :func:`on_drain` (a no-op if ``callback`` is not registered)."""
    with _lock:
        if callback in _callbacks:
            _callbacks.remove(callback)


def start(
    code: int = 1001, reason: str = DEFAULT_REASON, close_timeout: float | None = None
) -> int:
    """Begin a drain: refuse new WebSockets and close the open ones with ``code``.

    ``close_timeout`` bounds how long each close waits for the client's close
    frame (the WebSocket's own ``close_timeout`` when None or larger). Returns
    the number of WebSockets being closed; does not wait for them (see
    :func:`wait_closed`). A second call only closes what is still open.
    """
    global _draining, _code, _reason, _close_timeout
    with _lock:
        first = not _draining
        _draining = True
        _code, _reason, _close_timeout = code, reason, close_timeout
        callbacks = list(_callbacks) if first else []
        sockets = list(_open.values())
    if first:
        logger.info("wsgiws: draining %d open WebSocket(s) with %d", len(sockets), code)
    for callback in callbacks:
        try:
            callback()
        except Exception:
            logger.exception("wsgiws: drain callback %r raised", callback)
    sockets = open_websockets()  # callbacks may have closed some
    for ws in sockets:
        _close_later(ws)
    return len(sockets)


def wait_closed(
    timeout: float, poll: float = 0.05, sleep: Callable[[float], object] | None = None
) -> bool:
    """Wait until no WebSocket is open (True) or ``timeout`` passes (False).

    By default sleeps with ``time.sleep`` as it is at call time (gunicorn's gevent
    workers patch it after this module is imported); that suits threads and
    monkey-patched greenlets. In a greenlet without patching pass ``sleep=gevent.sleep``.
    """
    if sleep is None:
        sleep = time.sleep
    deadline = time.monotonic() + timeout
    while _open:
        if time.monotonic() >= deadline:
            return False
        sleep(poll)
    return True


def register(ws: WebSocket) -> None:
    """Count ``ws`` among the open WebSockets until :func:`unregister`.

    The middleware's observer (:class:`wsgiws.monitor.SessionObserver`) calls it when
    a connection opens (its 101 is sent), and ``unregister`` when it closes.
    """
    # (acquire and release, not ``with``: half the cost, on every connection)
    _lock.acquire()
    try:
        _open[id(ws)] = ws
        late = _draining
    finally:
        _lock.release()
    if late:  # accepted while the drain was starting: it goes too
        _close_later(ws)


def unregister(ws: WebSocket) -> None:
    """Forget ``ws`` (it closed); a no-op for one not registered."""
    _lock.acquire()
    try:
        _open.pop(id(ws), None)
    finally:
        _lock.release()


def _close_later(ws: WebSocket) -> None:
    code, reason, limit = _code, _reason, _close_timeout

    def close() -> None:
        if limit is not None:
            ws.close_timeout = min(ws.close_timeout, limit)
        try:
            ws.close(code, reason)
        except Exception:  # the connection may already be failing: it ends either way
            logger.debug("wsgiws: closing %r during the drain failed", ws, exc_info=True)

    ws.spawn(close)


def _reset() -> None:
    """Forget any drain and WebSocket (tests; a forked child).

    A worker forked from a master that imported the app (gunicorn ``--preload``)
    starts with no WebSockets and no drain, and with a fresh lock (another
    thread may have held the parent's at fork time).
    """
    global _lock, _draining, _close_timeout
    _lock = os_lock()
    _draining = False
    _close_timeout = None
    _open.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset)
