"""gunicorn ``-k gevent`` with wsgiws's hook (./gunicorn.conf.py): a WebSocket leaves
gunicorn's request, and its connection slot, once its 101 is out.

Real gunicorn processes; what is asserted is on the wire, in gunicorn's log, and in the
worker's own count of gunicorn's request objects.
"""

from __future__ import annotations

import contextlib
import struct
import time
import urllib.request
from collections.abc import Iterator

import pytest
from websockets.sync.client import connect

from tests.servers import Server, serve
from tests.test_servers import wait_for_log
from tests.wire import RawClient
from wsgiws.limits import RETRY_AFTER

WORKER_CONNECTIONS = 4


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    args = ["--worker-connections", str(WORKER_CONNECTIONS)]
    with serve("gunicorn-gevent", "tests.server_apps:outer", args) as srv:
        yield srv


def live_requests(server: Server) -> int:
    """gunicorn Request objects alive in the worker (the /live request's own included)."""
    with urllib.request.urlopen(server.http_url + "/live", timeout=5) as response:
        return int(response.read())


def test_open_websockets_hold_no_gunicorn_request_and_no_pool_slot(server: Server) -> None:
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(connect(server.url + "/echo")) for _ in range(WORKER_CONNECTIONS)
        ]
        for i, ws in enumerate(sockets):
            ws.send(f"m{i}")
            assert ws.recv(timeout=5) == f"m{i}"
        # All slots of gunicorn's pool would be taken by the WebSockets: an HTTP request
        # would wait for one. Its own Request is the only one alive.
        assert live_requests(server) == 1
        for i, ws in enumerate(sockets):  # and the WebSockets still work
            ws.send(f"again {i}")
            assert ws.recv(timeout=5) == f"again {i}"


def open_fds(server: Server) -> int:
    with urllib.request.urlopen(server.http_url + "/fds", timeout=5) as response:
        return int(response.read())


def test_a_closed_websocket_leaves_no_file_descriptor_behind(server: Server) -> None:
    """Its connection goes on on gunicorn's own socket object, whose close gunicorn
    makes once its request ends: the descriptor must close when the WebSocket ends, both
    when gunicorn's close comes first and when the WebSocket ends first."""
    before = open_fds(server)
    for i in range(20):
        client = RawClient(server.port, path="/echo")
        assert client.accepted_properly()
        if i % 2 == 0:  # a message, then the closing handshake
            client.send_frame(0x1, b"x")
            assert client.read_frame() == (0x1, True, b"x")
            client.send_frame(0x8, struct.pack("!H", 1000))
            assert client.read_close() == (1000, "")
            assert client.rest_until_eof() == b""
        client.close()  # (odd: TCP ends at once, likely before gunicorn's greenlet ran again)
    deadline = time.monotonic() + 10
    while (now := open_fds(server)) != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert now == before


def test_past_worker_connections_websockets_get_503_then_a_place_when_one_closes(
    server: Server,
) -> None:
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(connect(server.url + "/echo")) for _ in range(WORKER_CONNECTIONS)
        ]
        refused = RawClient(server.port)
        assert refused.status == 503
        assert refused.headers.get("retry-after") == str(RETRY_AFTER)
        assert b"max_connections=4" in refused.body()
        refused.close()
        sockets.pop().close()  # a place frees once its handler has finished
        deadline = time.monotonic() + 10
        while True:
            client = RawClient(server.port)
            if client.status == 101 or time.monotonic() > deadline:
                break
            client.close()
            time.sleep(0.05)
        assert client.accepted_properly()
        client.send_frame(0x1, b"in")
        assert client.read_frame() == (0x1, True, b"in")
        client.close()


def test_a_refusal_before_the_101_is_gunicorns_http_answer(server: Server) -> None:
    refused = RawClient(server.port, "/refuse")
    assert refused.status == 403
    assert b"not for you" in refused.body()
    refused.close()
    failed = RawClient(server.port, "/fail-before-accepting")
    assert failed.status == 500
    failed.close()
    log = wait_for_log(server, "the handler failed before accepting")
    assert "RuntimeError: the handler failed before accepting" in log
    # Nothing of them stays behind (the runner greenlet that served them keeps nothing).
    # A kept-alive HTTP connection's parser holds its last request until gunicorn has
    # read the client's EOF: wait for that.
    deadline = time.monotonic() + 10
    while live_requests(server) != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live_requests(server) == 1


def test_frames_sent_with_the_request_are_not_lost(server: Server) -> None:
    """Bytes gunicorn read past the request headers move with the connection."""
    first = RawClient.frame(0x1, b"sent with the request")
    client = RawClient(server.port, "/echo", extra=first)
    assert client.accepted_properly()
    assert client.read_frame() == (0x1, True, b"sent with the request")
    client.close()


def test_the_handler_runs_in_the_requests_context(server: Server) -> None:
    """contextvars an app around the middleware set (a tracer's, a logger's) go along."""
    with connect(server.url + "/context?tag-42") as ws:
        assert ws.recv(timeout=5) == "tag-42"


def test_the_access_line_is_written_with_101(server: Server) -> None:
    with connect(server.url + "/echo?access") as ws:
        ws.send("x")
        assert ws.recv(timeout=5) == "x"
        # written at the 101, while the WebSocket is still open
        assert '"GET /echo?access HTTP/1.1" 101' in wait_for_log(server, "/echo?access")


def test_without_the_hook_websockets_stay_in_gunicorns_request(tmp_path: object) -> None:
    """No wsgiws.gunicorn hook (a config of one's own without it): nothing changes."""
    import pathlib

    assert isinstance(tmp_path, pathlib.Path)
    (tmp_path / "gunicorn.conf.py").write_text("worker_class = 'gevent'\n")
    args = ["-c", str(tmp_path / "gunicorn.conf.py")]
    with (
        serve("gunicorn-gevent", "tests.server_apps:outer", args) as srv,
        connect(srv.url + "/echo") as ws,
    ):
        ws.send("x")
        assert ws.recv(timeout=5) == "x"
        assert live_requests(srv) == 2  # the WebSocket's and /live's own
