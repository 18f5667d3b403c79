"""Broadcast at wire speed: a message framed once per wire form, written from the
publishing greenlet to every socket that takes it at once, queued (with a sender) only
for the sockets that would block. Over real socket pairs."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import gevent
import gevent.event
import gevent.socket
import pytest

from tests import test_hub
from tests.test_hub import Pair, make
from wsgiws.deflate import PerMessageDeflate
from wsgiws.exceptions import ConnectionClosed, InvalidState
from wsgiws.hub import Hub
from wsgiws.protocol import Close, FramedMessage, Message, Protocol, Role
from wsgiws.websocket import WebSocket
from wsgiws.writer import Writer

pairs = test_hub.pairs  # the fixture: socket pairs closed after each test


class Raw:
    """A server WebSocket whose peer is a bare socket: the test reads the exact bytes."""

    def __init__(self, extension: PerMessageDeflate | None = None, **kw: object) -> None:
        a, self.peer = gevent.socket.socketpair()
        self.server = WebSocket(
            role=Role.SERVER, sock=a, ping_interval=None, extension=extension, **kw
        )  # type: ignore[arg-type]

    def read_until(self, end: bytes) -> bytes:
        """Bytes until (without) ``end``, a sentinel frame known to close the stream."""
        data = b""
        with gevent.Timeout(10):
            while not data.endswith(end):
                chunk = self.peer.recv(1 << 20)
                assert chunk, f"EOF after {len(data)} bytes"
                data += chunk
        return data[: -len(end)]

    def close(self) -> None:
        self.server._sock.close()  # type: ignore[union-attr]
        self.peer.close()


SENTINEL = b"\x81\x03end"  # the frame of the text message "end"
SIZES = [0, 1, 125, 126, 127, 16384, 16385, 65535, 65536, (1 << 20) + 1]


@pytest.mark.parametrize("kind", ["text", "binary"])
def test_a_broadcast_puts_on_the_wire_exactly_what_send_would(kind: str) -> None:
    reference, member = Raw(), Raw()
    hub = Hub()
    hub.join(member.server, "room")
    try:
        for size in SIZES:
            data: str | bytes = (
                "é" * (size // 2) + "x" * (size % 2)
                if kind == "text"
                else bytes(i % 251 for i in range(size))
            )
            sender = gevent.spawn(
                lambda d=data: (reference.server.send(d), reference.server.send("end"))
            )
            expected = reference.read_until(SENTINEL)
            sender.get()
            hub.send("room", data)
            hub.send("room", "end")
            assert member.read_until(SENTINEL) == expected, size
            # An independent check of the header (RFC 6455 5.2): 7-bit, 16-bit, 64-bit lengths.
            n = len(data.encode() if isinstance(data, str) else data)
            opcode = 0x81 if kind == "text" else 0x82
            if n <= 125:
                assert expected[:2] == bytes((opcode, n))
            elif n < 65536:
                assert expected[:4] == bytes((opcode, 126)) + n.to_bytes(2, "big")
            elif n <= 1 << 20:
                assert expected[:10] == bytes((opcode, 127)) + n.to_bytes(8, "big")
            else:  # over the fragment size: a first non-final frame, then continuations
                assert expected[0] == opcode & 0x0F and expected[1] == 127
    finally:
        reference.close()
        member.close()


def test_framed_message_is_what_send_message_queues() -> None:
    for data in ["", "hé", "x" * 200, b"\x00" * 70000]:
        engine = Protocol(Role.SERVER)
        engine.send_message(data)
        assert b"".join(FramedMessage.frame(data).frames) == b"".join(engine.data_to_send())


def deflate_pair(server_nct: bool) -> tuple[WebSocket, WebSocket]:
    a, b = gevent.socket.socketpair()
    server = WebSocket(
        role=Role.SERVER,
        sock=a,
        ping_interval=None,
        extension=PerMessageDeflate(local_no_context_takeover=server_nct),
    )
    client = WebSocket(
        role=Role.CLIENT,
        sock=b,
        ping_interval=None,
        extension=PerMessageDeflate(remote_no_context_takeover=server_nct),
    )
    return server, client


def test_compressed_members_without_context_takeover_share_one_payload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub = Hub()
    shared = [deflate_pair(True) for _ in range(3)]
    own = [deflate_pair(False) for _ in range(2)]
    plain = Raw()
    for server, _ in shared + own:
        hub.join(server, "room")
    hub.join(plain.server, "room")
    encoded: list[PerMessageDeflate] = []
    original = PerMessageDeflate.encode

    def spy(self: PerMessageDeflate, data: bytes) -> bytes:
        encoded.append(self)
        return original(self, data)

    monkeypatch.setattr(PerMessageDeflate, "encode", spy)
    message = "a message worth compressing, " * 20
    try:
        hub.send("room", message)
        hub.send("room", message)
        hub.send("room", "end")  # under the threshold: not compressed
        for _, client in shared + own:
            assert [client.receive(timeout=5) for _ in range(3)] == [message, message, "end"]
        plain_frame = bytes((0x81, 126)) + len(message).to_bytes(2, "big") + message.encode()
        assert plain.read_until(SENTINEL) == plain_frame * 2
        (encoder,) = hub._encoders.values()
        # Once per broadcast for the three that share, once per socket for the others.
        assert encoded.count(encoder) == 2
        for server, _ in own:
            assert encoded.count(server.extension) == 2  # type: ignore[arg-type]
        for server, _ in shared:
            assert server.extension not in encoded
    finally:
        for server, client in shared + own:
            server._sock.close()  # type: ignore[union-attr]
            client._sock.close()  # type: ignore[union-attr]
        plain.close()


def test_the_shared_compressed_payload_is_right_for_a_fresh_decoder() -> None:
    """Without context takeover a payload stands alone: any connection's inflater,
    in any state, decodes it (RFC 7692 7.1.1.1)."""
    ext = PerMessageDeflate(local_no_context_takeover=True)
    hub_encoder = ext.shared_encoder()
    assert hub_encoder.shared_encoding == ext.shared_encoding
    assert PerMessageDeflate().shared_encoding is None
    framed = FramedMessage.frame("hello " * 100, hub_encoder)
    receiver = Protocol(Role.CLIENT, extension=PerMessageDeflate(remote_no_context_takeover=True))
    for _ in range(3):
        assert receiver.receive_data(b"".join(framed.frames)) == [Message("hello " * 100)]


def test_a_socket_that_would_block_gets_a_queue_and_keeps_the_order(pairs: list[Pair]) -> None:
    hub = Hub(max_queue=1000)
    fast, slow = make(pairs, 1)[0], make(pairs, 1, small_buffers=True)[0]
    spawned: list[object] = []
    original = hub._spawn_sender

    def counting(member: object) -> None:
        spawned.append(member)
        original(member)  # type: ignore[arg-type]

    hub._spawn_sender = counting  # type: ignore[method-assign]
    hub.join(fast.server, "room")
    hub.join(slow.server, "room")
    fast_reader = gevent.spawn(lambda: [fast.client.receive(timeout=10) for _ in range(100)])
    for i in range(100):
        hub.send("room", f"{i}:" + "z" * 3000)  # the slow one's buffers hold only a few
    gevent.sleep(0)  # the publisher yields: what was queued since the last flush is written
    slow_member = hub._members[slow.server]
    assert slow_member.sending and slow_member.queue  # nobody reads it: it waits
    got = [slow.client.receive(timeout=10) for _ in range(100)]
    assert [int(str(m).split(":")[0]) for m in got] == list(range(100))
    assert [int(str(m).split(":")[0]) for m in fast_reader.get(timeout=10)] == list(range(100))
    assert slow.got(timeout=0.2) == []
    assert slow_member in spawned
    deadline = time.monotonic() + 5
    while slow_member.sending and time.monotonic() < deadline:
        gevent.sleep(0.01)
    assert not slow_member.sending and slow_member.queue is None
    assert hub.stats.delivered == 200


def test_a_partial_write_is_finished_before_anything_else(pairs: list[Pair]) -> None:
    hub = Hub()
    (slow,) = make(pairs, 1, small_buffers=True)
    hub.join(slow.server, "room")
    big = "B" * 200_000  # far more than the socket buffers: the first write is partial
    hub.send("room", big)
    # Written through from the publisher (one frame): the socket took a part, the rest is
    # held by the socket's writer, and the hub has nothing queued for it.
    assert slow.server._writer.holding
    member = hub._members[slow.server]
    assert member.queue is None and member.pending is None and not member.sending
    hub.send("room", "after")  # frames are held: this one queues behind them
    direct = gevent.spawn(slow.server.send, "direct")  # the handler's own send: behind them too
    got = [slow.client.receive(timeout=10) for _ in range(3)]
    direct.get(timeout=10)
    assert got[0] == big and sorted(map(str, got[1:])) == ["after", "direct"]
    assert slow.got(timeout=0.2) == []


@pytest.mark.parametrize("policy", ["close", "drop_oldest"])
def test_the_overflow_policy_applies_to_the_queue(pairs: list[Pair], policy: str) -> None:
    hub = Hub(max_queue=8, overflow=policy)  # type: ignore[arg-type]
    (slow,) = make(pairs, 1, small_buffers=True, close_timeout=0.5)
    hub.join(slow.server, "room")
    for i in range(200):
        hub.send("room", f"{i}:" + "q" * 2000)
    if policy == "close":
        assert hub.stats.overflows == 1
        assert hub.members("room") == []
        numbers = []
        with pytest.raises(ConnectionClosed):
            while True:
                numbers.append(int(str(slow.client.receive(timeout=5)).split(":")[0]))
        assert numbers == list(range(len(numbers))) and len(numbers) < 200
    else:
        assert hub.stats.overflows > 0
        assert hub.members("room") == [slow.server]
        numbers = [int(str(m).split(":")[0]) for m in slow.got(timeout=1.0)]
        assert numbers == sorted(set(numbers)) and numbers[-1] == 199 and len(numbers) < 200


def test_concurrent_publishers_deliver_each_message_once_in_one_order(pairs: list[Pair]) -> None:
    hub = Hub(max_queue=10_000)
    members = make(pairs, 4) + make(pairs, 2, small_buffers=True)
    for p in members:
        hub.join(p.server, "room")
    per_publisher = 60

    def publish(k: int) -> None:
        for i in range(per_publisher):
            hub.send("room", f"{k}:{i}:" + "p" * (1500 if i % 7 == 0 else 10))
            if i % 3 == k % 3:
                gevent.sleep(0)

    def read(p: Pair, slow: bool) -> list[str]:
        out = []
        for _ in range(3 * per_publisher):
            out.append(str(p.client.receive(timeout=10)))
            if slow:
                gevent.sleep(0.001)
        return out

    readers = [gevent.spawn(read, p, i >= 4) for i, p in enumerate(members)]
    gevent.joinall([gevent.spawn(publish, k) for k in range(3)], raise_error=True)
    results = [r.get(timeout=30) for r in readers]
    for got in results:
        assert got == results[0]  # one order for everyone
        for k in range(3):
            mine = [int(m.split(":")[1]) for m in got if m.startswith(f"{k}:")]
            assert mine == list(range(per_publisher))  # each once, in order
    for p in members:
        assert p.got(timeout=0.2) == []
    assert hub.stats.delivered == 6 * 3 * per_publisher


def test_threads_publishing_at_once_deliver_each_message_once_in_order() -> None:
    """Without gevent (a threaded worker): nothing is written directly; the senders are threads."""
    hub = Hub(max_queue=10_000)
    ends = []
    for _ in range(4):
        a, b = socket.socketpair()
        server = WebSocket(role=Role.SERVER, sock=a, ping_interval=None)
        client = WebSocket(role=Role.CLIENT, sock=b, ping_interval=None)
        hub.join(server, "room")
        ends.append((server, client))
    results: dict[int, list[str]] = {}

    def read(i: int) -> None:
        results[i] = [str(ends[i][1].receive(timeout=10)) for _ in range(300)]

    readers = [threading.Thread(target=read, args=(i,)) for i in range(4)]
    publishers = [
        threading.Thread(target=lambda k=k: [hub.send("room", f"{k}:{i}") for i in range(100)])
        for k in range(3)
    ]
    for t in readers + publishers:
        t.start()
    for t in readers + publishers:
        t.join(30)
    try:
        for i in range(4):
            got = results[i]
            assert got == results[0]
            for k in range(3):
                assert [int(m.split(":")[1]) for m in got if m.startswith(f"{k}:")] == list(
                    range(100)
                )
    finally:
        for server, client in ends:
            server._sock.close()  # type: ignore[union-attr]
            client._sock.close()  # type: ignore[union-attr]


def test_no_shared_frame_inside_a_streamed_message(pairs: list[Pair]) -> None:
    hub = Hub()
    (p,) = make(pairs, 1)
    hub.join(p.server, "room")
    started, go = gevent.event.Event(), gevent.event.Event()

    def chunks() -> Iterator[str]:
        yield "first half, "
        started.set()
        go.wait(10)
        yield "second half"

    streamer = gevent.spawn(p.server.send_stream, chunks())
    started.wait(10)
    hub.send("room", "live")  # the stream holds the send lock: this one must wait
    gevent.sleep(0)  # the hub's flush finds the lock busy and leaves it to a sender
    assert hub._members[p.server].sending
    go.set()
    streamer.get(timeout=10)
    assert p.got() == ["first half, second half", "live"]

    engine = Protocol(Role.SERVER)
    engine.send_fragment("x", fin=False)
    with pytest.raises(InvalidState):
        engine.send_framed(FramedMessage.frame("y"))


def test_no_shared_frame_after_our_close() -> None:
    hub = Hub()
    member = Raw(close_timeout=0.5)
    hub.join(member.server, "room")
    closer = gevent.spawn(member.server.close, 1001, "bye")
    gevent.sleep(0)  # the close frame is out; the server waits for the peer's
    assert member.server.state.value == "closing"
    hub.send("room", "too late")
    closer.get(timeout=5)
    data = b""
    with gevent.Timeout(5):
        while chunk := member.peer.recv(65536):
            data += chunk
    engine = Protocol(Role.CLIENT)
    assert engine.receive_data(data) == [Close(1001, "bye")]  # and nothing after it
    assert hub.members("room") == []
    member.peer.close()

    closed = Protocol(Role.SERVER)
    closed.send_close()
    with pytest.raises(InvalidState):
        closed.send_framed(FramedMessage.frame("y"))
    with pytest.raises(ValueError):
        Protocol(Role.CLIENT).send_framed(FramedMessage.frame("y"))  # clients mask each frame
    with pytest.raises(ValueError):
        Protocol(Role.SERVER).send_framed(
            FramedMessage.frame("z" * 500, PerMessageDeflate(local_no_context_takeover=True))
        )


def test_sockets_that_take_the_bytes_get_no_queue_no_sender_and_are_observed(
    pairs: list[Pair],
) -> None:
    sent: list[tuple[bool, int]] = []

    class Observer:
        def opened(self, ws: WebSocket) -> None: ...
        def message_received(self, ws: WebSocket, text: bool, size: int) -> bool:
            return True

        def message_sent(self, ws: WebSocket, text: bool, size: int) -> None:
            sent.append((text, size))

        def pong_received(self, ws: WebSocket, latency: float) -> None: ...
        def closed(self, ws: WebSocket, code: int, reason: str, initiator: str) -> None: ...

    hub = Hub()
    now = [100.0]
    hub._clock = lambda: now[0]  # the hub's idle and busy times, in the test's hands
    members = make(pairs, 20, observer=Observer())  # an observer is set before opening
    spawned: list[object] = []
    hub._spawn_sender = spawned.append  # type: ignore[method-assign,assignment]
    for p in members:
        hub.join(p.server, "room")
    hub.send("room", "héllo")
    # The first message went out from the publisher, before it yields: to every socket.
    assert sent == [(True, 6)] * 20
    hub.send("room", b"\x00\x01")
    hub.send("room", b"abc")
    assert sent == [(True, 6)] * 20  # the publisher has not yielded: these are batched
    now[0] += 10.0  # that run keeps the hub busy for 10 s
    for p in members:
        assert p.got() == ["héllo", b"\x00\x01", b"abc"]
    assert spawned == []
    # The two batched ones in one write per socket: one socket's pair, then the next one's.
    assert sent == [(True, 6)] * 20 + [(False, 2), (False, 3)] * 20
    for p in members:  # the engine's counters (logs, metrics) count shared frames too
        assert (p.server.traffic.messages_out, p.server.traffic.bytes_out) == (3, 11)
    assert hub.stats.delivered == 60
    for member in hub._members.values():
        assert member.queue is None and member.pending is None and not member.sending
    # The hub then idles for less than that run kept it busy: the next run's first message
    # is batched too (its run may bring more: one write per socket and run, not two).
    del sent[:]
    now[0] += 9.0
    hub.send("room", "next")
    assert sent == []
    now[0] += 1.0
    gevent.sleep(0)
    assert sent == [(True, 4)] * 20
    # That run kept it busy for 1 s; idle for longer, the next first message goes through.
    now[0] += 1.5
    hub.send("room", "alone")
    assert sent == [(True, 4)] * 20 + [(True, 5)] * 20
    for p in members:
        assert p.got() == ["next", "alone"]
    assert spawned == []


def test_a_run_ends_even_when_its_flush_cannot_be_scheduled(pairs: list[Pair]) -> None:
    hub = Hub()
    now = [0.0]
    hub._clock = lambda: now[0]
    hub._busy = 1.0  # idle less than the last run kept it busy: the message is batched
    members = make(pairs, 3)
    for p in members:
        hub.join(p.server, "room")

    def refuse(func: object) -> None:
        raise RuntimeError("can't start new thread")

    for p in members:
        p.server.spawn = refuse  # type: ignore[method-assign]
    hub.send("room", "batched")
    # Flushed by the publisher itself: nothing left pending, the next run starts afresh.
    assert not hub._flush_scheduled and hub._unflushed == []
    for p in members:
        assert p.got() == ["batched"]
    assert hub.stats.delivered == 3


def test_a_presence_hook_may_publish_while_the_backend_delivers(pairs: list[Pair]) -> None:
    hub = Hub(on_presence=lambda room, event, *_: hub.send(room, f"someone {event}ed"))
    watcher, newcomer = make(pairs, 2)
    hub.join(watcher.server, "room")
    hub.join(newcomer.server, "room", info={"name": "bob"})
    assert watcher.got() == ["someone joined"]


def test_a_write_that_cannot_wait_keeps_what_one_sendmsg_could_not_take() -> None:
    # More buffers than one sendmsg may carry (the writer's group size; IOV_MAX is 1024):
    # the first group goes now, the rest is kept, in order, for the next write.
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        writer = Writer(a, a)
        parts = [bytes([i % 256]) * 3 for i in range(1500)]
        assert writer.write_nowait(list(parts)) is True
        assert writer.holding
        a.setblocking(True)
        writer.flush()
        assert not writer.holding
        expected = b"".join(parts)
        got = b""
        b.settimeout(5)
        while len(got) < len(expected):
            got += b.recv(1 << 16)
        assert got == expected
    finally:
        a.close()
        b.close()
