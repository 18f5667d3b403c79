"""Flask and Bottle handlers in their app's request context, under real servers."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import SERVER_KINDS
from tests.servers import Server, serve
from tests.wire import RawClient


@pytest.fixture(scope="module", params=SERVER_KINDS)
def flask_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    with serve(request.param, "examples.flask_echo:app") as srv:
        yield srv


@pytest.fixture(scope="module", params=SERVER_KINDS)
def bottle_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    with serve(request.param, "examples.bottle_echo:app") as srv:
        yield srv


def login_cookie(server: Server, name: str) -> str:
    with urllib.request.urlopen(f"{server.http_url}/login/{name}") as response:
        cookie = response.headers["Set-Cookie"]
    return str(cookie.split(";", 1)[0])


def test_flask_echo_and_http_routes(flask_server: Server) -> None:
    with urllib.request.urlopen(flask_server.http_url + "/") as response:
        assert response.read() == b"an ordinary Flask route\n"
    with connect(flask_server.url + "/echo") as ws:
        for message in ["a", b"b", "ü" * 1000]:
            ws.send(message)
            assert ws.recv() == message
    assert ws.close_code == 1000


def test_flask_view_sees_session_g_request_and_url_variables(flask_server: Server) -> None:
    cookie = login_cookie(flask_server, "ada")
    with connect(
        flask_server.url + "/private/lobby?mode=quiet", additional_headers={"Cookie": cookie}
    ) as ws:
        assert ws.recv() == "ada joined lobby (quiet)"
        ws.send("hi")
        assert ws.recv() == "ada: hi"


def test_flask_abort_403_before_accepting(flask_server: Server) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(flask_server.url + "/private/lobby")
    assert info.value.response.status_code == 403


def test_flask_bad_handshake_is_answered_by_the_view(flask_server: Server) -> None:
    client = RawClient(flask_server.port, "/echo", headers={"Origin": "http://evil.example"})
    assert client.status == 403
    assert b"origin" in client.body()
    client.close()


def test_flask_plain_get_on_a_websocket_route_is_refused(flask_server: Server) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(flask_server.http_url + "/echo")
    assert info.value.code == 400  # Werkzeug's router: a websocket rule wants an upgrade


def test_flask_wire_is_clean_after_close(flask_server: Server) -> None:
    client = RawClient(flask_server.port, "/echo")
    client.send_frame(1, b"x")
    assert client.read_frame() == (1, True, b"x")
    client.send_frame(8, b"\x03\xe8")
    assert client.read_close() == (1000, "")
    assert client.rest_until_eof() == b""
    assert " 500 " not in flask_server.log()


def test_bottle_echo_and_http_routes(bottle_server: Server) -> None:
    with urllib.request.urlopen(bottle_server.http_url + "/") as response:
        assert response.read() == b"an ordinary Bottle route\n"
    with connect(bottle_server.url + "/echo") as ws:
        ws.send("hello")
        assert ws.recv() == "hello"
        ws.send(b"\x00")
        assert ws.recv() == b"\x00"


def test_bottle_request_context_cookies_and_subprotocol(bottle_server: Server) -> None:
    with connect(
        bottle_server.url + "/private/den",
        subprotocols=["chat"],  # type: ignore[list-item]
        additional_headers={"Cookie": "user=bob"},
    ) as ws:
        assert ws.recv() == "bob joined den via chat"


def test_bottle_abort_403_before_accepting(bottle_server: Server) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(bottle_server.url + "/private/den")
    assert info.value.response.status_code == 403


def test_bottle_wire_is_clean_after_close(bottle_server: Server) -> None:
    client = RawClient(bottle_server.port, "/echo")
    client.send_frame(8, b"\x03\xe8")
    assert client.read_close() == (1000, "")
    assert client.rest_until_eof() == b""
    log = bottle_server.log()
    assert " 500 " not in log and "Traceback" not in log
