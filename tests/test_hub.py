"""The hub with the in-process backend, over real (gevent) socket pairs: the server side
is a real wsgiws WebSocket, the client side another one in the client role."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import gevent
import gevent.socket
import pytest

from tests.wire import RawClient
from wsgiws.exceptions import ConnectionClosed, ConnectionClosedOK, ReceiveTimeout
from wsgiws.hub import (
    Envelope,
    HistoryGap,
    Hub,
    LocalBackend,
    Position,
)
from wsgiws.observer import ConnectionObserver
from wsgiws.protocol import Role
from wsgiws.websocket import WebSocket


class Pair:
    """A server WebSocket (what a handler gets) wired to a client WebSocket."""

    def __init__(
        self,
        *,
        small_buffers: bool = False,
        close_timeout: float = 2.0,
        observer: ConnectionObserver | None = None,
    ) -> None:
        a, b = gevent.socket.socketpair()
        if small_buffers:
            a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.server = WebSocket(
            role=Role.SERVER,
            sock=a,
            ping_interval=None,
            close_timeout=close_timeout,
            observer=observer,
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


class FireAndForget:
    """A backend without history (like Redis pub/sub), carrying nothing."""

    history = False

    def start(self, deliver: object) -> None:
        pass

    def publish(self, envelope: Envelope) -> None:
        pass

    def watch(self, room: str, start: object) -> None:
        pass

    def unwatch(self, room: str) -> None:
        pass

    def head(self, room: str) -> None:
        return None

    def replay(self, room: str, after: Position) -> list[Envelope]:
        raise HistoryGap(room, after, "no history")

    def close(self) -> None:
        pass


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
    for _ in range(200):
        hub.send("room", payload)  # only appends to queues: never waits for a socket
        gevent.sleep(0.001)  # a busy publisher, in the same process as the readers
    gevent.joinall(readers, timeout=10, raise_error=True)
    # (No wall-clock bound: on a loaded machine it proves nothing; what shows that the
    # slow socket stalled nobody is that the fast ones got everything while it was cut.)
    assert received == {0: 200, 1: 200, 2: 200}
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
        assert member.queue is None and member.pending is None and not member.sending


def test_envelopes_round_trip_and_duplicates_are_dropped(pairs: list[Pair]) -> None:
    for env in [
        Envelope("room", "héllo\nworld", "n.1", "node", 7),
        Envelope(None, b"\x00\n\xff", None, "node", 8),
    ]:
        assert Envelope.decode(env.encode()) == env
    with pytest.raises(ValueError):
        Envelope.decode(b"garbage")
    hub = Hub(FireAndForget())
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
    from wsgiws.backends.redis import RedisBackend, RedisStreamsBackend

    assert isinstance(Hub.from_url(None).backend, LocalBackend)
    assert isinstance(Hub.from_url("").backend, LocalBackend)
    hub = Hub.from_url("redis://127.0.0.1:1/0", transport="pubsub", channel="x", max_queue=3)
    assert isinstance(hub.backend, RedisBackend) and hub.backend.channel == "x"
    assert hub.max_queue == 3
    streams = Hub.from_url("redis://127.0.0.1:1/0", prefix="app", history=50).backend
    assert isinstance(streams, RedisStreamsBackend)
    assert streams.prefix == "app" and streams.max_history == 50
    local = Hub.from_url(None, history=7, history_age=None).backend
    assert isinstance(local, LocalBackend) and local.max_history == 7
    with pytest.raises(ValueError):
        Hub.from_url("amqp://nope")


def framed(envelope: Envelope) -> str:
    """A wire format carrying the position: what a resuming client needs."""
    assert envelope.position is not None
    return f"{envelope.position.token}|{envelope.payload}"


def split(frames: list[str | bytes]) -> tuple[list[str], list[str]]:
    positions, texts = [], []
    for frame in frames:
        position, _, text = str(frame).partition("|")
        positions.append(position)
        texts.append(text)
    return positions, texts


def test_positions_increase_and_a_resume_replays_exactly_what_was_missed(
    pairs: list[Pair],
) -> None:
    hub = Hub(wire_format=framed)
    first, again = make(pairs, 2)
    hub.join(first.server, "room")
    for i in range(5):
        hub.send("room", f"m{i}")
    positions, texts = split(first.got())
    assert texts == [f"m{i}" for i in range(5)]
    keys = [Position.parse(p).key for p in positions]
    assert keys == sorted(keys) and len(set(keys)) == 5
    # The client saw m0..m2, then its connection dropped; m5, m6 came meanwhile.
    for i in range(5, 7):
        hub.send("room", f"m{i}")
    hub.join(again.server, "room", after=positions[2])
    hub.send("room", "m7")
    _, texts = split(again.got())
    assert texts == ["m3", "m4", "m5", "m6", "m7"]
    assert hub.stats.replayed == 4


def test_live_messages_during_the_replay_come_once_after_it(pairs: list[Pair]) -> None:
    """The seam: what is published while the history is being read is held, then sent
    after the replayed part, without the messages both paths carry twice."""

    class SlowReplay(LocalBackend):
        def replay(self, room: str, after: Position) -> list[Envelope]:
            missed = super().replay(room, after)
            for i in range(3):  # published while "Redis" answers; live, and also in history
                hub.send("room", f"live{i}")
            return missed + super().replay(room, after)[len(missed) : len(missed) + 2]

    hub = Hub(SlowReplay(), wire_format=framed)
    (old, new) = make(pairs, 2)
    hub.join(old.server, "room")
    hub.send("room", "a")
    hub.send("room", "b")
    positions, _ = split(old.got())
    hub.join(new.server, "room", after=positions[0])
    _, texts = split(new.got())
    assert texts == ["b", "live0", "live1", "live2"]


def test_a_position_out_of_history_is_reported_not_partially_replayed(
    pairs: list[Pair],
) -> None:
    hub = Hub(LocalBackend(history=3), wire_format=framed)
    watcher, late, other = make(pairs, 3)
    hub.join(watcher.server, "room")
    for i in range(6):
        hub.send("room", f"m{i}")
    positions, _ = split(watcher.got())
    with pytest.raises(HistoryGap) as gap:
        hub.join(late.server, "room", after=positions[0])  # m1, m2 are gone
    assert gap.value.reason == "trimmed" and gap.value.room == "room"
    assert late.server not in hub.members("room")  # the app decides what next
    hub.join(late.server, "room", after=positions[2])  # m3.. are all there
    assert split(late.got())[1] == ["m3", "m4", "m5"]
    # A position of another life of the history (another process, a restart).
    stranger = Position("deadbeef", "0-1").token
    with pytest.raises(HistoryGap) as gap:
        hub.join(other.server, "room", after=stranger)
    assert gap.value.reason == "epoch"
    with pytest.raises(ValueError):
        hub.join(other.server, "room", after="garbage")
    with pytest.raises(HistoryGap) as gap:
        Hub(FireAndForget()).join(other.server, "room", after=positions[2])
    assert gap.value.reason == "no history"


def test_history_is_bounded_by_age(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    backend = LocalBackend(history=100, history_age=10.0)
    hub = Hub(backend)
    monkeypatch.setattr("wsgiws.hub.time.monotonic", lambda: clock[0])
    hub.send("room", "old")
    start = backend.head("room")
    clock[0] += 5
    hub.send("room", "newer")
    assert [e.payload for e in backend.replay("room", Position(start.epoch, "0-0"))] == [
        "old",
        "newer",
    ]
    clock[0] += 6  # "old" is 11 s old now
    with pytest.raises(HistoryGap):
        backend.replay("room", Position(start.epoch, "0-0"))
    assert [e.payload for e in backend.replay("room", start)] == ["newer"]
    clock[0] += 60  # all aged out, but nothing came after the last one: no false gap
    last = backend.head("room")
    assert backend.replay("room", last) == []


def test_a_broadcast_reaches_a_peer_that_closed_until_our_reply_and_not_after(
    pairs: list[Pair],
) -> None:
    """RFC 6455 5.5.1: the peer's close does not stop our data until we reply to it."""
    hub = Hub()
    (pair,) = make(pairs, 1, close_timeout=60)  # the reply waits for the handler only
    hub.join(pair.server, "r")
    assert pair.client._sock is not None
    # The peer's message and close in one write (raw frames: the client engine stays open).
    pair.client._sock.sendall(
        RawClient.frame(1, b"one") + RawClient.frame(8, struct.pack("!H", 1000))
    )
    assert pair.server.receive() == "one"  # the close is read too, not answered yet
    hub.send("r", "before our reply")
    assert pair.client.receive(timeout=5) == "before our reply"
    with pytest.raises(ConnectionClosedOK):
        pair.server.receive()  # it reaches the close: the reply goes out
    hub.send("r", "after our reply")
    with pytest.raises(ConnectionClosedOK):
        pair.client.receive(timeout=5)  # only our close reply followed
    assert hub.rooms_of(pair.server) == set()


