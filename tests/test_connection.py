"""The WebSocket connection layer over a socketpair, driven by a scripted peer.

The peer is raw bytes (tests/wire.py frames): every assertion is about what
wsgiws puts on the wire and how it ends TCP (RFC 6455 7.1.1: the server ends
TCP first; a client waits for the server's FIN).
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.wire import RawClient
from wsgiws import connlog
from wsgiws.exceptions import ConnectionClosedError, ConnectionClosedOK, PolicyViolation
from wsgiws.protocol import Role
from wsgiws.websocket import ConnectionState, WebSocket

trustme = pytest.importorskip("trustme")


class Peer(RawClient):
    """The far end of a socketpair, speaking raw frames (a client: it masks)."""

    def __init__(self, sock: socket.socket, mask: bool = True) -> None:
        self.sock = sock
        self.buf = b""
        self.mask = mask
        sock.settimeout(10)

    def send(self, opcode: int, payload: bytes = b"", fin: bool = True) -> None:
        self.sock.sendall(self.frame(opcode, payload, fin=fin, mask=self.mask))

    def read_any(self) -> tuple[int, bool, bytes]:
        """The next frame, masked (from a client) or not."""
        self._fill(2)
        b1 = self.buf[1]
        if not b1 & 0x80:
            return self.read_frame()
        n = b1 & 0x7F
        assert n < 126
        self._fill(6 + n)
        b0, key, data = self.buf[0], self.buf[2:6], self.buf[6 : 6 + n]
        self.buf = self.buf[6 + n :]
        return b0 & 0x0F, bool(b0 & 0x80), bytes(b ^ key[i % 4] for i, b in enumerate(data))


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


@pytest.fixture
def server_pair() -> Iterator[tuple[WebSocket, Peer]]:
    """Our end as the server (no keepalive), the peer as a raw client."""
    a, b = socket.socketpair()
    ws = WebSocket(role=Role.SERVER, sock=a, ping_interval=None, close_timeout=2)
    yield ws, Peer(b)
    a.close()
    b.close()


# ------------------------------------------------------------------ closing


def test_peer_closes_first_we_echo_its_code_then_end_tcp(
    server_pair: tuple[WebSocket, Peer],
) -> None:
    ws, peer = server_pair
    peer.send(1, b"last")
    peer.send(8, close_payload(1001, "leaving"))
    assert ws.receive() == "last"  # what came before the close is still delivered
    with pytest.raises(ConnectionClosedOK) as info:
        ws.receive()
    assert (info.value.code, info.value.reason) == (1001, "leaving")
    # On the wire: exactly the echo of its code (no reason), then our FIN.
    assert peer.rest_until_eof() == b"\x88\x02" + struct.pack("!H", 1001)
    assert ws.state is ConnectionState.CLOSED


@pytest.mark.parametrize(("code", "quiet"), [(1000, True), (1001, True), (1011, False)])
def test_iterating_ends_quietly_on_a_normal_close_and_raises_on_another(
    server_pair: tuple[WebSocket, Peer], code: int, quiet: bool
) -> None:
    ws, peer = server_pair
    peer.send(1, b"a")
    peer.send(2, b"b")
    peer.send(8, close_payload(code, "bye"))
    seen: list[str | bytes] = []
    if quiet:
        seen.extend(ws)
    else:
        with pytest.raises(ConnectionClosedError) as info:
            seen.extend(ws)
        assert (info.value.code, info.value.reason) == (code, "bye")
    assert seen == ["a", b"b"]
    if quiet:
        assert list(ws) == []  # a loop over a closed connection ends at once
    else:
        with pytest.raises(ConnectionClosedError):
            list(ws)
    with pytest.raises(ConnectionClosedOK if quiet else ConnectionClosedError):
        ws.receive()  # receive() still says how it ended
    assert peer.rest_until_eof() == b"\x88\x02" + struct.pack("!H", code)


MSG_MSG_CLOSE = (
    RawClient.frame(1, b"one")
    + RawClient.frame(1, b"two")
    + RawClient.frame(8, close_payload(1000, "done"))
)


def echo_until_closed(ws: WebSocket) -> list[str | bytes]:
    """The echo handler: answer every message until the peer's close ends the loop."""
    seen = []
    for message in ws:
        seen.append(message)
        ws.send(message)
    return seen


