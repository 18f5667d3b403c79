"""The code blocks of docs/flask.md and docs/migrating.md run as printed."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from wsgiws.exceptions import ConnectionClosedError, HandshakeRejected
from wsgiws.testing import TestClient

DOCS = Path(__file__).resolve().parent.parent / "docs"


def block_code(doc: str, marker: str) -> str:
    """The python block of ``doc`` that contains ``marker``."""
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / doc).read_text(), re.S)
    (code,) = [code for code in blocks if marker in code]
    return code


def block(doc: str, marker: str) -> types.ModuleType:
    """The python block of ``doc`` that contains ``marker``, run as a module."""
    code = block_code(doc, marker)
    name = f"docs_{doc.partition('.')[0]}_{abs(hash(marker))}"
    module = types.ModuleType(name)
    sys.modules[name] = module  # Flask finds the app's module by its name
    exec(compile(code, f"docs/{doc}", "exec"), module.__dict__)
    return module


def test_flask_md_app_factory_blueprint_and_config() -> None:
    doc = block("flask.md", "def create_app")
    first = doc.create_app()
    second = doc.create_app({"WSGIWS_MAX_MESSAGE_SIZE": 16})  # same routes, its own settings
    for app in (first, second):
        client = TestClient(app)
        with client.websocket_connect("/echo") as ws:
            ws.send("hi")
            assert ws.receive() == "hi"
        with client.websocket_connect("/chat/lobby") as ws:  # the blueprint's url_prefix
            assert ws.receive() == "welcome to lobby"
            ws.send("hello")
            assert ws.receive() == "lobby: hello"
        with client.websocket_connect("/big", max_message_size=None) as ws:
            ws.send("x" * 100_000)  # the route's own max_message_size=None wins over config
            assert ws.receive() == "100000"
    with TestClient(first).websocket_connect("/echo", max_message_size=None) as ws:
        ws.send("x" * 1000)  # under WSGIWS_MAX_MESSAGE_SIZE=64 KiB
        assert ws.receive() == "x" * 1000
    with TestClient(second).websocket_connect("/echo", max_message_size=None) as ws:
        ws.send("x" * 1000)  # over this app's 16 bytes
        with pytest.raises(ConnectionClosedError) as info:
            ws.receive()
        assert info.value.code == 1009
    assert first.extensions["wsgiws"].ping_interval == 30


def test_flask_md_init_app_keywords_and_unknown_config() -> None:
    from flask import Flask

    from wsgiws.flask import WebSockets

    doc = block("flask.md", "def create_app")
    app = Flask("keywords")
    app.config["WSGIWS_PING_INTERVAL"] = 30
    WebSockets(ping_timeout=5).init_app(app, ping_interval=7)  # keywords beat app.config
    assert (app.extensions["wsgiws"].ping_interval, app.extensions["wsgiws"].ping_timeout) == (7, 5)
    with pytest.raises(TypeError, match="WSGIWS_PING_INTERVALL"):
        doc.create_app({"WSGIWS_PING_INTERVALL": 1})


def test_flask_md_blueprint_on_an_app_without_init_app_says_so() -> None:
    from flask import Flask

    doc = block("flask.md", "def create_app")
    app = Flask("no_init")
    app.testing = True  # the view's exception reaches the test
    app.register_blueprint(doc.chat)
    with pytest.raises(RuntimeError, match=r"init_app"):
        TestClient(app).websocket_connect("/chat/lobby")


def test_migrating_from_flask_sock() -> None:
    app = block("migrating.md", "was sock = Sock(app)").app
    client = TestClient(app)
    with client.websocket_connect("/echo") as ws:
        ws.send("hi")
        assert ws.receive() == "hi"
    with client.websocket_connect("/ticker") as ws:
        assert ws.receive() == "tick"  # nothing sent: the timeout branch
        ws.send("x")
        while (message := ws.receive()) == "tick":
            pass
        assert message == "got x"
    assert app.extensions["wsgiws"].ping_interval == 25


def test_migrating_from_flask_sockets() -> None:
    app = block("migrating.md", "was a flask-sockets blueprint").app
    with pytest.raises(HandshakeRejected) as info:
        TestClient(app).websocket_connect("/ws/echo")
    assert info.value.status == 403
    http = app.test_client()
    with http.session_transaction() as session:
        session["user"] = "ada"
    with TestClient(app, cookies=http).websocket_connect("/ws/echo") as ws:
        ws.send("hello")
        assert ws.receive() == "ada: hello"


def test_migrating_from_gevent_websocket(tmp_path: Path) -> None:
    import urllib.request

    from websockets.sync.client import connect

    from tests.servers import free_port, run_server

    doc = block("migrating.md", "handler_class=WebSocketHandler")
    with TestClient(doc.app).websocket_connect("/echo") as ws:
        ws.send(b"\x00\x01")
        assert ws.receive() == b"\x00\x01"
    # and as a script under the real gevent.pywsgi, on a free port instead of 8000
    port = free_port()
    code = block_code("migrating.md", "handler_class=WebSocketHandler").replace(
        '("127.0.0.1", 8000)', f'("127.0.0.1", {port})'
    )
    (tmp_path / "app.py").write_text(code)
    with run_server("pywsgi", [sys.executable, "app.py"], port, tmp_path) as server:
        with urllib.request.urlopen(server.http_url + "/", timeout=5) as response:
            assert response.read() == b"plain HTTP, as before\n"
        with connect(server.url + "/echo") as client:
            client.send("text")
            assert client.recv(timeout=5) == "text"
