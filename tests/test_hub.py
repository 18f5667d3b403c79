"""The hub with the in-process backend, over real (gevent) socket pairs: the server side
is a real wsgiws WebSocket, the client side another one in the client role."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import gevent
import gevent.socket
import pytest

from wsgiws.exceptions import ConnectionClosed, ReceiveTimeout
from wsgiws.hub import Envelope, Hub
from wsgiws.protocol import Role
from wsgiws.websocket import WebSocket


class Pair:
    """A server WebSocket (what a handler gets) wired to a client WebSocket."""

    def __init__(self, *, small_buffers: bool = False, close_timeout: float = 2.0) -> None:
        a, b = gevent.socket.socketpair()
        if small_buffers:
            a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.server = WebSocket(
            role=Role.SERVER, sock=a, ping_interval=None, close_timeout=close_timeout
        )
        self.client = WebSocket(role=Role.CLIENT, sock=b, ping_interval=None, close_timeout=1.0)
        self.reader: gevent.Greenlet | None = None

    def serve(self) -> None:
        """Read the server side like a handler does (so closes are noticed)."""

        def run() -> None:
            try:
                for _ in self.server:
                    pass
            except ConnectionClosed:
                pass

        self.reader = gevent.spawn(run)

    def got(self, timeout: float = 1.0) -> list[str | bytes]:
        """Everything the client receives until ``timeout`` passes quietly."""
        out: list[str | bytes] = []
        while True:
            try:
                out.append(self.client.receive(timeout=timeout))
            except ReceiveTimeout:
                return out
            timeout = min(timeout, 0.05)


@pytest.fixture
def pairs() -> Iterator[list[Pair]]:
    made: list[Pair] = []
    yield made
    for pair in made:
        for ws in (pair.client, pair.server):
            if ws._sock is not None:
                ws._sock.close()
        if pair.reader is not None:
            pair.reader.kill()


def make(pairs: list[Pair], n: int, **kw: object) -> list[Pair]:
    new = [Pair(**kw) for _ in range(n)]  # type: ignore[arg-type]
    pairs.extend(new)
    return new


def test_rooms_exclusion_and_broadcast(pairs: list[Pair]) -> None:
    hub = Hub()
    a, b, c = make(pairs, 3)
    a_id = hub.join(a.server, "r1", "r2")
    hub.join(b.server, "r1")
    hub.join(c.server, "r2")
    assert hub.rooms_of(a.server) == {"r1", "r2"}
    assert a_id == hub.socket_id(a.server) and a_id != hub.socket_id(b.server)

    hub.send("r1", "to r1")
    hub.send("r2", b"\x00bin", exclude=c.server)
    hub.broadcast("all but a", exclude=a_id)  # by id works too
    hub.send("nobody-here", "lost")
    assert a.got() == ["to r1", b"\x00bin"]
    assert b.got() == ["to r1", "all but a"]
    assert c.got() == ["all but a"]

    hub.leave(a.server, "r1")
    hub.send("r1", "second")
    hub.leave(b.server)  # out of the hub: not even broadcasts
    hub.broadcast("bye")
    assert a.got() == ["bye"]
    assert b.got() == ["second"]
    assert c.got() == ["bye"]


def test_members_leave_their_rooms_when_they_close(pairs: list[Pair]) -> None:
    hub = Hub()
    a, b = make(pairs, 2)
    for p in (a, b):
        p.serve()
        hub.join(p.server, "room", "other")
    a.client.close()  # the client says goodbye; the handler's read loop sees it
    deadline = time.monotonic() + 3
    while hub.members("room") != [b.server] and time.monotonic() < deadline:
        gevent.sleep(0.01)
    assert hub.members("room") == [b.server]
    assert hub.members("other") == [b.server]
    assert hub.socket_id(a.server) is None
    hub.send("room", "still works")
    assert b.got() == ["still works"]


def test_a_failing_socket_does_not_break_the_broadcast(pairs: list[Pair]) -> None:
    hub = Hub()
    good1, dead, good2 = make(pairs, 3)
    for p in (good1, dead, good2):
        hub.join(p.server, "room")
    # The peer vanishes without a close frame, and nobody reads the server side.
    dead.client._sock.close()  # type: ignore[union-attr]
    for i in range(50):
        hub.send("room", f"m{i}")
    expected = [f"m{i}" for i in range(50)]
    assert good1.got() == expected
    assert good2.got() == expected
    assert hub.stats.send_failures == 1
    assert hub.members("room") == [good1.server, good2.server]


def test_a_slow_receiver_is_closed_1013_and_stalls_nobody(pairs: list[Pair]) -> None:
    hub = Hub(max_queue=32)
    fast = make(pairs, 3)
    (slow,) = make(pairs, 1, small_buffers=True, close_timeout=0.5)
    for p in [*fast, slow]:
        hub.join(p.server, "room")
    payload = "x" * 16384
    received: dict[int, int] = {i: 0 for i in range(3)}

    def reader(i: int) -> None:
        for message in fast[i].client:
            assert message == payload
            received[i] += 1
            if received[i] == 200:
                return

    readers = [gevent.spawn(reader, i) for i in range(3)]
    started = time.monotonic()
    for _ in range(200):
        hub.send("room", payload)
        gevent.sleep(0.001)  # a busy publisher, in the same process as the readers
    publish_time = time.monotonic() - started
    gevent.joinall(readers, timeout=10, raise_error=True)
    assert received == {0: 200, 1: 200, 2: 200}
    assert publish_time < 2.0
    assert hub.stats.overflows == 1
    assert slow.server not in hub.members("room")
    # The slow socket is closed: once its sender gives up (close_timeout) or
    # it reads again, the connection ends, with 1013 if the frame got through.
    deadline = time.monotonic() + 5
    while not slow.server.closed and time.monotonic() < deadline:
        gevent.sleep(0.05)
    assert slow.server.closed
    assert slow.server.close_code in (1013, 1006)
    got = 0
    try:
        while True:
            slow.client.receive(timeout=3)
            got += 1
    except ConnectionClosed as exc:
        assert exc.code in (1013, 1006)
    assert got < 200


def test_drop_oldest_keeps_the_slow_socket_with_the_latest_messages(pairs: list[Pair]) -> None:
    hub = Hub(max_queue=4, overflow="drop_oldest")
    (slow,) = make(pairs, 1, small_buffers=True)
    hub.join(slow.server, "room")
    big = "y" * 30000
    for i in range(100):
        hub.send("room", f"{i}:{big}")
        gevent.sleep(0)
    assert hub.stats.overflows > 0
    messages = slow.got(timeout=1.0)
    numbers = [int(str(m).split(":")[0]) for m in messages]
    assert numbers[-1] == 99  # the newest always arrives
    assert numbers == sorted(numbers) and len(numbers) < 100
    assert hub.members("room") == [slow.server]


def test_idle_members_hold_no_queue_and_no_greenlet(pairs: list[Pair]) -> None:
    hub = Hub()
    members = make(pairs, 20)
    for p in members:
        hub.join(p.server, "room")
    hub.send("room", "hello")
    for p in members:
        assert p.got() == ["hello"]
    for member in hub._members.values():
        assert member.queue is None and not member.sending


def test_envelopes_round_trip_and_duplicates_are_dropped(pairs: list[Pair]) -> None:
    for env in [
        Envelope("room", "héllo\nworld", "n.1", "node", 7),
        Envelope(None, b"\x00\n\xff", None, "node", 8),
    ]:
        assert Envelope.decode(env.encode()) == env
    with pytest.raises(ValueError):
        Envelope.decode(b"garbage")
    hub = Hub()
    (p,) = make(pairs, 1)
    hub.join(p.server, "room")
    first = Envelope("room", "one", None, "other-node", 1)
    hub._receive(first)
    hub._receive(first)  # a backend delivered it twice
    hub._receive(Envelope("room", "three", None, "other-node", 3))
    hub._receive(Envelope("room", "mine", None, hub.node_id, 99))  # our own echo
    assert p.got() == ["one", "three"]
    assert hub.stats.duplicates == 1 and hub.stats.gaps == 1


def test_from_url_picks_the_backend() -> None:
    from wsgiws.backends.redis import RedisBackend
    from wsgiws.hub import LocalBackend

    assert isinstance(Hub.from_url(None).backend, LocalBackend)
    assert isinstance(Hub.from_url("").backend, LocalBackend)
    hub = Hub.from_url("redis://127.0.0.1:1/0", channel="x", max_queue=3)
    assert isinstance(hub.backend, RedisBackend) and hub.backend.channel == "x"
    assert hub.max_queue == 3
    with pytest.raises(ValueError):
        Hub.from_url("amqp://nope")