@pytest.mark.parametrize("delivery", ["behind the handshake", "in one recv"])
def test_echoes_of_messages_before_the_peers_close_reach_it_before_our_reply(
    delivery: str,
) -> None:
    """The three frames arrive in ONE read: the handler still answers both messages, and
    our close reply follows the answers (RFC 6455 1.4: the handshake loses no data)."""
    a, b = socket.socketpair()
    peer = Peer(b)
    if delivery == "in one recv":
        b.sendall(MSG_MSG_CLOSE)  # queued before the first recv: one read takes all three
        ws = WebSocket(role=Role.SERVER, sock=a, ping_interval=None, close_timeout=60)
    else:  # parsed from the bytes read with the handshake: one feed, by construction
        ws = WebSocket(
            role=Role.SERVER, sock=a, ping_interval=None, close_timeout=60, leftover=MSG_MSG_CLOSE
        )
    assert echo_until_closed(ws) == ["one", "two"]
    assert peer.read_frame() == (1, True, b"one")
    assert peer.read_frame() == (1, True, b"two")
    assert peer.read_frame() == (8, True, close_payload(1000))  # the echo of its code
    assert peer.rest_until_eof() == b""
    assert (ws.close_code, ws.close_reason) == (1000, "done")
    a.close()
    b.close()


def test_until_the_reply_the_connection_is_closing_and_still_sends(
    server_pair: tuple[WebSocket, Peer],
) -> None:
    ws, peer = server_pair
    ws.close_timeout = 60  # the bound on the reply (tested below) stays out of the way
    peer.sock.sendall(MSG_MSG_CLOSE)
    assert ws.receive() == "one"
    assert ws.state is ConnectionState.CLOSING  # the peer's close is in: the end is near
    assert not ws.keepalive_ping(1.0)  # no keepalive now: the reply is due anyway
    ws.send("answer")
    ws.send_many(["a broadcast"])  # the hub's path too
    assert ws.receive() == "two"
    with pytest.raises(ConnectionClosedOK):
        ws.receive()
    with pytest.raises(ConnectionClosedOK):
        ws.send_many(["too late"])  # after our reply, no more data frames
    assert [peer.read_frame()[2] for _ in range(3)] == [b"answer", b"a broadcast", b"\x03\xe8"]
    assert peer.rest_until_eof() == b""


def test_close_before_taking_the_messages_replies_with_the_peers_code(
    server_pair: tuple[WebSocket, Peer],
) -> None:
    ws, peer = server_pair
    ws.close_timeout = 60
    peer.sock.sendall(MSG_MSG_CLOSE)
    assert ws.receive() == "one"
    ws.close(1001, "going away")  # the peer closed first: its code is echoed
    assert peer.read_frame() == (8, True, close_payload(1000))
    assert peer.rest_until_eof() == b""
    assert ws.receive() == "two"  # what was received is still handed out
    with pytest.raises(ConnectionClosedOK):
        ws.receive()
    assert (ws.close_code, ws.close_reason) == (1000, "done")


def test_a_handler_that_stops_reading_gets_the_reply_sent_at_close_timeout() -> None:
    """A handler that never reads again cannot keep the connection half-open."""
    a, b = socket.socketpair()
    peer = Peer(b)
    ws = WebSocket(role=Role.SERVER, sock=a, ping_interval=None, close_timeout=0.2)
    closed = threading.Event()
    ws.add_close_callback(lambda _: closed.set())
    peer.sock.sendall(MSG_MSG_CLOSE)
    assert ws.receive() == "one"  # and never again: the close sits behind "two"
    assert peer.read_frame() == (8, True, close_payload(1000))
    assert peer.rest_until_eof() == b""
    assert closed.wait(10)
    with pytest.raises(ConnectionClosedOK):
        ws.send("after the reply")
    assert ws.receive() == "two"
    a.close()
    b.close()


