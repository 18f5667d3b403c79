"""Frameworks without a wsgiws adapter (Pyramid, Falcon): the generic middleware and
``run_session`` inside their views, under real servers."""

from __future__ import annotations

import struct
import urllib.request
from collections.abc import Iterator

import pytest
from websockets.sync.client import connect

from tests.conftest import SERVER_KINDS
from tests.servers import Server, serve
from tests.wire import RawClient

#: framework: (example app, its plain page)
FRAMEWORKS = {
    "pyramid": ("examples.pyramid_echo:app", b"an ordinary Pyramid view\n"),
    "falcon": ("examples.falcon_echo:app", b"an ordinary Falcon responder\n"),
}


@pytest.fixture(scope="module", params=[(f, k) for f in FRAMEWORKS for k in SERVER_KINDS])
def framework_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, Server]]:
    framework, kind = request.param
    pytest.importorskip(framework)
    with serve(kind, FRAMEWORKS[framework][0]) as srv:
        yield framework, srv


def login_cookie(framework: str, server: Server) -> str:
    if framework == "falcon":
        return "user=ada"  # read by the example's Falcon middleware into req.context.user
    with urllib.request.urlopen(f"{server.http_url}/login/ada", timeout=5) as response:
        return str(response.headers["Set-Cookie"].split(";", 1)[0])  # Pyramid's session


def test_handler_sees_the_framework_request(framework_server: tuple[str, Server]) -> None:
    framework, server = framework_server
    cookie = login_cookie(framework, server)
    with connect(server.url + "/chat/lobby", additional_headers={"Cookie": cookie}) as ws:
        assert ws.recv() == "ada joined lobby"  # session / req.context and the URL's field
        ws.send("hi")
        assert ws.recv() == "ada@lobby: hi"
    assert ws.close_code == 1000


def test_refused_with_the_framework_403_before_accepting(
    framework_server: tuple[str, Server],
) -> None:
    _, server = framework_server
    client = RawClient(server.port, "/chat/lobby")
    assert client.status == 403
    assert b"log in first" in client.body()
    client.close()


def test_bad_handshake_answered_through_the_framework(
    framework_server: tuple[str, Server],
) -> None:
    framework, server = framework_server
    cookie = login_cookie(framework, server)
    headers = {"Cookie": cookie, "Origin": "http://evil.example"}
    client = RawClient(server.port, "/chat/lobby", headers=headers)
    assert client.status == 403
    assert b"origin 'http://evil.example' is not allowed" in client.body()
    client.close()


def test_plain_routes_and_clean_close(framework_server: tuple[str, Server]) -> None:
    framework, server = framework_server
    with urllib.request.urlopen(server.http_url + "/", timeout=5) as response:
        assert response.read() == FRAMEWORKS[framework][1]
    client = RawClient(server.port, "/chat/r", headers={"Cookie": login_cookie(framework, server)})
    assert client.accepted_properly()
    assert client.read_frame() == (1, True, b"ada joined r")
    client.send_frame(8, struct.pack("!H", 1000))
    assert client.read_close() == (1000, "")
    assert client.rest_until_eof() == b""  # nothing from the framework after the close frame
    client.close()
    assert "Traceback" not in server.log()


def test_test_client_drives_them_in_process() -> None:
    from wsgiws.exceptions import HandshakeRejected
    from wsgiws.testing import TestClient

    pytest.importorskip("falcon")
    from examples.falcon_echo import app

    with TestClient(app, cookies={"user": "ada"}).websocket_connect("/chat/x") as ws:
        assert ws.receive() == "ada joined x"
    with pytest.raises(HandshakeRejected) as info:
        TestClient(app).websocket_connect("/chat/x")
    assert info.value.status == 403
