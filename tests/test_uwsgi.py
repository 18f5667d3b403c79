"""uWSGI in gevent mode: reload and stop drain every WebSocket with 1001 (real uWSGI processes).

The echo, close and log checks are uWSGI's row in tests/test_servers.py.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.conftest import require_binary
from tests.servers import Server, serve, uwsgi_binary
from tests.test_drain import expect_going_away, open_clients, wait_for
from tests.wire import RawClient

N_CLIENTS = 10


@pytest.fixture(autouse=True)
def _uwsgi_installed() -> None:
    if uwsgi_binary() is None:
        require_binary("uwsgi")


def worker_pids(server: Server) -> list[int]:
    pids = []
    for line in server.log().splitlines():
        if line.startswith("spawned uWSGI worker") or "Respawned uWSGI worker" in line:
            pids.append(int(line.split("pid: ")[1].split(",")[0].rstrip(")")))
    return pids


def echo_works(server: Server) -> bool:
    with connect(server.url + "/echo", open_timeout=5) as ws:
        ws.send("again")
        return ws.recv() == "again"


@pytest.fixture()
def uwsgi_server(tmp_path: Path) -> Iterator[Server]:
    trigger = tmp_path / "reload-trigger"
    trigger.touch()
    with serve("uwsgi", "tests.server_apps:app", ["--touch-reload", str(trigger)]) as srv:
        srv.extra["trigger"] = trigger
        yield srv


def drain_and_check(server: Server, clients: list[RawClient]) -> None:
    for client in clients:
        expect_going_away(client)  # "draining" (on_drain), then 1001, then only FIN


@pytest.mark.parametrize("how", ["SIGHUP", "touch-reload"])
def test_reload_drains_every_socket_then_new_worker_serves(uwsgi_server: Server, how: str) -> None:
    clients = open_clients(uwsgi_server, N_CLIENTS)
    (old,) = worker_pids(uwsgi_server)
    if how == "SIGHUP":
        uwsgi_server.process.send_signal(signal.SIGHUP)
    else:
        trigger = uwsgi_server.extra["trigger"]
        assert isinstance(trigger, Path)
        mtime = time.time() + 5
        os.utime(trigger, (mtime, mtime))
    drain_and_check(uwsgi_server, clients)
    wait_for(lambda: len(worker_pids(uwsgi_server)) == 2, timeout=15)
    assert echo_works(uwsgi_server)
    log = uwsgi_server.log()
    assert f"closing {N_CLIENTS} WebSocket(s) with 1001" in log
    assert "Traceback" not in log and "still open" not in log
    assert old not in worker_pids(uwsgi_server)[1:]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_drains_every_socket(uwsgi_server: Server, sig: int) -> None:
    clients = open_clients(uwsgi_server, N_CLIENTS)
    uwsgi_server.process.send_signal(sig)
    drain_and_check(uwsgi_server, clients)
    uwsgi_server.process.wait(15)
    log = uwsgi_server.log()
    assert f"closing {N_CLIENTS} WebSocket(s) with 1001" in log
    assert "Traceback" not in log and "still open" not in log


def test_other_modes_get_501_naming_gevent() -> None:
    with serve("uwsgi-threads", "tests.server_apps:app") as srv:
        client = RawClient(srv.port)
        assert client.status == 501
        assert b"run it in gevent mode (--gevent N" in client.body()
        client.close()
        with urllib.request.urlopen(srv.http_url + "/", timeout=5) as response:
            assert response.status == 200