def test_we_close_first_the_peer_replies_and_we_end_tcp(
    server_pair: tuple[WebSocket, Peer],
) -> None:
    ws, peer = server_pair
    closer = threading.Thread(target=ws.close, args=(4000, "bye"))
    closer.start()
    assert peer.read_frame() == (8, True, close_payload(4000, "bye"))
    peer.send(8, close_payload(4000))
    closer.join(10)
    assert peer.rest_until_eof() == b""
    assert (ws.close_code, ws.close_reason) == (4000, "")  # the peer's reply, same code


def test_both_close_at_once(server_pair: tuple[WebSocket, Peer]) -> None:
    ws, peer = server_pair
    peer.send(8, close_payload(1000, "peer"))
    ws.close(1001, "us")  # our close crosses the peer's: no second close frame either way
    assert peer.read_frame() == (8, True, close_payload(1001, "us"))
    assert peer.rest_until_eof() == b""
    assert ws.close_code == 1001  # we closed first: our code describes the connection


def test_closing_while_a_message_is_half_received(server_pair: tuple[WebSocket, Peer]) -> None:
    ws, peer = server_pair
    peer.send(1, b"half", fin=False)
    with pytest.raises(TimeoutError):
        ws.receive(timeout=0.05)
    peer.send(8, close_payload(1000))
    with pytest.raises(ConnectionClosedOK):
        ws.receive()
    assert peer.rest_until_eof() == b"\x88\x02\x03\xe8"


def test_eof_mid_frame_is_an_abnormal_end(server_pair: tuple[WebSocket, Peer]) -> None:
    ws, peer = server_pair
    peer.sock.sendall(RawClient.frame(2, b"x" * 100)[:20])  # a frame cut short
    peer.sock.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionClosedError) as info:
        ws.receive()
    assert info.value.code == 1006
    assert peer.rest_until_eof() == b""  # no close frame after TCP ended: nothing to say


def test_failure_sends_its_close_then_ends_tcp_and_ignores_the_rest(
    server_pair: tuple[WebSocket, Peer],
) -> None:
    ws, peer = server_pair
    peer.send(1, b"before")
    peer.sock.sendall(RawClient.frame(1, b"unmasked", mask=False))  # RFC 6455 5.1: fail
    peer.send(9, b"ping after the fault")  # must not be answered
    assert ws.receive() == "before"  # delivered first
    ws.send("reply")  # and may be answered
    with pytest.raises(ConnectionClosedError) as info:
        ws.receive()
    assert info.value.code == 1002
    assert peer.read_frame() == (1, True, b"reply")
    code, _ = peer.read_close()
    assert code == 1002
    assert peer.rest_until_eof() == b""  # no pong: input after a failure is not processed


def test_client_waits_for_the_servers_fin() -> None:
    """A client answers the server's close, then lets the server end TCP first (7.1.1).
    A message that came before that close is still delivered and may be answered first."""
    a, b = socket.socketpair()
    ws = WebSocket(role=Role.CLIENT, sock=a, ping_interval=None, close_timeout=5)
    peer = Peer(b, mask=False)
    b.sendall(
        RawClient.frame(1, b"last", mask=False)
        + RawClient.frame(8, close_payload(1000), mask=False)
    )
    assert ws.receive() == "last"
    ws.send("answer")
    errors: list[BaseException] = []

    def receive() -> None:
        try:
            ws.receive()
        except BaseException as exc:
            errors.append(exc)

    done = threading.Thread(target=receive)
    done.start()
    assert peer.read_any() == (1, True, b"answer")
    assert peer.read_any() == (8, True, close_payload(1000))  # our (masked) reply
    b.shutdown(socket.SHUT_WR)  # the server's FIN
    done.join(10)
    assert [type(e) for e in errors] == [ConnectionClosedOK]
    assert ws.close_code == 1000
    assert peer.rest_until_eof() == b""  # and only then does the client end its side
    b.close()


