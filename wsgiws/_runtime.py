"""Concurrency primitives for the connection layer: greenlets or OS threads.

The I/O model follows the socket: a gevent socket means the connection lives in
a greenlet and must use gevent's locks and timers (a ``threading.Lock`` would
block the whole hub); a standard socket means OS threads (gunicorn's gthread and
sync workers, the Werkzeug server).
"""

from __future__ import annotations

import heapq
import itertools
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Runtime", "has_unread_data", "os_lock", "runtime_for"]


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
    def spawn(self, func: Callable[[], object]) -> None: ...
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


def os_lock() -> Lock:
    """A lock of the operating system, even where gevent patched ``threading``.

    For module-level state whose critical sections never block or switch greenlets
    (counters, registries): it serves greenlets and OS threads alike, and taking it is
    one C call, where gevent's patched lock runs Python code on every acquire.
    """
    try:
        from gevent.monkey import get_original
    except ImportError:  # pragma: no cover - gevent is a dependency
        import _thread

        return _thread.allocate_lock()
    return get_original("_thread", "allocate_lock")()  # type: ignore[no-any-return]


class _GeventTimer:
    __slots__ = ("_watcher",)

    def __init__(self, loop: Any, seconds: float, func: Callable[[], None]) -> None:
        self._watcher = loop.timer(seconds)
        self._watcher.start(self._fire, func)

    def _fire(self, func: Callable[[], None]) -> None:
        # Timer callbacks run in the hub, where blocking is forbidden: hand over to a greenlet.
        import gevent

        self._watcher.close()
        gevent.spawn(func)

    def cancel(self) -> None:
        self._watcher.close()


class _GreenLock:
    """A gevent lock that stays a flag until a second greenlet wants it.

    Greenlets of one thread switch only where they block, so testing and setting
    the flag cannot interleave. The first acquire that would wait makes a gevent
    ``Semaphore`` in the held state (the holder's release goes through it), which
    serves from then on. Most connections never contend for their read and send
    locks: each stays this 48-byte object instead of a 150-byte Semaphore. Like a
    gevent socket, it belongs to the greenlets of one thread (gunicorn's gevent
    worker patches threads into greenlets).
    """

    __slots__ = ("_held", "_semaphore")

    def __init__(self) -> None:
        self._held = False
        self._semaphore: Lock | None = None

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        semaphore = self._semaphore
        if semaphore is None:
            if not self._held:
                self._held = True
                return True
            if not blocking:
                return False
            import gevent.lock

            semaphore = self._semaphore = gevent.lock.Semaphore(0)  # 0: held by the holder
        return semaphore.acquire(blocking, timeout)  # type: ignore[arg-type]

    def release(self) -> None:
        if self._semaphore is not None:
            self._semaphore.release()
        elif self._held:
            self._held = False
        else:
            raise RuntimeError("release of an unlocked lock")

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class GeventRuntime:
    name = "gevent"

    def __init__(self) -> None:
        import gevent
        import gevent.socket

        self._gevent = gevent
        self._timeout = gevent.Timeout
        self._plain_socket = gevent.socket.socket

    def lock(self) -> Lock:
        return _GreenLock()

    def call_later(self, seconds: float, func: Callable[[], None]) -> Timer:
        return _GeventTimer(self._gevent.get_hub().loop, seconds, func)

    def spawn(self, func: Callable[[], object]) -> None:
        self._gevent.spawn(func)

    def call_soon(self, func: Callable[[], None]) -> None:
        self._gevent.get_hub().loop.run_callback(func)

    def cooperate(self) -> None:
        # sleep(0) only runs greenlets whose callbacks are queued: a flooding connection
        # would be resumed before the hub polls the other sockets. idle() waits until the
        # hub has served the I/O that is ready.
        self._gevent.idle()

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
    __slots__ = ("cancelled", "deadline", "func")

    def __init__(self, deadline: float, func: Callable[[], None]) -> None:
        self.deadline = deadline
        self.func = func
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _TimerThread:
    """One daemon thread that fires every thread-mode timer of the process.

    ``threading.Timer`` costs a sleeping OS thread per timer, i.e. one per open
    WebSocket on gthread/sync/Werkzeug. Here the waiting is shared; a timer that
    fires runs its callback on a short-lived thread of its own, because callbacks
    (a keepalive ping) may block on a socket and must not delay the others.
    """

    def __init__(self) -> None:
        self._counter = itertools.count()
        self._reset()

    def _reset(self) -> None:
        # Also run in a forked child: the parent's thread and lock do not exist there.
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _ThreadTimer]] = []
        self._thread: threading.Thread | None = None

    def schedule(self, seconds: float, func: Callable[[], None]) -> _ThreadTimer:
        timer = _ThreadTimer(time.monotonic() + max(seconds, 0.0), func)
        with self._cond:
            heapq.heappush(self._heap, (timer.deadline, next(self._counter), timer))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="wsgiws-timers", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is timer:
                self._cond.notify()  # the new timer is due first: recompute the wait
        return timer

    def _run(self) -> None:
        heap = self._heap
        cond = self._cond
        while True:
            with cond:
                while heap and heap[0][2].cancelled:
                    heapq.heappop(heap)
                if not heap:
                    cond.wait()
                    continue
                wait = heap[0][0] - time.monotonic()
                if wait > 0:
                    cond.wait(wait)
                    continue
                timer = heapq.heappop(heap)[2]
            if not timer.cancelled:
                threading.Thread(target=timer.func, name="wsgiws-timer", daemon=True).start()

    def pending(self) -> int:
        """Timers not yet fired or cancelled (for tests)."""
        with self._cond:
            return sum(1 for _, _, t in self._heap if not t.cancelled)


