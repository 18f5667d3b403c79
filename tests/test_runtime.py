"""Concurrency primitives on OS threads and greenlets, and the drain registry, in-process."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from wsgiws import drain, keepalive
from wsgiws._runtime import runtime_for
from wsgiws.exceptions import ConnectionClosed
from wsgiws.middleware import WebSocketOptions
from wsgiws.monitor import SessionObserver
from wsgiws.protocol import Role
from wsgiws.websocket import WebSocket


@pytest.fixture(autouse=True)
def fresh_drain() -> Iterator[None]:
    drain._reset()
    yield
    drain._reset()


def test_thread_timers_share_one_thread_and_fire_in_order() -> None:
    rt = runtime_for(socket.socket())
    assert rt.name == "threads"
    fired: list[int] = []
    done = threading.Event()
    before = threading.active_count()
    timers = [rt.call_later(0.2 + i * 0.001, lambda i=i: fired.append(i)) for i in range(200)]
    rt.call_later(0.6, done.set)
    assert threading.active_count() <= before + 1  # not a thread per timer
    timers[5].cancel()
    assert done.wait(5)
    time.sleep(0.1)
    assert set(fired) == set(range(200)) - {5}


def test_a_blocking_callback_does_not_delay_other_timers() -> None:
    rt = runtime_for(socket.socket())
    release = threading.Event()
    fired = threading.Event()
    rt.call_later(0.01, lambda: release.wait(5))  # a keepalive stuck on a socket
    start = time.monotonic()
    rt.call_later(0.1, fired.set)
    assert fired.wait(2)
    assert time.monotonic() - start < 1.0
    release.set()


def test_earlier_timer_added_later_fires_first() -> None:
    rt = runtime_for(socket.socket())
    order: list[str] = []
    both = threading.Event()
    rt.call_later(0.6, lambda: (order.append("late"), both.set()))
    time.sleep(0.05)  # the timer thread now waits for the late one
    rt.call_later(0.05, lambda: order.append("early"))
    assert both.wait(3)
    assert order == ["early", "late"]


def test_thread_recv_timeout_works_above_fd_setsize() -> None:
    rt = runtime_for(socket.socket())
    keep = [socket.socket() for _ in range(1100)]  # push the next descriptors past 1024
    try:
        a, b = socket.socketpair()
        assert a.fileno() > 1024
        with pytest.raises(TimeoutError):
            rt.recv(a, 10, 0.05)
        b.sendall(b"x")
        assert rt.recv(a, 10, 1.0) == b"x"
        a.close()
        b.close()
    finally:
        for s in keep:
            s.close()


def test_thread_lock_timeout() -> None:
    rt = runtime_for(socket.socket())
    lock = rt.lock()
    assert lock.acquire()
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(lock.acquire(timeout=0.1)))
    t.start()
    t.join()
    assert got == [False]
    lock.release()


def test_gevent_lock_hands_over_in_order_once_contended() -> None:
    import gevent
    from gevent import socket as gsocket

    a, b = gsocket.socketpair()
    try:
        lock = runtime_for(a).lock()
        assert lock.acquire(blocking=False)
        assert not lock.acquire(blocking=False)  # held: a second holder is refused
        order: list[str] = []

        def waiter(name: str) -> None:
            assert lock.acquire()
            order.append(name)
            lock.release()

        timed_out = gevent.spawn(lambda: lock.acquire(timeout=0.01))
        assert timed_out.get() is False
        waiters = [gevent.spawn(waiter, name) for name in ("first", "second")]
        gevent.sleep(0)
        assert order == []  # both wait for the holder
        lock.release()
        gevent.joinall(waiters, raise_error=True)
        assert order == ["first", "second"]
        assert lock.acquire(blocking=False)  # free again
        lock.release()
    finally:
        a.close()
        b.close()


def test_gevent_lock_release_of_an_unlocked_lock_fails() -> None:
    from gevent import socket as gsocket

    a, b = gsocket.socketpair()
    try:
        lock = runtime_for(a).lock()
        with pytest.raises(RuntimeError):
            lock.release()
        with lock:
            assert not lock.acquire(blocking=False)
        assert lock.acquire(blocking=False)
    finally:
        a.close()
        b.close()


def pair(gevent_sockets: bool = False) -> tuple[WebSocket, WebSocket]:
    if gevent_sockets:
        from gevent import socket as gsocket

        a, b = gsocket.socketpair()
    else:
        a, b = socket.socketpair()
    # The middleware's observer: it registers the connection with the drain while open.
    observer = SessionObserver({}, WebSocketOptions(), "127.0.0.1")
    server = WebSocket(
        role=Role.SERVER, sock=a, ping_interval=None, close_timeout=2, observer=observer
    )
    client = WebSocket(role=Role.CLIENT, sock=b, ping_interval=None, close_timeout=2)
    return server, client


def test_thread_mode_concurrent_sends_and_drain() -> None:
    """Several threads send on one WebSocket; then a drain closes it with 1001."""
    server, client = pair()
    assert runtime_for(server._sock).name == "threads"  # type: ignore[arg-type]
    received: list[str | bytes] = []
    closed: list[int] = []

    def read() -> None:
        try:
            for message in client:
                received.append(message)
        except ConnectionClosed as exc:
            closed.append(exc.code)
        else:
            closed.append(client.close_code or 0)

    reader = threading.Thread(target=read)
    reader.start()
    handler_done = threading.Event()

    def handler() -> None:  # the server side blocks in receive, like a real handler
        for _ in server:
            pass
        handler_done.set()

    threading.Thread(target=handler).start()
    senders = [
        threading.Thread(target=lambda s=s: [server.send(f"{s}:{i}" * 500) for i in range(50)])
        for s in range(4)
    ]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    assert drain.open_websockets() == [server]
    assert drain.start() == 1
    assert handler_done.wait(5)
    reader.join(5)
    assert len(received) == 200
    for message in received:  # whole messages: one sender's text repeated, never interleaved
        assert isinstance(message, str)
        assert message == message[: len(message) // 500] * 500
    assert closed == [1001] and server.close_code == 1001
    assert drain.wait_closed(1)
    assert drain.open_websockets() == []


def test_gevent_mode_drain_and_late_registration() -> None:
    import gevent

    server, client = pair(gevent_sockets=True)
    assert runtime_for(server._sock).name == "gevent"  # type: ignore[arg-type]
    heard: list[str] = []
    drain.on_drain(lambda: heard.append("drain started"))
    codes: list[int] = []

    def read(ws: WebSocket) -> None:
        try:
            for _ in ws:
                pass
        except ConnectionClosed as exc:
            codes.append(exc.code)
        else:
            codes.append(ws.close_code or 0)

    readers = [gevent.spawn(read, server), gevent.spawn(read, client)]
    gevent.sleep(0.01)
    assert drain.start(close_timeout=1) == 1
    assert drain.draining() and heard == ["drain started"]
    gevent.joinall(readers, timeout=5)
    assert sorted(codes) == [1001, 1001]
    # A WebSocket opened while draining is closed at once.
    late, late_client = pair(gevent_sockets=True)
    reader = gevent.spawn(read, late_client)
    reader.join(5)
    assert late_client.close_code == 1001
    assert drain.wait_closed(2, sleep=gevent.sleep)
    assert late.close_code == 1001


def test_opener_refuses_while_draining() -> None:
    from wsgiws.handshake import Reject
    from wsgiws.middleware import ENVIRON_START_RESPONSE, _Opener

    drain.start()
    opener = _Opener({ENVIRON_START_RESPONSE: lambda *a: None}, None, None)  # type: ignore[arg-type]
    with pytest.raises(Reject) as info:
        opener(None)  # type: ignore[arg-type]
    assert info.value.status == 503


def test_pending_pings_are_cancelled_on_close() -> None:
    a, b = socket.socketpair()
    server = WebSocket(role=Role.SERVER, sock=a, ping_interval=30.5)  # (its own schedule)
    schedule = keepalive._schedules[(runtime_for(a), 30.5)]
    assert schedule.pending() == 1
    b.close()
    with pytest.raises(ConnectionClosed):
        server.receive()
    assert schedule.pending() == 0
    a.close()


class RecordingRuntime:
    """What a keepalive schedule asks of its runtime, recorded instead of done."""

    def __init__(self) -> None:
        self.armed: list[float] = []
        self.spawned: list[object] = []

    def call_later(self, seconds: float, func: object) -> None:
        self.armed.append(seconds)

    def spawn(self, func: object) -> None:
        self.spawned.append(func)


def test_connections_with_one_interval_share_one_timer() -> None:
    """However many keepalives wait, the schedule's one timer is set once; a tick that
    finds every slot empty (their connections closed) pings nobody and stops it."""
    from wsgiws.keepalive import Keepalive, _Schedule

    runtime = RecordingRuntime()
    schedule = _Schedule(runtime, 8.0)  # type: ignore[arg-type]
    members = [Keepalive(runtime, None, 8.0, None) for _ in range(5)]  # type: ignore[arg-type]
    for member in members:
        member._slot = schedule.join(member)  # (what start() does)
    assert runtime.armed == [1.0] and schedule.pending() == 5
    for member in members:
        member.stop()
    schedule._tick()
    assert runtime.armed == [1.0] and runtime.spawned == [] and schedule.pending() == 0


def test_a_keepalive_pings_once_its_slot_has_waited_a_whole_interval() -> None:
    """Its slot closes at the next tick and is taken SLOTS_PER_INTERVAL ticks later:
    the ping comes at the ninth tick after it joined, and the timer goes on meanwhile."""
    from wsgiws.keepalive import SLOTS_PER_INTERVAL, Keepalive, _Schedule

    runtime = RecordingRuntime()
    schedule = _Schedule(runtime, 8.0)  # type: ignore[arg-type]
    member = Keepalive(runtime, None, 8.0, None)  # type: ignore[arg-type]
    member._slot = schedule.join(member)
    for _ in range(SLOTS_PER_INTERVAL):
        schedule._tick()
        assert runtime.spawned == []
    schedule._tick()
    assert runtime.spawned == [member._ping]
    assert runtime.armed == [1.0] * (SLOTS_PER_INTERVAL + 1)  # re-set by every tick but the last
    assert schedule.pending() == 0


def test_a_ping_never_comes_before_its_interval() -> None:
    """The shared schedule may ping up to a slot late, never early (the late bound is a
    matter of time, not asserted here)."""
    a, b = socket.socketpair()
    opened = time.monotonic()
    server = WebSocket(role=Role.SERVER, sock=a, ping_interval=0.4, ping_timeout=None)
    b.settimeout(5)
    assert b.recv(2) == b"\x89\x00"  # an empty ping
    waited = time.monotonic() - opened
    assert waited >= 0.4
    server.close_timeout = 0.2
    server.close()
    a.close()
    b.close()


def test_thread_mode_keepalive() -> None:
    from wsgiws.exceptions import ReceiveTimeout

    a, b = socket.socketpair()
    server = WebSocket(role=Role.SERVER, sock=a, ping_interval=0.1, ping_timeout=0.2)
    client = WebSocket(role=Role.CLIENT, sock=b, ping_interval=None)
    with pytest.raises(ReceiveTimeout):
        client.receive(timeout=0.6)  # reading answers the pings ...
    assert not server.closed  # ... so the server keeps the connection
    time.sleep(0.8)  # now nobody reads on the client side: no pongs
    assert server.closed and server.close_code == 1011
    b.close()


def test_a_join_racing_the_tick_that_stops_the_schedule_is_not_lost() -> None:
    """Thread mode: a connection joins the filling slot while the timer's thread runs the
    tick that finds every slot empty and stops. The join, reading the stopped flag, must
    not leave its keepalive in a slot nobody looks at any more."""
    from wsgiws.keepalive import Keepalive, _Schedule

    runtime = RecordingRuntime()
    schedule = _Schedule(runtime, 8.0)  # type: ignore[arg-type]
    schedule._ticking = True  # its timer is set, every slot empty

    class RacedSlot(set):  # type: ignore[type-arg]
        def add(self, item: object) -> None:
            schedule._tick()  # the other thread's tick, between the join's read and its add
            super().add(item)

    schedule.filling = RacedSlot()
    keepalive = Keepalive(runtime, None, 8.0, None)  # type: ignore[arg-type]
    slot = schedule.join(keepalive)
    assert keepalive in schedule.filling and slot is schedule.filling
    assert schedule.pending() == 1
    assert runtime.armed == [1.0]  # the join set the timer again, one slot ahead
    assert runtime.spawned == []
