"""The echo example under real servers, checked on the wire and with an independent client."""

from __future__ import annotations

import struct

import pytest
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.sync.client import connect

from tests.servers import Server
from tests.wire import RawClient


def test_echo_text_and_binary(echo_server: Server) -> None:
    with connect(echo_server.url + "/echo", max_size=None) as ws:
        ws.send("héllo")
        assert ws.recv() == "héllo"
        ws.send(b"\x00\xff")
        assert ws.recv() == b"\x00\xff"
        big = b"x" * (3 << 20)
        ws.send(big)
        assert ws.recv() == big
    assert ws.close_code == 1000


def test_subprotocol_chosen_by_server_preference(echo_server: Server) -> None:
    with connect(echo_server.url + "/proto", subprotocols=["superchat", "chat"]) as ws:
        assert ws.subprotocol == "chat"
        ws.send("x")
        assert ws.recv() == "x"
    with connect(echo_server.url + "/proto", subprotocols=["other"]) as ws:
        assert ws.subprotocol is None


def test_clean_close_nothing_after_close_frame_and_fin(echo_server: Server) -> None:
    client = RawClient(echo_server.port)
    assert client.accepted_properly()
    client.send_frame(1, b"hi")
    assert client.read_frame() == (1, True, b"hi")
    client.send_frame(8, struct.pack("!H", 1000) + b"bye")
    assert client.read_close() == (1000, "")
    assert client.rest_until_eof() == b""  # no stray bytes, then FIN
    client.close()


def test_protocol_error_closes_with_1002_then_fin(echo_server: Server) -> None:
    client = RawClient(echo_server.port)
    client.send_frame(1, b"unmasked", mask=False)
    assert client.read_close()[0] == 1002
    assert client.rest_until_eof() == b""
    client.close()


def test_bytes_sent_right_behind_the_handshake_are_not_lost(echo_server: Server) -> None:
    extra = RawClient.frame(1, b"early") + RawClient.frame(2, b"bird")
    client = RawClient(echo_server.port, extra=extra)
    assert client.accepted_properly()
    assert client.read_frame() == (1, True, b"early")
    assert client.read_frame() == (2, True, b"bird")
    client.close()


def test_plain_http_routes_pass_through(echo_server: Server) -> None:
    import urllib.request

    with urllib.request.urlopen(echo_server.http_url + "/") as response:
        assert response.status == 200
        assert b"new WebSocket" in response.read()


def test_bad_handshakes_get_http_errors(echo_server: Server) -> None:
    client = RawClient(echo_server.port, headers={"Sec-WebSocket-Version": "8"})
    # RawClient already sent version 13; a second header value makes "13,8": not 13.
    assert client.status == 426
    assert client.headers["sec-websocket-version"] == "13"
    client.close()
    client = RawClient(echo_server.port, headers={"Origin": "http://evil.example"})
    assert client.status == 403
    assert b"origin" in client.body()
    client.close()
    with pytest.raises(InvalidStatus) as info:
        connect(echo_server.url + "/echo", origin="http://evil.example")  # type: ignore[arg-type]
    assert info.value.response.status_code == 403


def test_message_too_big_is_1009(echo_server: Server) -> None:
    with connect(echo_server.url + "/echo", max_size=None) as ws:
        ws.send(b"x" * ((16 << 20) + 1))
        with pytest.raises(ConnectionClosedError):
            ws.recv()
    assert ws.close_code == 1009


def test_access_log_records_101(echo_server: Server) -> None:
    with connect(echo_server.url + "/echo") as ws:
        ws.send("x")
        ws.recv()
    import time

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and '" 101 ' not in echo_server.log():
        time.sleep(0.05)
    log = echo_server.log()
    assert '"GET /echo HTTP/1.1" 101' in log
    assert "Traceback" not in log
    assert " 500 " not in log