_timer_thread = _TimerThread()
_main_thread = threading.main_thread()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_timer_thread._reset)


def _wait_readable(sock: socket.socket, timeout: float | None) -> bool:
    """Wait until ``sock`` is readable; poll() has no FD_SETSIZE limit, unlike select()."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(None if timeout is None else timeout * 1000.0))
    readable, _, _ = select.select([sock], [], [], timeout)  # pragma: no cover - Windows
    return bool(readable)


def has_unread_data(sock: socket.socket) -> bool:
    """Has the peer sent bytes nobody read yet? Never blocks; plain and TLS sockets alike.

    (``recv(1, MSG_PEEK | MSG_DONTWAIT)`` would do on a plain socket, but an SSL
    socket refuses flags with ValueError.) For TLS, decrypted bytes may wait in the
    SSL object (``pending()``) while the OS socket itself is empty.
    """
    pending = getattr(sock, "pending", None)
    if pending is not None and pending():
        return True
    try:
        return _wait_readable(sock, 0.0)
    except (OSError, ValueError):  # closed meanwhile (fileno -1)
        return False


class ThreadRuntime:
    name = "threads"

    def lock(self) -> Lock:
        return threading.Lock()

    def call_later(self, seconds: float, func: Callable[[], None]) -> Timer:
        return _timer_thread.schedule(seconds, func)

    def spawn(self, func: Callable[[], object]) -> None:
        threading.Thread(target=func, daemon=True).start()

    def call_soon(self, func: Callable[[], None]) -> None:
        self.spawn(func)

    def cooperate(self) -> None:
        time.sleep(0)

    def recv(self, sock: socket.socket, size: int, timeout: float | None) -> bytes:
        # On the main thread (gunicorn's sync worker) wait in poll() even without a timeout:
        # a signal interrupts poll() but not a recv() that servers restart (SA_RESTART),
        # and only then do Python signal handlers run (gunicorn's SIGTERM sets worker.alive).
        if timeout is not None or threading.current_thread() is _main_thread:
            pending = getattr(sock, "pending", None)  # TLS may hold decrypted bytes already
            wait = None if timeout is None else max(timeout, 0.0)
            if not (pending and pending()) and not _wait_readable(sock, wait):
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


#: gevent's socket classes, looked up on the first call (gevent is imported only then).
_gevent_sockets: tuple[type, ...] | None = None


def runtime_for(sock: socket.socket) -> Runtime:
    """The runtime matching how ``sock`` blocks."""
    global _gevent_runtime, _gevent_sockets
    kinds = _gevent_sockets
    if kinds is None:
        try:
            from gevent import socket as gsocket
            from gevent.ssl import SSLSocket
        except ImportError:  # pragma: no cover - gevent is a dependency
            kinds = ()
        else:
            kinds = (gsocket.socket, SSLSocket)
        _gevent_sockets = kinds
    if isinstance(sock, kinds):
        if _gevent_runtime is None:
            _gevent_runtime = GeventRuntime()
        return _gevent_runtime
    return _thread_runtime
