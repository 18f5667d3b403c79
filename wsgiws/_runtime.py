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
    def cooperate(self) -> None:
        """Let other connections run (fairness under a flood)."""

    def recv(self, sock: socket.socket, size: int, timeout: float | None) -> bytes:
        """Receive up to ``size`` bytes; raise ``TimeoutError`` after ``timeout`` seconds."""

    def sleep(self, seconds: float) -> None: ...

    def sendall(self, sock: socket.socket, data: bytes | memoryview) -> None:
        """Write all of ``data``."""

    def send_parts(self, sock: socket.socket, parts: list[bytes | memoryview]) -> None:
        """Write all of ``parts``, in order, without joining them first."""


def _send_rest(sock: socket.socket, parts: list[bytes | memoryview], sent: int) -> None:
    """Finish writing ``parts`` of which the first ``sent`` bytes went out already."""
    for part in parts:
        size = len(part)
        if sent >= size:
            sent -= size
            continue
        sock.sendall(memoryview(part)[sent:] if sent else part)
        sent = 0


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

    # gevent's sendall is Python code that also asks the kernel for SO_SNDBUF on every
    # call. A non-blocking send on the socket it wraps usually writes everything at
    # once; only the rest (a full send buffer) goes through gevent, which waits.
    # TLS sockets (a subclass) must go through their own methods.

    def sendall(self, sock: socket.socket, data: bytes | memoryview) -> None:
        if type(sock) is not self._plain_socket:
            sock.sendall(data)
            return
        try:
            sent = sock._sock.send(data)  # type: ignore[attr-defined]
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            sock.sendall(memoryview(data)[sent:])

    def send_parts(self, sock: socket.socket, parts: list[bytes | memoryview]) -> None:
        if type(sock) is not self._plain_socket:
            for part in parts:
                sock.sendall(part)
            return
        try:
            sent = sock._sock.sendmsg(parts)  # type: ignore[attr-defined]
        except BlockingIOError:
            sent = 0
        _send_rest(sock, parts, sent)


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

    def sendall(self, sock: socket.socket, data: bytes | memoryview) -> None:
        sock.sendall(data)

    def send_parts(self, sock: socket.socket, parts: list[bytes | memoryview]) -> None:
        sendmsg = getattr(sock, "sendmsg", None)
        if sendmsg is None or hasattr(sock, "pending"):  # TLS (no sendmsg) or no sendmsg at all
            for part in parts:
                sock.sendall(part)
            return
        _send_rest(sock, parts, sendmsg(parts))


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