# ------------------------------------------------------------------ sending


def test_a_failing_send_stream_fails_the_connection_with_1011(
    server_pair: tuple[WebSocket, Peer],
) -> None:
    ws, peer = server_pair

    def chunks() -> Iterator[str]:
        yield "one, "
        yield "two, "
        raise ValueError("the source broke")

    with pytest.raises(ValueError, match="the source broke"):
        ws.send_stream(chunks())
    # A chunk goes out once the next one exists (the last one carries FIN): "two, " never did.
    assert peer.read_frame() == (1, False, b"one, ")
    assert peer.read_close() == (1011, "stream failed")
    assert ws.close_code == 1011
    with pytest.raises(ConnectionClosedError):
        ws.send("after")


def test_concurrent_senders_and_receivers(server_pair: tuple[WebSocket, Peer]) -> None:
    ws, peer = server_pair
    senders, count = 4, 50
    peer.sock.sendall(b"".join(RawClient.frame(2, b"%d" % i) for i in range(senders * count)))
    received: list[str | bytes] = []
    lock = threading.Lock()

    def receive() -> None:
        for _ in range(count):
            message = ws.receive()
            with lock:
                received.append(message)

    def send(n: int) -> None:
        for i in range(count):
            ws.send(f"{n}:{i}:" + "x" * 3000)

    threads = [threading.Thread(target=receive) for _ in range(senders)]
    threads += [threading.Thread(target=send, args=(n,)) for n in range(senders)]
    for t in threads:
        t.start()
    seen: dict[str, list[int]] = {}
    for _ in range(senders * count):
        opcode, fin, payload = peer.read_frame()
        assert opcode == 1 and fin
        n, i, body = payload.decode().split(":")
        assert body == "x" * 3000  # whole frames, never interleaved
        seen.setdefault(n, []).append(int(i))
    for t in threads:
        t.join(10)
    assert sorted(received, key=int) == [b"%d" % i for i in range(senders * count)]
    assert all(order == list(range(count)) for order in seen.values())


def test_corked_replies_all_go_out() -> None:
    """Replies to pipelined messages are held back (gevent, raw socket) and flushed."""
    import gevent
    import gevent.socket

    a, b = gevent.socket.socketpair()
    ws = WebSocket(role=Role.SERVER, sock=a, ping_interval=None)
    assert ws._raw_sock is not None
    peer = Peer(b)
    for i in range(5):
        peer.send(1, b"m%d" % i)

    def echo() -> None:
        for _ in range(5):
            ws.send(ws.receive())

    g = gevent.spawn(echo)
    frames = [peer.read_frame() for _ in range(5)]
    g.join(10)
    assert frames == [(1, True, b"m%d" % i) for i in range(5)]
    a.close()
    b.close()


def test_send_json_and_receive_json(server_pair: tuple[WebSocket, Peer]) -> None:
    ws, peer = server_pair
    ws.send_json({"a": [1, 2], "b": None})
    assert peer.read_frame() == (1, True, b'{"a":[1,2],"b":null}')  # compact
    peer.send(1, b'{"x": 1}')
    peer.send(2, b"[true]")  # binary JSON decodes too
    assert ws.receive_json() == {"x": 1}
    assert ws.receive_json() == [True]
    peer.send(1, b"not json")
    with pytest.raises(ValueError):
        ws.receive_json()


# ------------------------------------------------------------------ observer


class Recorder:
    def __init__(self, drop: bytes | None = None, forbid: bytes | None = None) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.drop = drop
        self.forbid = forbid

    def opened(self, ws: WebSocket) -> None:
        self.calls.append(("opened",))

    def message_received(self, ws: WebSocket, text: bool, size: int) -> bool:
        self.calls.append(("received", text, size))
        if self.forbid is not None and size == len(self.forbid):
            raise PolicyViolation("not that one")
        return self.drop is None or size != len(self.drop)

    def message_sent(self, ws: WebSocket, text: bool, size: int) -> None:
        self.calls.append(("sent", text, size))

    def pong_received(self, ws: WebSocket, rtt: float) -> None:
        self.calls.append(("pong", rtt >= 0))

    def closed(self, ws: WebSocket, code: int, reason: str, initiator: str) -> None:
        self.calls.append(("closed", code, reason, initiator))


