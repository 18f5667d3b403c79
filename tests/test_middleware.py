"""WebSocketMiddleware: dispatch, refusals, options, and drain registration where it accepts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from wsgiws import WebSocket, WebSocketMiddleware, drain, metrics
from wsgiws.exceptions import ConnectionClosedError, HandshakeRejected
from wsgiws.testing import TestClient

UPGRADE = {
    "REQUEST_METHOD": "GET",
    "HTTP_UPGRADE": "websocket",
    "HTTP_CONNECTION": "Upgrade",
    "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==",
    "HTTP_SEC_WEBSOCKET_VERSION": "13",
    "HTTP_HOST": "localhost",
    "SERVER_PROTOCOL": "HTTP/1.1",
}


@pytest.fixture(autouse=True)
def _no_drain() -> Iterator[None]:
    drain._reset()
    yield
    drain._reset()


def plain_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"plain " + environ["PATH_INFO"].encode()]


def call(app: Any, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    answer: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        answer[:] = [status, headers]
        return lambda data: None

    body = b"".join(app({"PATH_INFO": "/", **environ}, start_response))
    return answer[0], answer[1], body


def test_plain_requests_pass_through_untouched() -> None:
    mw = WebSocketMiddleware(plain_app)
    mw.add_route("/ws", lambda ws: None)
    assert call(mw, {"REQUEST_METHOD": "GET", "PATH_INFO": "/page"}) == (
        "200 OK",
        [("Content-Type", "text/plain")],
        b"plain /page",
    )


def test_a_plain_request_to_a_websocket_route_is_told_to_upgrade() -> None:
    mw = WebSocketMiddleware(plain_app, routes={"/ws": lambda ws: None})
    status, _, _ = call(mw, {"REQUEST_METHOD": "GET", "PATH_INFO": "/ws"})
    assert status.startswith("4")  # not a WebSocket handshake: refused, never hijacked


def test_an_upgrade_to_an_unknown_path_without_an_app_is_404() -> None:
    mw = WebSocketMiddleware(None, routes={"/ws": lambda ws: None})
    status, _, body = call(mw, {**UPGRADE, "PATH_INFO": "/elsewhere"})
    assert status == "404 Not Found" and b"not found" in body


def test_a_bad_handshake_gets_its_status() -> None:
    mw = WebSocketMiddleware(None, routes={"/ws": lambda ws: None})
    status, headers, _ = call(
        mw, {**UPGRADE, "PATH_INFO": "/ws", "HTTP_SEC_WEBSOCKET_VERSION": "8"}
    )
    assert status == "426 Upgrade Required"
    assert ("Sec-WebSocket-Version", "13") in headers


def test_a_server_without_socket_access_gets_501() -> None:
    mw = WebSocketMiddleware(None, routes={"/ws": lambda ws: None})
    before = metrics.snapshot()["handshakes"].get(501, 0)
    status, _, _ = call(mw, {**UPGRADE, "PATH_INFO": "/ws"})  # no socket in this environ
    assert status == "501 Not Implemented"
    assert metrics.snapshot()["handshakes"][501] == before + 1  # counted as a refusal


def test_unknown_options_are_refused() -> None:
    with pytest.raises(TypeError, match="unknown WebSocket option"):
        WebSocketMiddleware(None, ping_intervall=3)
    mw = WebSocketMiddleware(None, ping_interval=5)
    mw.add_route("/ws", lambda ws: None, close_timeout=1)
    options = mw.routes["/ws"][1]
    assert (options.ping_interval, options.close_timeout) == (5, 1)


def test_an_accepted_connection_is_registered_with_the_drain_until_it_closes() -> None:
    mw = WebSocketMiddleware(None)
    inside: list[bool] = []

    @mw.route("/ws")
    def handler(ws: WebSocket) -> None:
        assert ws not in drain.open_websockets()  # not accepted yet: still HTTP
        ws.accept()
        inside.append(ws in drain.open_websockets())
        for message in ws:
            ws.send(message)

    with TestClient(mw).websocket_connect("/ws") as ws:
        ws.send("x")
        assert ws.receive() == "x"
    assert ws.wait_server(5)
    assert inside == [True]
    assert drain.open_websockets() == []


def test_while_draining_new_connections_get_503() -> None:
    mw = WebSocketMiddleware(None, routes={"/ws": lambda ws: ws.accept()})
    drain.start()
    with pytest.raises(HandshakeRejected) as info:
        TestClient(mw).websocket_connect("/ws")
    assert info.value.status == 503
    assert info.value.header("Retry-After") == "1"


def test_a_drain_closes_open_connections_with_1001() -> None:
    mw = WebSocketMiddleware(None)
    accepted = threading.Event()

    @mw.route("/ws")
    def handler(ws: WebSocket) -> None:
        ws.accept()
        accepted.set()
        for _ in ws:
            pass

    with TestClient(mw).websocket_connect("/ws") as ws:
        assert accepted.wait(5)
        assert drain.start() == 1
        with pytest.raises(Exception) as info:
            ws.receive()
    assert getattr(info.value, "code", None) == 1001


def test_a_handler_error_after_accepting_closes_1011() -> None:
    mw = WebSocketMiddleware(None)

    @mw.route("/ws")
    def handler(ws: WebSocket) -> None:
        ws.receive()
        raise RuntimeError("handler bug")

    with TestClient(mw).websocket_connect("/ws") as ws:
        ws.send("go")
        with pytest.raises(ConnectionClosedError) as info:
            ws.receive()
    assert info.value.code == 1011


def test_a_handler_returning_a_value_without_accepting_is_a_500() -> None:
    mw = WebSocketMiddleware(None, routes={"/ws": lambda ws: "not a websocket"})
    before = metrics.snapshot()["handshakes"].get(500, 0)
    with pytest.raises(HandshakeRejected) as info:
        TestClient(mw).websocket_connect("/ws")
    assert info.value.status == 500
    assert metrics.snapshot()["handshakes"][500] == before + 1
