"""The WebSocket object under real servers: timeouts, errors, concurrency, keepalive, close."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.sync.client import connect

from tests.conftest import SERVER_KINDS
from tests.servers import Server, serve
from tests.wire import RawClient


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    with serve(request.param, "tests.apps:app") as srv:
        yield srv


def wait_for_log(server: Server, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = server.log()
        if text in log:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in log:\n{server.log()}")


def test_receive_timeout_leaves_the_connection_usable(server: Server) -> None:
    with connect(server.url + "/timeout") as ws:
        assert ws.recv() == "timeout"
        ws.send("again")
        assert ws.recv() == "again"


def test_handler_exception_closes_1011_and_logs_path(server: Server) -> None:
    with connect(server.url + "/raise") as ws:
        ws.send("go")
        with pytest.raises(ConnectionClosedError):
            ws.recv()
    assert ws.close_code == 1011
    log = wait_for_log(server, "boom in handler")
    assert "/raise" in log
    assert "ValueError" in log


def test_handler_close_with_code(server: Server) -> None:
    client = RawClient(server.port, "/close")
    client.send_frame(1, b"x")
    assert client.read_close() == (4000, "custom reason")
    client.send_frame(8, struct.pack("!H", 4000))
    assert client.rest_until_eof() == b""


def test_concurrent_sends_never_interleave_frames(server: Server) -> None:
    with connect(server.url + "/concurrent", max_size=None) as ws:
        seen: dict[str, list[int]] = {}
        while True:
            message = ws.recv()
            assert isinstance(message, str)
            if message == "done":
                break
            n, i, body = message.split(":", 2)
            assert body == "x" * 20000
            seen.setdefault(n, []).append(int(i))
        assert sorted(seen) == [str(n) for n in range(8)]
        assert all(order == list(range(50)) for order in seen.values())


def test_streamed_messages_arrive_whole(server: Server) -> None:
    client = RawClient(server.port, "/stream")
    frames = [client.read_frame() for _ in range(5)]
    assert frames == [
        (1, False, b"chunk1-"),
        (0, False, b"chunk2-"),
        (0, True, b"chunk3"),
        (2, False, b"\x00"),
        (0, True, b"\x01"),
    ]
    client.close()


def test_ping_waits_for_pong(server: Server) -> None:
    with connect(server.url + "/ping") as ws:
        assert ws.recv() == "pong ok"


def test_keepalive_fails_a_silent_peer_with_1011(server: Server) -> None:
    client = RawClient(server.port, "/keepalive")
    started = time.monotonic()
    opcode, _, _ = client.read_frame()
    assert opcode == 9  # the keepalive ping, which we do not answer
    assert client.read_close()[0] == 1011
    assert client.rest_until_eof() == b""
    assert time.monotonic() - started < 3
    wait_for_log(server, "keepalive handler ended with code 1011")


def test_keepalive_keeps_an_answering_peer(server: Server) -> None:
    with connect(server.url + "/keepalive") as ws:  # websockets answers pings
        time.sleep(1.0)
        ws.send("still here")
        assert ws.recv() == "still here"


def test_environ_and_subprotocol_reach_the_handler(server: Server) -> None:
    with connect(
        server.url + "/info?room=7",
        subprotocols=["a", "b"],  # type: ignore[list-item]
        additional_headers={"Cookie": "session=abc"},
    ) as ws:
        info = json.loads(ws.recv())
    assert info == {"subprotocol": "b", "path": "/info", "query": "room=7", "cookie": "session=abc"}


def test_handler_may_refuse_before_accepting(server: Server) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(server.url + "/reject")
    assert info.value.response.status_code == 403
    assert b"members only" in info.value.response.body


def test_handler_returning_at_once_closes_1000(server: Server) -> None:
    client = RawClient(server.port, "/noop")
    assert client.accepted_properly()
    assert client.read_close() == (1000, "")
    client.send_frame(8, struct.pack("!H", 1000))
    assert client.rest_until_eof() == b""


def test_explicit_accept_with_subprotocol(server: Server) -> None:
    with connect(server.url + "/choose", subprotocols=["first", "second"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "second"
        assert ws.recv() == "second"


def test_abrupt_client_disconnect_does_not_log_errors(server: Server) -> None:
    client = RawClient(server.port, "/echo")
    client.send_frame(1, b"half", fin=False)
    client.close()  # vanish mid-message, no close frame
    time.sleep(0.3)
    with connect(server.url + "/echo") as ws:  # the server is fine
        ws.send("ok")
        assert ws.recv() == "ok"
    assert "Traceback" not in server.log().split("boom in handler")[-1]


def test_a_stream_that_fails_midway_ends_the_connection_with_1011(server: Server) -> None:
    client = RawClient(server.port, "/badstream")
    assert client.read_frame() == (1, False, b"text first, ")
    assert client.read_close()[0] == 1011
    assert client.rest_until_eof() == b""
    wait_for_log(server, "badstream: TypeError, close code 1011")


def test_close_gives_up_after_close_timeout_on_a_silent_peer(server: Server) -> None:
    client = RawClient(server.port, "/closer")
    assert client.read_frame() == (1, True, b"closing")
    started = time.monotonic()
    assert client.read_close() == (1000, "bye")
    # We never answer the close frame: the server still ends TCP, soon after close_timeout.
    assert client.rest_until_eof(timeout=5) == b""
    assert time.monotonic() - started < 3
    wait_for_log(server, "closer: close returned, code 1000")