def observed_pair(recorder: Recorder) -> tuple[WebSocket, Peer]:
    a, b = socket.socketpair()
    ws = WebSocket(role=Role.SERVER, sock=a, ping_interval=None, close_timeout=2, observer=recorder)
    return ws, Peer(b)


def test_observer_sees_the_connections_life() -> None:
    recorder = Recorder(drop=b"drop me")
    ws, peer = observed_pair(recorder)
    peer.send(1, "héllo".encode())
    peer.send(2, b"drop me")
    peer.send(2, b"kept")
    assert ws.receive() == "héllo"
    assert ws.receive() == b"kept"  # the dropped one never reached the handler
    ws.send("é")
    ws.send_stream([b"ab", b"cd"])
    waiter = ws.ping(b"p")
    assert [peer.read_frame() for _ in range(3)] == [
        (1, True, "é".encode()),
        (2, False, b"ab"),
        (0, True, b"cd"),
    ]
    assert peer.read_frame() == (9, True, b"p")
    peer.send(10, b"p")
    assert waiter.wait(5)
    assert ws.latency > 0.0
    peer.send(8, close_payload(1000, "done"))
    with pytest.raises(ConnectionClosedOK):
        ws.receive()
    assert recorder.calls == [
        ("opened",),
        ("received", True, 6),  # payload bytes, not characters
        ("received", False, 7),
        ("received", False, 4),
        ("sent", True, 2),
        ("sent", False, 4),
        ("pong", True),
        ("closed", 1000, "done", "remote"),
    ]


def test_observer_policy_violation_closes_with_its_code() -> None:
    recorder = Recorder(forbid=b"forbidden")
    ws, peer = observed_pair(recorder)
    peer.send(2, b"forbidden")
    with pytest.raises(ConnectionClosedError) as info:
        ws.receive()
    assert (info.value.code, info.value.reason) == (1008, "not that one")
    assert peer.read_close() == (1008, "not that one")
    assert peer.rest_until_eof() == b""
    assert recorder.calls[-1] == ("closed", 1008, "not that one", "local")


def test_an_observer_without_per_message_calls_reads_the_engines_counts() -> None:
    recorder = Recorder()
    recorder.per_message = False  # type: ignore[attr-defined]
    ws, peer = observed_pair(recorder)
    peer.send(1, "héllo".encode())
    peer.send(2, b"ab", fin=False)  # a fragmented message counts once, all its bytes
    peer.send(0, b"cde")
    assert ws.receive() == "héllo"
    assert ws.receive() == b"abcde"
    ws.send("é")
    ws.send_stream([b"ab", b"cd"])
    assert [peer.read_frame() for _ in range(3)] == [
        (1, True, "é".encode()),
        (2, False, b"ab"),
        (0, True, b"cd"),
    ]
    traffic = ws.traffic
    counts = (traffic.messages_in, traffic.bytes_in, traffic.messages_out, traffic.bytes_out)
    assert counts == (2, 6 + 5, 2, 2 + 4)
    peer.send(8, close_payload(1000, "done"))
    with pytest.raises(ConnectionClosedOK):
        ws.receive()
    assert recorder.calls == [("opened",), ("closed", 1000, "done", "remote")]


def test_observer_sees_an_abnormal_end() -> None:
    recorder = Recorder()
    ws, peer = observed_pair(recorder)
    peer.sock.close()
    with pytest.raises(ConnectionClosedError):
        ws.receive()
    assert recorder.calls[-1][1] == 1006 and recorder.calls[-1][3] == "abnormal"


# ------------------------------------------------------------------ keepalive


@pytest.fixture(scope="module")
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context


