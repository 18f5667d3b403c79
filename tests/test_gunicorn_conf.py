"""`gunicorn -c python:wsgiws.gunicorn_conf`: the recommended settings and the drain hook
from the installed package, with the address and worker count gunicorn users set."""

from __future__ import annotations

import signal
import struct
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from websockets.sync.client import connect

from tests.servers import Server, free_port, run_server
from tests.wire import RawClient


@contextmanager
def gunicorn(args: Sequence[str], port: int, env: dict[str, str] | None = None) -> Iterator[Server]:
    """gunicorn started outside the checkout (so no ./gunicorn.conf.py is picked up)."""
    command = [sys.executable, "-m", "gunicorn", "-c", "python:wsgiws.gunicorn_conf", *args]
    with tempfile.TemporaryDirectory(prefix="wsgiws-gunicorn-conf-") as workdir:
        command.append("examples.echo:app")
        with run_server("gunicorn-conf", command, port, Path(workdir), env) as server:
            yield server


def check_served(server: Server, workers: int) -> None:
    with connect(server.url + "/echo") as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"
    log = server.log()
    assert "Using worker: gevent" in log
    assert f"Listening at: http://127.0.0.1:{server.port}" in log
    assert log.count("Booting worker") == workers


def test_bind_and_workers_from_the_command_line() -> None:
    port = free_port()
    with gunicorn(["-b", f"127.0.0.1:{port}", "-w", "2"], port) as server:
        check_served(server, workers=2)


def test_bind_and_workers_from_gunicorn_cmd_args() -> None:
    port = free_port()
    env = {"GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port} --workers 2"}
    with gunicorn([], port, env) as server:
        check_served(server, workers=2)


def test_the_drain_hook_is_installed() -> None:
    """SIGTERM: the open WebSocket gets 1001 and a completed closing handshake."""
    port = free_port()
    with gunicorn(["-b", f"127.0.0.1:{port}"], port) as server:
        client = RawClient(port)
        assert client.accepted_properly()
        server.process.send_signal(signal.SIGTERM)
        client.sock.settimeout(10)
        code, _ = client.read_close()
        assert code == 1001
        client.send_frame(8, struct.pack("!H", 1001))
        assert client.rest_until_eof() == b""
        client.close()
        assert server.process.wait(15) == 0
