"""Deploys and restarts: every open WebSocket gets 1001 and a completed closing handshake.

Real gunicorn processes (they load the top-level gunicorn.conf.py, which wires the
drain); clients are raw sockets, so a reset instead of a FIN fails the test.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import time

import pytest
from websockets.sync.client import connect

from tests.servers import Server, serve
from tests.wire import RawClient

N_CLIENTS = 20
DRAIN_TIMES: dict[str, float] = {}


def open_clients(server: Server, n: int = N_CLIENTS) -> list[RawClient]:
    clients = []
    for i in range(n):
        client = RawClient(server.port)
        assert client.accepted_properly()
        client.send_frame(1, f"hi {i}".encode())
        assert client.read_frame() == (1, True, f"hi {i}".encode())
        clients.append(client)
    return clients


def expect_going_away(client: RawClient) -> None:
    """The drain's last message, then 1001, then (after our reply) FIN and nothing else."""
    client.sock.settimeout(10)
    assert client.read_frame() == (1, True, b"draining")  # on_drain told the handlers
    code, reason = client.read_close()
    assert code == 1001, (code, reason)
    assert reason == "server restarting"
    client.send_frame(8, struct.pack("!H", 1001))
    assert client.rest_until_eof() == b""  # a reset would raise ConnectionResetError
    client.close()


def worker_pids(server: Server) -> set[int]:
    pids = set()
    for line in server.log().splitlines():
        if "Booting worker with pid:" in line:
            pids.add(int(line.rsplit(":", 1)[1]))
    return pids


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.fixture(params=["gunicorn-gevent", "gunicorn-gthread"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def worker_args(kind: str) -> list[str]:
    return ["--threads", str(N_CLIENTS + 4)] if kind == "gunicorn-gthread" else []


@pytest.mark.parametrize(
    ("kind", "preload"),
    [
        ("gunicorn-gevent", False),
        ("gunicorn-gevent", True),
        ("gunicorn-gevent_pywsgi", False),
        ("gunicorn-gthread", False),
    ],
)
def test_sigterm_closes_every_socket_with_1001(kind: str, preload: bool) -> None:
    args = worker_args(kind) + (["--preload"] if preload else [])
    with serve(kind, "tests.server_apps:app", args) as server:
        clients = open_clients(server)
        start = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        for client in clients:
            expect_going_away(client)
        server.process.wait(15)
        elapsed = time.monotonic() - start
        DRAIN_TIMES[f"SIGTERM {kind}{' --preload' if preload else ''}"] = elapsed
        log = server.log()
        assert server.process.returncode == 0
        assert elapsed < 5, log  # within graceful_timeout (5 s in tests/servers.py)
        assert "Traceback" not in log
        assert "graceful timeout" not in log  # nothing had to be killed
        assert f"closing {N_CLIENTS} WebSocket(s) with 1001" in log
        # (The "all WebSockets closed" line may lose the race with a gthread worker's exit:
        # the clients' own 1001s above are the proof.)
        assert "still open" not in log
        print(f"\ndrain: SIGTERM {kind} preload={preload}: {N_CLIENTS} sockets, {elapsed:.2f} s")


def test_sigterm_on_the_sync_worker() -> None:
    """The sync worker holds one WebSocket at a time; it is drained too."""
    with serve("gunicorn-sync", "tests.server_apps:app") as server:
        (client,) = open_clients(server, 1)
        server.process.send_signal(signal.SIGTERM)
        expect_going_away(client)
        assert server.process.wait(10) == 0


def test_sighup_reload_drains_old_worker_new_one_serves(kind: str) -> None:
    with serve(kind, "tests.server_apps:app", worker_args(kind)) as server:
        wait_for(lambda: worker_pids(server))
        old = worker_pids(server)
        clients = open_clients(server)
        start = time.monotonic()
        server.process.send_signal(signal.SIGHUP)
        for client in clients:
            expect_going_away(client)
        for pid in old:  # the old worker exits
            wait_for(lambda pid=pid: not os.path.exists(f"/proc/{pid}"), 10)  # type: ignore[misc]
        elapsed = time.monotonic() - start
        DRAIN_TIMES[f"SIGHUP {kind}"] = elapsed
        print(f"\ndrain: SIGHUP {kind}: {N_CLIENTS} sockets, old worker gone in {elapsed:.2f} s")
        assert worker_pids(server) - old  # a new worker booted ...
        with connect(server.url + "/echo", open_timeout=5) as ws:  # ... and serves
            ws.send("after reload")
            assert ws.recv() == "after reload"
        assert server.process.poll() is None  # the master stays


def test_max_requests_recycling_drains(kind: str) -> None:
    args = [*worker_args(kind), "--max-requests", "3"]
    with serve(kind, "tests.server_apps:app", args) as server:
        wait_for(lambda: worker_pids(server))
        old = worker_pids(server)
        clients = open_clients(server, 2)  # requests 1 and 2 (counted when they start)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as plain:
            plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert plain.recv(100).startswith(b"HTTP/1.1 200")  # request 3: recycle
        for client in clients:
            expect_going_away(client)
        wait_for(lambda: worker_pids(server) - old)
        with connect(server.url + "/echo", open_timeout=5) as ws:
            ws.send("new worker")
            assert ws.recv() == "new worker"


def test_upgrade_during_the_drain_gets_503() -> None:
    """A kept-alive connection asks for a WebSocket after SIGTERM: refused cleanly."""
    with serve("gunicorn-gevent", "tests.server_apps:app", ["--keep-alive", "5"]) as server:
        clients = open_clients(server, 1)
        keep = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        keep.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b"</html>" not in first:
            first += keep.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the drain has started (the watcher polls every 0.1 s)
        keep.sendall(
            b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        response = b""
        while chunk := keep.recv(1000):
            response += chunk
        assert response.startswith(b"HTTP/1.1 503"), response
        assert b"Retry-After: 1" in response
        assert response.endswith(b"server is restarting; reconnect\n")
        keep.close()
        expect_going_away(clients[0])
        assert server.process.wait(10) == 0


def test_websocket_outlives_timeout_on_async_and_gthread_workers(kind: str) -> None:
    with serve(kind, "tests.server_apps:app", ["--timeout", "1"]) as server:
        with connect(server.url + "/echo", open_timeout=5) as ws:
            for i in range(5):  # 3.5 s: several times the timeout
                ws.send(f"tick {i}")
                assert ws.recv() == f"tick {i}"
                time.sleep(0.7)
        assert "WORKER TIMEOUT" not in server.log()


def test_drain_time_summary() -> None:
    """Printed with -s; the numbers go into the notes."""
    for name, seconds in DRAIN_TIMES.items():
        print(f"{name}: {seconds:.2f} s")