@pytest.fixture(params=["plain", "tls"])
def keepalive_pair(
    request: pytest.FixtureRequest, tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two connected ends: (ours, the peer's), plain or TLS over a socketpair."""
    a, b = socket.socketpair()
    if request.param == "tls":
        server_context, client_context = tls_contexts
        peer_box: list[ssl.SSLSocket] = []
        handshake = threading.Thread(
            target=lambda: peer_box.append(server_context.wrap_socket(b, server_side=True))
        )
        handshake.start()
        a = client_context.wrap_socket(a, server_hostname="127.0.0.1")
        handshake.join(10)
        b = peer_box[0]
    yield a, b
    a.close()
    b.close()


def test_keepalive_judges_a_silent_peer_with_many_unread_messages(
    keepalive_pair: tuple[socket.socket, socket.socket],
) -> None:
    """Keepalive with 256+ received messages unread: the silent peer is still judged.

    Keepalive then only checks whether the peer sent anything (it does not read more
    into a full queue); that check must work on an SSL socket too (it raised
    ValueError there, and keepalive died silently).
    """
    ours, peer = keepalive_pair
    peer.sendall(b"".join(RawClient.frame(1, b"m%d" % i, mask=False) for i in range(300)))
    ended = threading.Event()
    ws = WebSocket(role=Role.CLIENT, sock=ours, ping_interval=0.05, ping_timeout=0.05)
    ws.add_close_callback(lambda _: ended.set())
    assert ws.receive() == "m0"  # one read takes all 300 messages; 299 stay unread
    assert ended.wait(10), "keepalive never judged the silent peer"
    assert ws.close_code == 1011
    assert ws.close_reason == "keepalive ping timeout"


def test_keepalive_keeps_an_answering_peer_and_measures_latency(
    keepalive_pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = keepalive_pair
    ws = WebSocket(role=Role.CLIENT, sock=ours, ping_interval=0.02, ping_timeout=2)
    peer = Peer(theirs, mask=False)
    # Nobody reads: keepalive itself takes the pong when it judges, and pings again.
    assert peer.read_any() == (9, True, b"")
    peer.send(10, b"")
    assert peer.read_any() == (9, True, b"")  # the second ping: the first pong was seen
    peer.send(10, b"")
    peer.send(1, b"still here")
    assert ws.receive() == "still here"
    assert not ws.closed
    assert ws.latency > 0.0
    ws.close_timeout = 0.5
    ws.close()


def test_constructing_a_websocket_does_no_io() -> None:
    a, b = socket.socketpair()
    # The peer's ping came in with the handshake: answering it is I/O, so it waits.
    ws = WebSocket(
        role=Role.SERVER, sock=a, ping_interval=None, leftover=RawClient.frame(9, b"early")
    )
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv(1)  # nothing written yet
    assert ws.state is ConnectionState.OPEN
    b.setblocking(True)
    b.sendall(RawClient.frame(1, b"then"))
    assert ws.receive() == "then"
    assert Peer(b).read_frame() == (10, True, b"early")  # answered once reading began
    a.close()
    b.close()


def test_log_lines_about_a_connection_carry_its_id(caplog: pytest.LogCaptureFixture) -> None:
    a, b = socket.socketpair()
    environ: dict[str, Any] = {"PATH_INFO": "/x"}
    conn_id = connlog.new_id(environ)
    ws = WebSocket(role=Role.SERVER, environ=environ, sock=a, ping_interval=None, close_timeout=2)
    peer = Peer(b)
    with caplog.at_level(logging.INFO, logger="wsgiws"):
        peer.send(3)  # a reserved opcode: the connection fails with 1002
        with pytest.raises(ConnectionClosedError):
            ws.receive()
    assert peer.read_close()[0] == 1002
    (record,) = [r for r in caplog.records if "failed" in r.getMessage()]
    assert record.getMessage().startswith(f"ws {conn_id} failed (1002): ")
    assert record.ws_id == conn_id  # type: ignore[attr-defined]
