"""A real nginx, configured by examples/nginx.conf, in front of a real gunicorn."""

from __future__ import annotations

import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import require_binary
from tests.servers import ROOT, Server, free_port, serve, wait_for_port
from tests.wire import RawClient, assert_bye_is_clean


@dataclass
class Proxy:
    port: int
    backend: Server
    error_log: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


def render_config(port: int, upstream: int, tmp: Path) -> str:
    """examples/nginx.conf with test ports and paths; fails if the example changed shape."""
    text = (ROOT / "examples" / "nginx.conf").read_text()
    replacements = {
        "worker_processes auto;": "worker_processes 1;",
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{upstream};",
        "listen 8080;": f"listen 127.0.0.1:{port};",
        "access_log /var/log/nginx/wsgiws.access.log;": f"access_log {tmp}/access.log;",
        "\nhttp {": "\nhttp {\n"
        + "".join(
            f"    {name}_temp_path {tmp}/{name};\n"
            for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        ),
    }
    for old, new in replacements.items():
        assert old in text, f"examples/nginx.conf no longer contains {old!r}"
        text = text.replace(old, new, 1)
    return text


@pytest.fixture(scope="module")
def backend() -> Iterator[Server]:
    with serve("gunicorn-gevent", "tests.server_apps:app") as server:
        yield server


def run_nginx(backend: Server, tmp: Path) -> tuple[subprocess.Popen[bytes], Proxy]:
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(render_config(port, backend.port, tmp))
    error_log = tmp / "error.log"
    nginx = require_binary("nginx")
    process = subprocess.Popen(
        [nginx, "-p", str(tmp), "-c", str(conf), "-e", str(error_log),
         "-g", f"daemon off; pid {tmp}/nginx.pid;"],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "stderr.log", "wb"),  # noqa: SIM115
    )  # fmt: skip
    wait_for_port(port, process, tmp / "stderr.log")
    return process, Proxy(port, backend, error_log)


@pytest.fixture(scope="module")
def proxy(backend: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    process, proxy = run_nginx(backend, tmp_path_factory.mktemp("nginx"))
    try:
        yield proxy
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful nginx stop
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_echo_through_nginx(proxy: Proxy) -> None:
    with connect(proxy.url + "/echo", max_size=None) as ws:
        ws.send("via nginx")
        assert ws.recv() == "via nginx"
        big = bytes(range(256)) * 8192
        ws.send(big)
        assert ws.recv() == big
    with connect(proxy.url + "/proto", subprotocols=["superchat"]) as ws:
        assert ws.subprotocol == "superchat"
    assert ws.close_code == 1000


def test_clean_close_through_nginx(proxy: Proxy) -> None:
    client = RawClient(proxy.port, path="/bye")
    assert client.headers.get("server", "").startswith("nginx")
    assert_bye_is_clean(client)


def test_origin_check_behind_nginx(proxy: Proxy) -> None:
    own = f"http://127.0.0.1:{proxy.port}"
    with connect(proxy.url + "/origin", origin=own) as ws:  # type: ignore[arg-type]
        # The app sees the client's Host (port included) and the forwarded scheme.
        assert ws.recv() == f"http 127.0.0.1:{proxy.port}"
    with pytest.raises(InvalidStatus) as info:
        connect(proxy.url + "/echo", origin="http://evil.example")  # type: ignore[arg-type]
    assert info.value.response.status_code == 403


def test_drain_through_nginx(tmp_path: Path) -> None:
    """A deploy behind the proxy: the client still gets 1001 and a clean end."""
    with serve("gunicorn-gevent", "tests.server_apps:app") as server:
        process, proxy = run_nginx(server, tmp_path)
        try:
            client = RawClient(proxy.port)
            assert client.accepted_properly()
            server.process.send_signal(signal.SIGTERM)
            client.sock.settimeout(10)
            assert client.read_frame() == (1, True, b"draining")
            assert client.read_close() == (1001, "server restarting")
            client.send_frame(8, struct.pack("!H", 1001))
            assert client.rest_until_eof() == b""
            client.close()
            start = time.monotonic()
            assert server.process.wait(10) == 0
            assert time.monotonic() - start < 5
        finally:
            process.send_signal(signal.SIGQUIT)
            process.wait(10)
