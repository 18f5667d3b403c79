"""The same app and checks under every server users deploy on, asserted on the wire."""

from __future__ import annotations

import contextlib
import socket
import struct
import time
import urllib.request
from collections.abc import Iterator

import pytest
from websockets.sync.client import connect

from tests.conftest import require_binary
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
    args = ["--threads", "4"] if request.param == "gunicorn-gthread" else []
    with serve(request.param, "tests.server_apps:app", args) as srv:
        yield srv


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


@pytest.mark.parametrize("kind", ["werkzeug", "gunicorn-gevent"])
def test_real_browser_echo_and_clean_close(kind: str) -> None:
    """Werkzeug answers the 101 with "Connection: Upgrade, close": Chromium accepts it."""
    from tests.browser import page_text

    with serve(kind, "tests.server_apps:app") as srv:
        if kind == "werkzeug":
            client = RawClient(srv.port)
            assert client.headers["connection"] == "Upgrade, close"  # what the browser gets
            client.close()
        text = page_text(srv.http_url + "/browser", "out", "closed")
        assert text == "open\necho: hello from the browser\nclosed 1000 clean=true\n"
        # examples/echo.py's own page opens its socket too
        assert page_text(srv.http_url + "/", "log", "open").startswith("open (extensions:")
        log = srv.log()
        assert "Traceback" not in log


def test_uwsgi_environ_is_named_in_the_error() -> None:
    """An environ from uWSGI, outside its process (no ``uwsgi`` module), is named by its keys."""
    from wsgiws.exceptions import HijackError
    from wsgiws.servers import find_socket

    with pytest.raises(HijackError, match=r"^uWSGI does not give"):
        find_socket({"uwsgi.version": b"2.0.28", "wsgi.input": object()})
    with pytest.raises(HijackError, match=r"^this WSGI server does not give"):
        find_socket({})
