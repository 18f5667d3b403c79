"""The fast paths: corked replies, unjoined frames, raw-socket I/O, and small idle connections."""

from __future__ import annotations

import os
import socket
import struct
import time
import weakref
from collections.abc import Iterator

import pytest

from tests.conftest import SERVER_KINDS
from tests.servers import Server, serve
from tests.wire import RawClient
from wsgiws import WebSocket, WebSocketMiddleware
from wsgiws.exceptions import ReceiveTimeout
from wsgiws.protocol import Message, Protocol, Role, _apply_mask_python

app = WebSocketMiddleware(max_message_size=16 << 20, compression=None)


@app.route("/echo")
def echo(ws: WebSocket) -> None:
    for message in ws:
        ws.send(message)


@app.route("/stall")
def stall(ws: WebSocket) -> None:
    """Replies to the first message while the second is still queued, then blocks elsewhere."""
    import gevent

    first = ws.receive()
    ws.send(f"r:{first}")  # held back: a received message is still waiting
    gevent.sleep(3.0)  # blocks without reading or sending: the event loop must write it
    ws.send(f"r:{ws.receive()}")


def masked(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + struct.pack("!H", n)
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + struct.pack("!Q", n)
    key = os.urandom(4)
    return header + key + _apply_mask_python(payload, key)


@pytest.fixture(scope="module", params=[*SERVER_KINDS, "gunicorn-gthread"])  # + thread runtime
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    with serve(request.param, "tests.test_hotpath:app") as srv:
        yield srv


def test_held_back_reply_goes_out_when_the_handler_blocks(server: Server) -> None:
    client = RawClient(server.port, "/stall")
    assert client.accepted_properly()
    start = time.monotonic()
    client.sock.sendall(masked(1, b"first") + masked(1, b"second"))  # one write, one read
    assert client.read_frame() == (1, True, b"r:first")
    assert time.monotonic() - start < 2.0  # not held until the handler's sleep ends
    client.sock.settimeout(10)
    assert client.read_frame() == (1, True, b"r:second")
    client.close()


def test_pipelined_burst_echoes_in_order_with_pong(server: Server) -> None:
    client = RawClient(server.port, "/echo")
    assert client.accepted_properly()
    payloads = [os.urandom(20_000 if i % 7 == 3 else i % 50) for i in range(60)]
    burst = b"".join(masked(2, p) for p in payloads[:30])
    burst += masked(9, b"ping!") + b"".join(masked(2, p) for p in payloads[30:])
    client.sock.sendall(burst)
    echoed, pongs = [], []
    while len(echoed) < len(payloads):
        opcode, fin, data = client.read_frame()
        assert fin
        (pongs if opcode == 0xA else echoed).append(data)
    assert echoed == payloads
    assert pongs == [b"ping!"]
    client.close()


def test_large_message_through_raw_reads_and_sendmsg(server: Server) -> None:
    client = RawClient(server.port, "/echo")
    assert client.accepted_properly()
    big = os.urandom((3 << 20) + 5)  # several 256 KiB reads in; out as 1 MiB fragments
    client.sock.sendall(masked(2, big) + masked(1, b"after"))
    client.sock.settimeout(10)
    frames = [client.read_frame() for _ in range(4)]  # (header, payload view) x 4, one sendmsg
    assert [(op, fin) for op, fin, _ in frames] == [(2, False), (0, False), (0, False), (0, True)]
    assert [len(data) for _, _, data in frames] == [1 << 20, 1 << 20, 1 << 20, 5]
    assert b"".join(data for _, _, data in frames) == big
    assert client.read_frame() == (1, True, b"after")
    client.close()


# ------------------------------------------------------------------ sans-I/O


def test_send_message_keeps_a_large_payload_unjoined() -> None:
    proto = Protocol(Role.SERVER, max_message_size=None)
    payload = os.urandom(100_000)
    proto.send_message(payload)
    parts = proto.data_to_send()
    assert len(parts) == 2 and parts[1] is payload  # no copy of the payload
    assert parts[0] == b"\x82\x7f" + (100_000).to_bytes(8, "big")
    proto.send_message("héllo")
    assert proto.data_to_send() == [b"\x81\x06" + "héllo".encode()]


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
def test_fragmented_parts_round_trip(role: Role) -> None:
    sender = Protocol(role, max_message_size=None, fragment_size=1000)
    peer = Protocol(Role.CLIENT if role is Role.SERVER else Role.SERVER, max_message_size=None)
    payload = os.urandom(3500)
    sender.send_message(payload)
    parts = sender.data_to_send()
    assert len(parts) == (8 if role is Role.SERVER else 4)  # header + view, or masked frames
    assert peer.receive_data(b"".join(bytes(p) for p in parts)) == [Message(payload)]


def test_payload_pending_tracks_a_partial_frame() -> None:
    proto = Protocol(Role.SERVER, max_message_size=None)
    frame = masked(2, os.urandom(300_000))
    assert proto.receive_data(frame[:100_014]) == []
    assert proto.payload_pending == 200_000
    assert len(proto.receive_data(frame[100_014:])) == 1
    assert proto.payload_pending == 0


def test_idle_protocol_holds_no_buffers() -> None:
    proto = Protocol(Role.SERVER)
    assert not hasattr(proto, "__dict__")
    proto.receive_data(masked(1, b"x" * 10)[:5])
    assert proto._buf  # a partial frame is kept ...
    proto.receive_data(masked(1, b"x" * 10)[5:])
    assert proto._buf == b""  # ... and dropped once parsed


def test_websocket_slots_still_take_application_attributes() -> None:
    a, b = socket.socketpair()
    try:
        ws = WebSocket(role=Role.CLIENT, sock=a, ping_interval=None)
        assert ws.__dict__ == {}  # nothing outside the slots
        ws.user = "alice"  # type: ignore[attr-defined]
        assert ws.user == "alice"  # type: ignore[attr-defined]
        assert weakref.ref(ws)() is ws
        assert not ws._incoming  # no deque until a message is queued
    finally:
        a.close()
        b.close()


def test_many_frames_in_one_write_stay_under_the_iovec_limit() -> None:
    """A message cut into thousands of frames is written in groups (sendmsg takes 1024 at most)."""
    import gevent
    import gevent.socket

    a, b = gevent.socket.socketpair()
    try:
        ws = WebSocket(role=Role.SERVER, sock=a, ping_interval=None)
        assert ws._raw_sock is not None  # the sendmsg path
        assert ws._proto is not None
        ws._proto.fragment_size = 16
        payload = os.urandom(40_000)  # 2,500 frames: 5,000 buffers
        reader = Protocol(Role.CLIENT, max_message_size=None)
        events: list[object] = []

        def read() -> None:
            while not events:
                data = b.recv(65536)
                if not data:
                    events.append("EOF")
                    return
                events.extend(reader.receive_data(data))

        g = gevent.spawn(read)
        ws.send(payload)
        g.join(timeout=10)
        assert events == [Message(payload)]
    finally:
        a.close()
        b.close()


def test_reads_after_a_short_read_wait_first_and_still_see_waiting_data() -> None:
    """After a short read the next read waits on the socket before its recv (no failing
    recv); data that came meanwhile is found at once, also by a receive(timeout=0)."""
    import select

    import gevent.socket

    a, b = gevent.socket.socketpair()
    try:
        ws = WebSocket(role=Role.SERVER, sock=a, ping_interval=None)
        assert ws._raw_sock is not None
        b.sendall(masked(1, b"one"))
        assert ws.receive() == "one"
        assert ws._drained  # that read was short: the kernel had nothing more
        b.sendall(masked(1, b"two") + masked(2, b"three"))
        assert select.select([a], [], [], 5)[0]  # both frames are in our kernel buffer
        assert ws.receive() == "two"  # waited first; the level-triggered wait saw the data
        assert ws.receive() == b"three"
        b.sendall(masked(1, b"four"))
        assert select.select([a], [], [], 5)[0]
        assert ws.receive(timeout=0) == "four"  # with a deadline the recv comes first
        with pytest.raises(ReceiveTimeout):
            ws.receive(timeout=0.01)
    finally:
        a.close()
        b.close()