def test_close_room_closes_its_members_with_the_code(pairs: list[Pair]) -> None:
    hub = Hub()
    a, b, c = make(pairs, 3)
    for p in (a, b, c):
        p.serve()
    hub.join(a.server, "user:1", "lobby")
    hub.join(b.server, "user:1")
    hub.join(c.server, "user:2", "lobby")
    hub.close_room("user:1", code=1008, reason="logged out")
    for p in (a, b):
        with pytest.raises(ConnectionClosed) as closed:
            p.client.receive(timeout=3)
        assert (closed.value.code, closed.value.reason) == (1008, "logged out")
    assert hub.members("lobby") == [c.server]
    hub.send("lobby", "still here")
    assert c.got() == ["still here"]


def test_presence_lists_members_with_their_info_and_hooks_hear_joins_and_leaves(
    pairs: list[Pair],
) -> None:
    events: list[tuple[str, str, str, object]] = []
    hub = Hub(on_presence=lambda *event: events.append(event))
    a, b = make(pairs, 2)
    a.serve()
    a_id = hub.join(a.server, "room", info={"name": "alice"})
    b_id = hub.join(b.server, "room", info={"name": "bob"})
    hub.join(b.server, "quiet")  # no info: not announced, not listed
    assert hub.presence("room") == {a_id: {"name": "alice"}, b_id: {"name": "bob"}}
    assert hub.presence("quiet") == {}
    hub.leave(b.server, "room")
    deadline = time.monotonic() + 3
    while b_id in hub.presence("room") and time.monotonic() < deadline:
        gevent.sleep(0.01)  # the leave is recorded by a greenlet of its own
    a.client.close()  # alice's connection ends: she leaves every room
    deadline = time.monotonic() + 3
    while hub.presence("room") and time.monotonic() < deadline:
        gevent.sleep(0.01)
    assert hub.presence("room") == {}
    assert events == [
        ("room", "join", a_id, {"name": "alice"}),
        ("room", "join", b_id, {"name": "bob"}),
        ("room", "leave", b_id, {"name": "bob"}),
    ]  # alice's leave reached nobody here: the room had no member left to hear it
    assert b.got() == []  # presence events are not messages


def test_a_replay_that_fails_leaves_nothing_behind(pairs: list[Pair]) -> None:
    class Unreachable(LocalBackend):
        def replay(self, room: str, after: Position) -> list[Envelope]:
            raise ConnectionError("Redis is down")

    hub = Hub(Unreachable(), wire_format=framed)
    watcher, resumer = make(pairs, 2)
    hub.join(watcher.server, "room")
    hub.send("room", "m0")
    (position,), _ = split(watcher.got())
    with pytest.raises(ConnectionError):
        hub.join(resumer.server, "room", after=position)
    assert hub.members("room") == [watcher.server]
    member = hub._members[resumer.server]
    hub.send("room", "m1")  # nothing piles up for the failed resume
    assert member.holding is None and member.queue is None
    assert resumer.got() == []
