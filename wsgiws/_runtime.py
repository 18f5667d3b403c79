"""Concurrency primitives for the connection layer: greenlets or OS threads.

The I/O model follows the socket: a gevent socket means the connection lives in
a greenlet and must use gevent's locks and timers (a ``threading.Lock`` would
block the whole hub); a standard socket means OS threads (gunicorn's gthread and
sync workers, the Werkzeug server).
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Runtime", "runtime_for"]


class Lock(Protocol):
    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...
    def release(self) -> None: ...
    def __enter__(self) -> Any: ...
    def __exit__(self, exc_type: Any, exc: Any, tb: Any, /) -> Any: ...


class Timer(Protocol):
    def cancel(self) -> None: ...


class Runtime(Protocol):
    name: str

    def lock(self) -> Lock: ...
    def call_later(self, seconds: float, func: Callable[[], None]) -> Timer: ...
    def spawn(self, func: Callable[[], None]) -> None: ...
    def call_soon(self, func: Callable[[], None]) -> None:
        """Run ``func`` soon (from the event loop or a thread); it must not block."""

    def cooperate(self) -> None:
        """Let other connections run (fairness under a flood)."""

    def recv(self, sock: socket.socket, size: int, timeout: float | None) -> bytes:
        """Receive up to ``size`` bytes; raise ``TimeoutError`` after ``timeout`` seconds."""

    def sleep(self, seconds: float) -> None: ...

    def raw_socket(self, sock: socket.socket) -> socket.socket | None:
        """The non-blocking OS socket under ``sock``, for a first send or recv that must not
        wait (it raises ``BlockingIOError`` instead); None when there is none to use."""

    def wait_readable(self, sock: socket.socket, timeout: float | None) -> None:
        """Wait until ``sock`` is readable (only for sockets with a raw_socket);
        raise ``TimeoutError`` after ``timeout`` seconds."""


class _GeventTimer:
    __slots__ = ("_watcher",)

    def __init__(self, seconds: float, func: Callable[[], None]) -> None:
        import gevent

        self._watcher = gevent.get_hub().loop.timer(seconds)
        self._watcher.start(self._fire, func)

    def _fire(self, func: Callable[[], None]) -> None:
        # Timer callbacks run in the hub, where blocking is forbidden: hand over to a greenlet.
        import gevent

        self._watcher.close()
        gevent.spawn(func)

    def cancel(self) -> None:
        self._watcher.close()


class GeventRuntime:
    name = "gevent"

    def __init__(self) -> None:
        import gevent
        import gevent.lock
        import gevent.socket

        self._gevent = gevent
        self._semaphore = gevent.lock.Semaphore
        self._timeout = gevent.Timeout
        self._plain_socket = gevent.socket.socket

    def lock(self) -> Lock:
        return self._semaphore()  # type: ignore[no-any-return]

    def call_later(self, seconds: float, func: Callable[[], None]) -> Timer:
        return _GeventTimer(seconds, func)

    def spawn(self, func: Callable[[], None]) -> None:
        self._gevent.spawn(func)

    def call_soon(self, func: Callable[[], None]) -> None:
        self._gevent.get_hub().loop.run_callback(func)

    def cooperate(self) -> None:
        self._gevent.sleep(0)

    def recv(self, sock: socket.socket, size: int, timeout: float | None) -> bytes:
        if timeout is None:
            return sock.recv(size)
        # A socket timeout would also cut a concurrent sendall short: time the wait instead.
        with self._timeout(max(timeout, 0.0), TimeoutError):
            return sock.recv(size)

    def sleep(self, seconds: float) -> None:
        self._gevent.sleep(seconds)

    def raw_socket(self, sock: socket.socket) -> socket.socket | None:
        # gevent's socket methods are Python code around the non-blocking socket they wrap
        # (and sendall asks the kernel for SO_SNDBUF on every call): trying that socket
        # first saves them whenever the call need not wait. Never for TLS (a subclass).
        if type(sock) is self._plain_socket and hasattr(sock, "_read_event"):
            return sock._sock  # type: ignore[attr-defined,no-any-return]
        return None

    def wait_readable(self, sock: socket.socket, timeout: float | None) -> None:
        # The socket's own read watcher (what its recv waits on), not a new one per wait.
        wait = sock._wait  # type: ignore[attr-defined]
        if timeout is None:
            wait(sock._read_event)  # type: ignore[attr-defined]
            return
        with self._timeout(max(timeout, 0.0), TimeoutError):
            wait(sock._read_event)  # type: ignore[attr-defined]


class _ThreadTimer:
    __slots__ = ("_timer",)

    def __init__(self, seconds: float, func: Callable[[], None]) -> None:
        self._timer = threading.Timer(seconds, func)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()


class ThreadRuntime:
    name = "threads"

    def lock(self) -> Lock:
        return threading.Lock()

    def call_later(self, seconds: float, func: Callable[[], None]) -> Timer:
        return _ThreadTimer(seconds, func)

    def spawn(self, func: Callable[[], None]) -> None:
        threading.Thread(target=func, daemon=True).start()

    def call_soon(self, func: Callable[[], None]) -> None:
        self.spawn(func)

    def cooperate(self) -> None:
        time.sleep(0)

    def recv(self, sock: socket.socket, size: int, timeout: float | None) -> bytes:
        if timeout is not None:
            pending = getattr(sock, "pending", None)  # TLS may hold decrypted bytes already
            if not (pending and pending()):
                readable, _, _ = select.select([sock], [], [], max(timeout, 0.0))
                if not readable:
                    raise TimeoutError
        return sock.recv(size)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def raw_socket(self, sock: socket.socket) -> socket.socket | None:
        return None

    def wait_readable(self, sock: socket.socket, timeout: float | None) -> None:
        if not select.select([sock], [], [], timeout)[0]:
            raise TimeoutError


_gevent_runtime: GeventRuntime | None = None
_thread_runtime = ThreadRuntime()


def runtime_for(sock: socket.socket) -> Runtime:
    """The runtime matching how ``sock`` blocks."""
    global _gevent_runtime
    try:
        from gevent import socket as gsocket
        from gevent.ssl import SSLSocket
    except ImportError:  # pragma: no cover - gevent is a dependency
        return _thread_runtime
    if isinstance(sock, (gsocket.socket, SSLSocket)):
        if _gevent_runtime is None:
            _gevent_runtime = GeventRuntime()
        return _gevent_runtime
    return _thread_runtime
