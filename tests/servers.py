"""Start real servers (gevent.pywsgi, gunicorn, Werkzeug, waitress) on 127.0.0.1 for tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PYWSGI_RUNNER = """
import sys, importlib
if sys.argv[3:4] == ["--monkey"]:
    from gevent import monkey
    monkey.patch_all()
from gevent.pywsgi import WSGIServer
module, _, name = sys.argv[1].partition(":")
app = getattr(importlib.import_module(module), name)
server = WSGIServer(("127.0.0.1", int(sys.argv[2])), app)
server.serve_forever()
"""


WERKZEUG_RUNNER = """
import sys, importlib
from werkzeug.serving import run_simple
module, _, name = sys.argv[1].partition(":")
app = getattr(importlib.import_module(module), name)
run_simple("127.0.0.1", int(sys.argv[2]), app, threaded=True)  # what `flask run` does
"""

WAITRESS_RUNNER = """
import sys, importlib
import waitress
module, _, name = sys.argv[1].partition(":")
app = getattr(importlib.import_module(module), name)
waitress.serve(app, host="127.0.0.1", port=int(sys.argv[2]))
"""


def uwsgi_binary() -> str | None:
    """uWSGI's program: beside this Python (``pip install uwsgi``), else on PATH."""
    beside = Path(sys.executable).with_name("uwsgi")
    return str(beside) if beside.exists() else shutil.which("uwsgi")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    kind: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def wait_for_port(
    port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 20.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port}:\n{log.read_text()}")


def server_command(kind: str, app: str, port: int, args: Sequence[str] = ()) -> list[str]:
    """The command that serves WSGI ``app`` ("module:name") with server ``kind``."""
    if kind == "pywsgi":
        return [sys.executable, "-c", PYWSGI_RUNNER, app, str(port), *args]
    if kind == "pywsgi-monkey":
        return [sys.executable, "-c", PYWSGI_RUNNER, app, str(port), "--monkey", *args]
    if kind == "werkzeug":
        return [sys.executable, "-c", WERKZEUG_RUNNER, app, str(port), *args]
    if kind == "flask-run":  # the Flask CLI, as a Flask user starts a dev server
        flask = [sys.executable, "-m", "flask", "--app", app, "run", "--port", str(port)]
        return [*flask, *args]
    if kind == "waitress":
        return [sys.executable, "-c", WAITRESS_RUNNER, app, str(port), *args]
    if kind in ("uwsgi", "uwsgi-threads"):  # one worker; SIGTERM stops it (as in uWSGI 3.0)
        mode = ["--gevent", "100"] if kind == "uwsgi" else ["--threads", "4"]
        return [
            uwsgi_binary() or "uwsgi", "--http-socket", f"127.0.0.1:{port}", *mode,
            "--master", "--workers", "1", "--home", sys.prefix, "--module", app, "--need-app",
            "--die-on-term", "--worker-reload-mercy", "7",
            "--log-format", '"%(method) %(uri) %(proto)" %(status) %(size)', *args,
        ]  # fmt: skip
    if kind == "gunicorn-config":  # ``app`` is a gunicorn.conf.py naming the app and worker
        return [
            sys.executable, "-m", "gunicorn", "-c", app, "-b", f"127.0.0.1:{port}",
            "--graceful-timeout", "5", *args,
        ]  # fmt: skip
    if kind.startswith("gunicorn"):
        worker = kind.partition("-")[2] or "gevent"
        return [
            sys.executable, "-m", "gunicorn", "-k", worker, "-b", f"127.0.0.1:{port}",
            "-w", "1", "--access-logfile", "-", "--graceful-timeout", "5", *args, app,
        ]  # fmt: skip
    raise ValueError(f"unknown server kind {kind!r}")


@contextmanager
def serve(
    kind: str,
    app: str,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> Iterator[Server]:
    """Run ``app`` under a real server process, started in ``cwd``, for the block's duration."""
    port = free_port()
    with run_server(kind, server_command(kind, app, port, args), port, cwd=cwd, env=env) as server:
        yield server


@contextmanager
def run_server(
    kind: str,
    command: Sequence[str],
    port: int,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """Run ``command``, a server that listens on ``port``, for the duration of the block."""
    log = Path(tempfile.mkstemp(prefix=f"wsgiws-{kind}-", suffix=".log")[1])
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=full_env
        )
    server = Server(kind, port, process, log)
    try:
        wait_for_port(port, process, log)
        yield server
    finally:
        server.stop()
        log.unlink(missing_ok=True)
