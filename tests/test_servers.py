"""The same app and checks under every server users deploy on, asserted on the wire."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest
import websocket as websocket_client  # the websocket-client package
from websockets.sync.client import connect

from tests.conftest import require_binary, require_node_package
from tests.servers import Server, serve, uwsgi_binary
from tests.wire import RawClient, assert_bye_is_clean

#: Every server that can hijack its socket; see docs/deploying.md.
MATRIX = [
    "gunicorn-gevent",
    "gunicorn-gevent_pywsgi",
    "gunicorn-gthread",
    "gunicorn-sync",
    "pywsgi",
    "pywsgi-monkey",
    "werkzeug",
    "uwsgi",
]


@pytest.fixture(scope="module", params=MATRIX)
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    if request.param == "uwsgi" and uwsgi_binary() is None:
        require_binary("uwsgi")
    args = {
        "gunicorn-gthread": ["--threads", "4"],
        # A sync worker serves one connection at a time: a browser's idle spare connection
        # holds it until gunicorn's timeout (README, Deploying). Two workers, as a sync
        # deployment runs, keep the matrix's browser row about WebSockets.
        "gunicorn-sync": ["--workers", "2"],
    }.get(request.param, [])
    with serve(request.param, "tests.server_apps:app", args) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[int]:
    """A headless Chromium per server (its DevTools port); each page is a new tab.

    Not one for all servers: a Chromium that had already loaded pages under other
    servers was seen to keep a spare idle connection to the next one, which holds
    gunicorn's one-connection sync worker and leaves the WebSocket waiting.
    """
    from tests.browser import chromium

    with chromium() as port:
        yield port


# Third-party clients, each doing an echo round trip and a client-initiated clean close
# against /echo and checking what it saw. One entry per client; each runs on every server.


def websocket_client_echo(server: Server, request: pytest.FixtureRequest) -> None:
    """websocket-client keeps the last Connection header: a 101 with two fails here."""
    ws = websocket_client.create_connection(server.url + "/echo", timeout=5)
    try:
        ws.send("héllo")
        assert ws.recv() == "héllo"
        ws.send_binary(b"\x00\xff")
        assert ws.recv() == b"\x00\xff"
        ws.send_close(1000, b"bye")
        opcode, frame = ws.recv_data_frame(control_frame=True)
        assert opcode == websocket_client.ABNF.OPCODE_CLOSE
        assert struct.unpack("!H", frame.data[:2])[0] == 1000
        assert ws.sock is not None and ws.sock.recv(1) == b""  # then FIN, nothing else
    finally:
        ws.shutdown()


def websockets_sync_echo(server: Server, request: pytest.FixtureRequest) -> None:
    with connect(server.url + "/echo", open_timeout=5, close_timeout=5) as ws:
        ws.send("héllo")
        assert ws.recv(timeout=5) == "héllo"
        ws.send(b"\x00\xff")
        assert ws.recv(timeout=5) == b"\x00\xff"
    close_rcvd = ws.protocol.close_rcvd  # the server answered our close frame
    assert close_rcvd is not None and close_rcvd.code == 1000


NODE_WS_CLIENT = """
const WebSocket = require("ws");
const ws = new WebSocket(process.argv[1]);
const seen = [];
ws.on("open", () => ws.send("héllo"));
ws.on("message", (data, isBinary) => {
  seen.push(isBinary ? "binary" : data.toString());
  if (seen.length === 1) ws.send(Buffer.from([0, 255]));
  else ws.close(1000, "bye");
});
ws.on("error", (err) => seen.push("error " + err.message));
ws.on("close", (code) => {
  console.log(JSON.stringify({seen, code, ended: ws._socket === null || ws._socket.destroyed}));
});
"""


def node_ws_echo(server: Server, request: pytest.FixtureRequest) -> None:
    """Node's ``ws`` (npm), the most used server-side JavaScript client."""
    modules = require_node_package("ws")
    done = subprocess.run(
        ["node", "-e", NODE_WS_CLIENT, server.url + "/echo"],
        env={**os.environ, "NODE_PATH": str(modules)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"seen": ["héllo", "binary"], "code": 1000, "ended": True}


def chromium_echo(server: Server, request: pytest.FixtureRequest) -> None:
    from tests.browser import page_text

    port = request.getfixturevalue("browser")
    text = page_text(server.http_url + "/browser", "out", "closed", devtools_port=port)
    expected = "open\necho: hello from the browser\nclosed 1000 clean=true\n"
    assert text == expected, server.log()[-3000:]


THIRD_PARTY_CLIENTS: dict[str, Callable[[Server, pytest.FixtureRequest], None]] = {
    "websocket-client": websocket_client_echo,
    "websockets": websockets_sync_echo,
    "node-ws": node_ws_echo,
    "chromium": chromium_echo,
}


@pytest.mark.parametrize("client", THIRD_PARTY_CLIENTS)
def test_third_party_client_echo_and_clean_close(
    server: Server, client: str, request: pytest.FixtureRequest
) -> None:
    THIRD_PARTY_CLIENTS[client](server, request)
    assert "Traceback" not in server.log()


def test_101_has_one_connection_header(server: Server) -> None:
    """RFC 6455 4.2.2: Connection: Upgrade; never a second one (Werkzeug's "close")."""
    client = RawClient(server.port)
    assert client.accepted_properly()
    assert client.headers["connection"].lower() == "upgrade"  # repeats would be joined by ", "
    client.close()


def wait_for_log(server: Server, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and text not in server.log():
        time.sleep(0.05)
    return server.log()


def test_echo_and_large_messages(server: Server) -> None:
    with connect(server.url + "/echo", max_size=None) as ws:
        ws.send("héllo")
        assert ws.recv() == "héllo"
        ws.send(b"\x00\xff")
        assert ws.recv() == b"\x00\xff"
        big = bytes(range(256)) * 8192  # 2 MiB
        ws.send(big)
        assert ws.recv() == big
    assert ws.close_code == 1000


def test_subprotocol(server: Server) -> None:
    with connect(server.url + "/proto", subprotocols=["superchat", "chat"]) as ws:
        assert ws.subprotocol == "chat"
        ws.send("x")
        assert ws.recv() == "x"


def test_client_close_then_nothing_but_fin(server: Server) -> None:
    # A frame right behind the handshake, in the server's buffer; uWSGI's parser keeps those
    # bytes out of reach (wsgiws/servers/uwsgi.py, tests/test_uwsgi.py): send it after the 101.
    early = server.kind != "uwsgi"
    client = RawClient(server.port, extra=RawClient.frame(1, b"early") if early else b"")
    assert client.accepted_properly()
    if not early:
        client.send_frame(1, b"early")
    assert client.read_frame() == (1, True, b"early")
    client.send_frame(8, struct.pack("!H", 1000) + b"bye")
    assert client.read_close() == (1000, "")
    assert client.rest_until_eof() == b""  # not one stray byte (no "HTTP/1.1 500"), then FIN
    client.close()


def test_server_close_then_nothing_but_fin(server: Server) -> None:
    assert_bye_is_clean(RawClient(server.port, path="/bye"))


def test_tcp_closes_and_server_keeps_serving(server: Server) -> None:
    for _ in range(3):  # the sync worker must be free again after each close
        with connect(server.url + "/echo", open_timeout=5) as ws:
            ws.send("again")
            assert ws.recv() == "again"
    with urllib.request.urlopen(server.http_url + "/", timeout=5) as response:
        assert response.status == 200


def test_logs_show_101_and_no_error(server: Server) -> None:
    with connect(server.url + "/echo") as ws:
        ws.send("x")
        ws.recv()
    log = wait_for_log(server, " 101 ")
    assert "GET /echo HTTP/1.1" in log and " 101 " in log
    assert "Traceback" not in log
    assert " 500 " not in log and "Error" not in log.replace("WARNING", "")


def test_sync_worker_warns_about_timeout() -> None:
    with serve("gunicorn-sync", "tests.server_apps:app", ["--timeout", "7"]) as srv:
        log = wait_for_log(srv, "sync worker")
        assert "sync worker" in log and "7" in log.split("sync worker", 1)[1]
        assert "-k gevent" in log


def test_gthread_threads_bound_concurrent_sockets() -> None:
    """With --threads 2, two WebSockets are served; a third waits for a free thread."""
    with serve("gunicorn-gthread", "tests.server_apps:app", ["--threads", "2"]) as srv:
        stack = contextlib.ExitStack()
        first = stack.enter_context(connect(srv.url + "/echo"))
        second = stack.enter_context(connect(srv.url + "/echo"))
        third = socket.create_connection(("127.0.0.1", srv.port), timeout=1.0)
        third.sendall(
            b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        with pytest.raises(TimeoutError):
            third.recv(100)  # no thread for it
        first.close()  # frees a thread: the third is answered
        third.settimeout(5.0)
        assert third.recv(100).startswith(b"HTTP/1.1 101")
        second.send("still")
        assert second.recv() == "still"
        stack.close()
        third.close()


@pytest.mark.parametrize("kind", ["waitress"])
def test_server_without_hijack_fails_with_501_naming_it(kind: str) -> None:
    pytest.importorskip(kind)
    with serve(kind, "tests.server_apps:app") as srv:
        start = time.monotonic()
        client = RawClient(srv.port)
        assert client.status == 501
        body = client.body().decode()
        assert body.startswith("waitress does not give WSGI applications access to the client")
        assert "gunicorn" in body
        assert time.monotonic() - start < 5  # an answer, not a hang
        client.close()
        with urllib.request.urlopen(srv.http_url + "/", timeout=5) as response:
            assert response.status == 200  # plain requests still work


def test_flask_run_serves_websocket_client(request: pytest.FixtureRequest) -> None:
    """`flask run` (Werkzeug) with the Flask quick start's example and websocket-client."""
    with serve("flask-run", "examples.flask_echo:app") as srv:
        websocket_client_echo(srv, request)
        assert " 101 " in wait_for_log(srv, " 101 ")
        assert "Traceback" not in srv.log()


def test_example_page_opens_its_socket() -> None:
    """examples/echo.py's own page, in a real browser."""
    from tests.browser import page_text

    with serve("gunicorn-gevent", "tests.server_apps:app") as srv:
        assert page_text(srv.http_url + "/", "log", "open").startswith("open (extensions:")
        assert "Traceback" not in srv.log()


def test_uwsgi_environ_is_named_in_the_error() -> None:
    """An environ from uWSGI, outside its process (no ``uwsgi`` module), is named by its keys."""
    from wsgiws.exceptions import HijackError
    from wsgiws.servers import find_socket

    with pytest.raises(HijackError, match=r"^uWSGI does not give"):
        find_socket({"uwsgi.version": b"2.0.28", "wsgi.input": object()})
    with pytest.raises(HijackError, match=r"^this WSGI server does not give"):
        find_socket({})


@pytest.mark.parametrize("kind", ["pywsgi", "gunicorn-gevent"])
def test_bottle_app_served_without_the_middleware_says_so(kind: str) -> None:
    """Not a bare 500: the answer and the server log both name the missing middleware."""
    with serve(kind, "tests.server_apps:bottle_unwrapped") as srv:
        client = RawClient(srv.port)
        assert client.status == 500
        body = client.body().decode()
        assert "without WebSocketMiddleware" in body and "WebSocketMiddleware(bottle_app)" in body
        client.close()
        log = wait_for_log(srv, "without WebSocketMiddleware")
        assert "WebSocket route /echo cannot take the connection" in log


def test_gunicorn_is_told_an_upgraded_request_is_its_connections_last() -> None:
    # Else, once the app returns, gunicorn parses a next request from the closed socket.
    from wsgiws.servers import ENVIRON_START_RESPONSE, gunicorn

    class Response:
        must_close = False

        def start_response(self, status: str, headers: list[tuple[str, str]]) -> None:
            pass

        def force_close(self) -> None:
            self.must_close = True

    response = Response()
    a, b = socket.socketpair()
    with a, b:
        environ = {"gunicorn.socket": a, ENVIRON_START_RESPONSE: response.start_response}
        assert gunicorn.find(environ) is not None
    assert response.must_close


@pytest.mark.parametrize("chunked", [False, True], ids=["gunicorn-27", "chunked-101"])
def test_on_gunicorn_the_101_head_is_ours_and_gunicorn_writes_nothing_after_it(
    chunked: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gunicorn's own Response, as its workers drive it: start_response, then close() once
    the app returned. "chunked-101" is how gunicorn 22 and 23 frame a 101 (as chunked,
    ended by a last chunk on close): nothing of it may reach a WebSocket's stream."""
    from gunicorn.config import Config
    from gunicorn.http.wsgi import Response

    from wsgiws.servers import ENVIRON_START_RESPONSE, gunicorn

    if chunked:
        monkeypatch.setattr(Response, "is_chunked", lambda self: True)

    class Request:
        version = (1, 1)
        method = "GET"

        def should_close(self) -> bool:
            return False

    a, b = socket.socketpair()
    with a, b:
        response = Response(Request(), a, Config())
        environ = {"gunicorn.socket": a, ENVIRON_START_RESPONSE: response.start_response}
        hijack = gunicorn.find(environ)
        assert hijack is not None and hijack.send_head is not None
        headers = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", "x"),
        ]
        a.sendall(hijack.send_head("101 Switching Protocols", headers))  # (the connection's)
        response.close()  # what gunicorn does once the app returned
        a.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := b.recv(4096):
            received += chunk
    assert received == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: x\r\n\r\n"
    )
    assert response.status == "101 Switching Protocols"  # for gunicorn's access line


def test_on_gunicorn_without_a_response_to_drive_the_101_goes_through_start_response() -> None:
    from wsgiws.servers import ENVIRON_START_RESPONSE, gunicorn

    a, b = socket.socketpair()
    with a, b:
        environ = {"gunicorn.socket": a, ENVIRON_START_RESPONSE: lambda *args: None}
        hijack = gunicorn.find(environ)
        assert hijack is not None and hijack.send_head is None
