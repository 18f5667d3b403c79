"""wsgiws.testing.TestClient: WebSocket routes tested in-process, no listening socket."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import bottle
import pytest
from flask import Flask, abort, g, request, session

import examples.echo
from wsgiws import Reject, WebSocket, WebSocketMiddleware
from wsgiws.bottle import websocket
from wsgiws.deflate import PerMessageDeflate
from wsgiws.exceptions import (
    ConnectionClosedError,
    ConnectionClosedOK,
    HandshakeRejected,
    ReceiveTimeout,
)
from wsgiws.flask import WebSockets
from wsgiws.testing import TestClient

RUNTIMES = ["threads", "gevent"]

# ------------------------------------------------------------ examples/echo.py


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_echo_example(runtime: Any) -> None:
    client = TestClient(examples.echo.app, runtime=runtime)
    with client.websocket_connect("/echo", max_message_size=None) as ws:
        ws.send("hi")
        assert ws.receive() == "hi"
        ws.send(b"\x00\x01")
        assert ws.receive() == b"\x00\x01"
        big = b"z" * (2 << 20)
        ws.send(big)  # bigger than a socket pair's buffer: the handler runs concurrently
        assert ws.receive() == big
        assert ws.ping(b"x").wait(5)
    assert ws.close_code == 1000
    assert ws.wait_server(0)
    assert ws._rt is not None and ws._rt.name == ("gevent" if runtime == "gevent" else "threads")


def test_echo_example_subprotocols_and_rejections() -> None:
    client = TestClient(examples.echo.app)
    with client.websocket_connect("/proto", subprotocols=["superchat", "chat"]) as ws:
        assert ws.subprotocol == "chat"
    with pytest.raises(HandshakeRejected) as info:
        client.websocket_connect("/echo", origin="http://evil.example")
    assert info.value.status == 403
    assert b"not allowed" in info.value.body
    with client.websocket_connect("/echo", origin="http://localhost") as ws:
        ws.send("same origin")
        assert ws.receive() == "same origin"
    with pytest.raises(HandshakeRejected) as info:
        client.websocket_connect("/missing")
    assert info.value.status == 404


# --------------------------------------------------------------------- Flask


def make_flask_app() -> Flask:
    app = Flask(__name__)
    app.secret_key = "test"
    sockets = WebSockets(app)
    events: list[str] = []
    app.config["events"] = events

    @app.before_request
    def load_user() -> None:
        g.user = session.get("user")

    @app.post("/login")
    def login() -> str:
        session["user"] = request.form["name"]
        return "ok"

    @sockets.route("/private")
    def private(ws: WebSocket) -> None:
        if g.user is None:
            abort(403)
        ws.send(f"hello {g.user}")
        for message in ws:
            ws.send(f"{g.user}: {message}")
        events.append("private done")

    @sockets.route("/room/<name>")
    def room(ws: WebSocket, name: str) -> None:
        ws.send(f"{name}|{request.args.get('x')}|{request.headers.get('X-Token')}")

    @sockets.route("/boom")
    def boom(ws: WebSocket) -> None:
        ws.send("about to fail")
        raise RuntimeError("handler bug")

    @sockets.route("/refuse")
    def refuse(ws: WebSocket) -> Any:
        raise Reject(401, "token required", [("WWW-Authenticate", "Bearer")])

    @sockets.route("/early-bug")
    def early_bug(ws: WebSocket) -> None:
        raise KeyError("before accepting")

    return app


def test_flask_session_auth_with_cookies_from_the_flask_test_client() -> None:
    app = make_flask_app()
    http = app.test_client()
    ws_client = TestClient(app, cookies=http)
    with pytest.raises(HandshakeRejected) as info:
        ws_client.websocket_connect("/private")
    assert info.value.status == 403
    assert http.post("/login", data={"name": "ada"}).status_code == 200
    with ws_client.websocket_connect("/private") as ws:
        assert ws.receive() == "hello ada"
        ws.send("hi")
        assert ws.receive() == "ada: hi"
    assert app.config["events"] == ["private done"]  # the handler finished before `with` ended


def test_flask_session_transaction_and_plain_cookie_mapping() -> None:
    app = make_flask_app()
    http = app.test_client()
    with http.session_transaction() as sess:
        sess["user"] = "grace"
    with TestClient(app).websocket_connect("/private", cookies=http) as ws:
        assert ws.receive() == "hello grace"
    cookie = http.get_cookie("session")
    assert cookie is not None
    with TestClient(app, cookies={"session": cookie.value}).websocket_connect("/private") as ws:
        assert ws.receive() == "hello grace"


def test_flask_url_variables_query_and_headers() -> None:
    client = TestClient(make_flask_app(), headers={"X-Token": "t0k"})
    with client.websocket_connect("/room/lobby?x=42") as ws:
        assert ws.receive() == "lobby|42|t0k"
        with pytest.raises(ConnectionClosedOK):
            ws.receive()  # the view returned: the server closed with 1000
    assert ws.close_code == 1000


def test_flask_handler_error_after_accept_is_1011() -> None:
    with TestClient(make_flask_app()).websocket_connect("/boom") as ws:
        assert ws.receive() == "about to fail"
        with pytest.raises(ConnectionClosedError) as info:
            ws.receive()
    assert info.value.code == 1011


def test_flask_reject_with_headers() -> None:
    with pytest.raises(HandshakeRejected) as info:
        TestClient(make_flask_app()).websocket_connect("/refuse")
    assert info.value.status == 401
    assert info.value.header("WWW-Authenticate") == "Bearer"
    assert info.value.body == b"token required\n"


def test_flask_error_before_accepting_propagates_in_testing_mode() -> None:
    app = make_flask_app()
    app.testing = True  # Flask re-raises view errors
    with pytest.raises(KeyError, match="before accepting"):
        TestClient(app).websocket_connect("/early-bug")
    app.testing = False  # Flask answers 500
    with pytest.raises(HandshakeRejected) as info:
        TestClient(app).websocket_connect("/early-bug")
    assert info.value.status == 500


def test_flask_plain_routes_are_not_websockets() -> None:
    with pytest.raises(HandshakeRejected) as info:
        TestClient(make_flask_app()).websocket_connect("/login")
    assert info.value.status == 405  # Flask: /login only allows POST


# -------------------------------------------------------------------- Bottle


def make_bottle_app() -> WebSocketMiddleware:
    app = bottle.Bottle()

    @app.route("/chat/<room>")
    @websocket(subprotocols=["v1"])
    def chat(ws: WebSocket, room: str) -> None:
        if bottle.request.get_cookie("user") is None:
            bottle.abort(403, "log in first")
        ws.send(f"{room}:{bottle.request.get_cookie('user')}:{ws.subprotocol}")

    return WebSocketMiddleware(app)


def test_bottle_route() -> None:
    client = TestClient(make_bottle_app())
    with pytest.raises(HandshakeRejected) as info:
        client.websocket_connect("/chat/x")
    assert info.value.status == 403
    assert b"log in first" in info.value.body
    client.cookies = {"user": "bob"}
    with client.websocket_connect("/chat/x", subprotocols=["v1"]) as ws:
        assert ws.receive() == "x:bob:v1"


# ----------------------------------------------------------------- plain WSGI


def test_app_that_raises_before_answering_re_raises_in_the_test() -> None:
    def broken(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        raise ZeroDivisionError("oops")

    with pytest.raises(ZeroDivisionError):
        TestClient(broken).websocket_connect("/")


def test_environ_is_a_real_wsgi_environ() -> None:
    seen: dict[str, Any] = {}
    mw = WebSocketMiddleware()

    @mw.route("/env")
    def env(ws: WebSocket) -> None:
        seen.update(ws.environ)
        ws.send("ok")

    client = TestClient(mw, base_url="https://example.com:8443")
    with client.websocket_connect(
        "/env?a=1&b=%C3%A9",
        headers=[("X-Multi", "1"), ("X-Multi", "2")],
        environ={"REMOTE_ADDR": "10.0.0.9"},
    ) as ws:
        assert ws.receive() == "ok"
    assert seen["PATH_INFO"] == "/env"
    assert seen["QUERY_STRING"] == "a=1&b=%C3%A9"
    assert seen["HTTP_HOST"] == "example.com:8443"
    assert seen["wsgi.url_scheme"] == "https"
    assert seen["SERVER_PORT"] == "8443"
    assert seen["HTTP_X_MULTI"] == "1,2"
    assert seen["REMOTE_ADDR"] == "10.0.0.9"
    assert seen["REQUEST_METHOD"] == "GET"
    assert seen["SERVER_PROTOCOL"] == "HTTP/1.1"


def test_handler_closing_with_a_code_and_server_side_close() -> None:
    mw = WebSocketMiddleware()
    done = threading.Event()

    @mw.route("/kick")
    def kick(ws: WebSocket) -> None:
        ws.send("go away")
        ws.close(4003, "kicked")
        done.set()

    with TestClient(mw).websocket_connect("/kick") as ws:
        assert ws.receive() == "go away"
        with pytest.raises(ConnectionClosedError) as info:
            ws.receive()
    assert (info.value.code, info.value.reason) == (4003, "kicked")
    assert done.is_set()


def test_compression_when_the_server_offers_it() -> None:
    """The test client offers permessage-deflate on request (the middleware may decline)."""
    with TestClient(examples.echo.app).websocket_connect("/echo", compression="deflate") as ws:
        ws.send("x" * 1000)
        assert ws.receive() == "x" * 1000
        assert ws.extension is None or isinstance(ws.extension, PerMessageDeflate)


def test_bad_paths_are_refused() -> None:
    with pytest.raises(ValueError):
        TestClient(examples.echo.app).websocket_connect("echo")


# ------------------------------------------------- the other examples/ handlers


def test_flask_example_echo_and_login_required_room() -> None:
    import examples.flask_echo as flask_echo

    client = TestClient(flask_echo.app)
    with client.websocket_connect("/echo") as ws:
        ws.send("flask")
        assert ws.receive() == "flask"
    with pytest.raises(HandshakeRejected) as info:
        client.websocket_connect("/private/lobby")
    assert info.value.status == 403
    http = flask_echo.app.test_client()
    assert http.get("/login/ada").status_code == 200
    with TestClient(flask_echo.app, cookies=http).websocket_connect("/private/lobby?mode=x") as ws:
        assert ws.receive() == "ada joined lobby (x)"
        ws.send("hi")
        assert ws.receive() == "ada: hi"


def test_bottle_example_echo_and_cookie_room() -> None:
    import examples.bottle_echo as bottle_echo

    client = TestClient(bottle_echo.app)
    with client.websocket_connect("/echo") as ws:
        ws.send(b"bottle")
        assert ws.receive() == b"bottle"
    with pytest.raises(HandshakeRejected) as info:
        client.websocket_connect("/private/r1", subprotocols=["chat"])
    assert info.value.status == 403
    with client.websocket_connect(
        "/private/r1", subprotocols=["chat"], cookies={"user": "bo"}
    ) as ws:
        assert ws.receive() == "bo joined r1 via chat"


# ------------------------------------------------------------ receive timeout


def silent_app() -> WebSocketMiddleware:
    """/silent reads but never answers; /late answers "late" to "go"."""
    app = WebSocketMiddleware()

    @app.route("/silent")
    def silent(ws: WebSocket) -> None:
        for _ in ws:
            pass

    @app.route("/late")
    def late(ws: WebSocket) -> None:
        if ws.receive() == "go":
            ws.send("late")
        for _ in ws:
            pass

    return app


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_receive_from_an_app_that_never_answers_fails_by_default(runtime: Any) -> None:
    with TestClient(silent_app(), runtime=runtime).websocket_connect("/silent") as ws:
        with pytest.raises(ReceiveTimeout, match=r"no message from the app within 5 s") as info:
            ws.receive()
        assert "receive_timeout" in str(info.value)


def test_receive_timeout_per_client_per_connection_and_per_call() -> None:
    client = TestClient(silent_app(), receive_timeout=0.05)
    with client.websocket_connect("/silent") as ws:
        with pytest.raises(ReceiveTimeout, match=r"within 0.05 s"):
            ws.receive()
        with pytest.raises(ReceiveTimeout, match=r"within 0.05 s"):
            next(iter(ws))  # iterating waits as long as receive()
        with pytest.raises(ReceiveTimeout) as info:
            ws.receive(timeout=0.01)  # an explicit timeout: the plain error
        assert "receive_timeout" not in str(info.value)
        assert not ws.closed  # the connection stays usable
    with (
        client.websocket_connect("/silent", receive_timeout=0.02) as ws,
        pytest.raises(ReceiveTimeout, match=r"within 0.02 s"),
    ):
        ws.receive()
    with client.websocket_connect("/late", receive_timeout=None) as ws:
        timer = threading.Timer(0.2, ws.send, ["go"])  # from another thread, while receiving
        timer.start()
        assert ws.receive() == "late"  # no default timeout: it waited
        timer.join()
    with client.websocket_connect("/late") as ws:
        timer = threading.Timer(0.2, ws.send, ["go"])
        timer.start()
        assert ws.receive(timeout=None) == "late"  # None for this call: waits too
        timer.join()
