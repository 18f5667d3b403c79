"""`gunicorn -c python:wsgiws.gunicorn_conf`: the recommended settings and the drain hook
from the installed package, with the address and worker count gunicorn users set."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from websockets.sync.client import connect

from tests.servers import ROOT, Server, free_port, wait_for_port
from tests.wire import RawClient


@contextmanager
def gunicorn(args: Sequence[str], port: int, env: dict[str, str] | None = None) -> Iterator[Server]:
    """gunicorn started outside the checkout (so no ./gunicorn.conf.py is picked up)."""
    log = Path(tempfile.mkstemp(prefix="wsgiws-gunicorn-conf-", suffix=".log")[1])
    workdir = tempfile.mkdtemp(prefix="wsgiws-gunicorn-conf-")
    command = [sys.executable, "-m", "gunicorn", "-c", "python:wsgiws.gunicorn_conf", *args]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*command, "examples.echo:app"],
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        )
    server = Server("gunicorn-conf", port, process, log)
    try:
        wait_for_port(port, process, log)
        yield server
    finally:
        server.stop()
        log.unlink(missing_ok=True)
        os.rmdir(workdir)


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
