"""The command line (python -m wsgiws) against real servers on 127.0.0.1."""

from __future__ import annotations

import io
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

from tests.servers import ROOT, Server
from tests.test_client import websockets_server
from tests.wire import RawClient
from wsgiws.cli import main
from wsgiws.handshake import accept_key


def run_cli(*args: str, stdin: str = "", timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsgiws", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_one_shot_prints_replies_and_exits_0(echo_server: Server) -> None:
    result = run_cli(echo_server.url + "/echo", "-m", "hello", "-m", "wörld")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello\nwörld\n"
    assert "closed: 1000" in result.stderr


def test_one_shot_hex_and_binary(echo_server: Server) -> None:
    result = run_cli(echo_server.url + "/echo", "--hex", "-m", "00ff 10", "-q")
    assert (result.returncode, result.stdout, result.stderr) == (0, "00ff10\n", "")
    result = run_cli(echo_server.url + "/echo", "--binary", "-m", "hi", "-q")
    assert result.stdout == "[binary 2 bytes] 6869\n"
    result = run_cli(echo_server.url + "/echo", "--hex", "-m", "zz")
    assert result.returncode == 2


def test_rejected_handshake_exits_1_and_says_why(echo_server: Server) -> None:
    result = run_cli(echo_server.url + "/echo", "--origin", "http://evil.example", "-m", "x")
    assert result.returncode == 1
    assert "HTTP 403" in result.stderr
    assert "not allowed" in result.stderr
    result = run_cli("ws://127.0.0.1:1/", "-m", "x")
    assert result.returncode == 1
    assert "cannot connect" in result.stderr
    result = run_cli("http://example.com/")
    assert result.returncode == 1


def test_subprotocol_option(echo_server: Server) -> None:
    result = run_cli(echo_server.url + "/proto", "-p", "superchat", "-m", "s")
    assert result.returncode == 0
    assert "subprotocol superchat" in result.stderr


def test_exit_status_from_the_close_code() -> None:
    with websockets_server() as port:
        out, err = io.StringIO(), io.StringIO()
        status = main([f"ws://127.0.0.1:{port}/close/4002", "-n", "-1"], stdout=out, stderr=err)
        assert status == 3
        assert out.getvalue() == "bye\n"
        assert "closed: 4002 server says bye" in err.getvalue()
        out, err = io.StringIO(), io.StringIO()
        status = main([f"ws://127.0.0.1:{port}/close/1000", "-n", "-1"], stdout=out, stderr=err)
        assert status == 0
        assert "closed: 1000" in err.getvalue()


def test_timeout_waiting_for_replies_exits_4() -> None:
    with websockets_server() as port:
        err = io.StringIO()
        status = main(
            [f"ws://127.0.0.1:{port}/close/1000", "-n", "1", "--timeout", "0.5", "-m", "x"],
            stdout=io.StringIO(),
            stderr=err,
        )
        # The server sends "bye" then closes: one reply arrives, so no timeout here.
        assert status == 0
        status = main(
            [f"ws://127.0.0.1:{port}/", "-n", "2", "--timeout", "0.5", "-m", "x"],
            stdout=io.StringIO(),
            stderr=err,
        )
        assert status == 4
        assert "timed out" in err.getvalue()


def test_interactive_lines_then_eof(echo_server: Server) -> None:
    result = run_cli(echo_server.url + "/echo", stdin="one\ntwo\n")
    assert result.returncode == 0, result.stderr
    assert "closed: 1000" in result.stderr


def test_piped_lines_are_all_echoed_by_our_own_server(echo_server: Server) -> None:
    """`printf 'one\\ntwo\\n' | python -m wsgiws ws://.../echo`: "one", "two" and our close
    often reach the server in one read; its handler must still answer both before its
    close reply. 20 runs (stdin is not a terminal: the piped path), every one complete."""
    for run in range(20):
        status, out, err = main_in_a_plain_thread([echo_server.url + "/echo"], "one\ntwo\n")
        assert (run, status, out) == (run, 0, "one\ntwo\n"), err
        assert "closed: 1000" in err


def main_in_a_plain_thread(argv: list[str], stdin: str) -> tuple[int | None, str, str]:
    """``main()`` as ``python -m wsgiws`` runs it, in a thread without a gevent hub (one that
    earlier tests left in this thread would make the client's sockets green)."""
    out, err = io.StringIO(), io.StringIO()
    status: list[int] = []
    cli = threading.Thread(target=lambda: status.append(main(argv, io.StringIO(stdin), out, err)))
    cli.start()
    cli.join(60)
    return (status[0] if status else None), out.getvalue(), err.getvalue()


def test_interactive_ctrl_c_closes_properly(echo_server: Server) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "wsgiws", echo_server.url + "/echo"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("ping me\n")
    process.stdin.flush()
    assert process.stdout.readline() == "ping me\n"  # the echo, printed as it came
    time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert "closed: 1000" in stderr
    assert "Traceback" not in stderr


def replies_after_the_close_frame(listener: socket.socket, replies: list[bytes]) -> None:
    """A raw server: accept one client, read frames up to its close frame, only then send
    ``replies`` (text frames) and the answering close frame, then FIN."""
    conn, _ = listener.accept()
    with conn:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(4096)
        head, _, data = data.partition(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n\r\n"
        )
        while True:  # client frames: masked, short (< 126 bytes) in this test
            while len(data) < 2 or len(data) < 6 + (data[1] & 0x7F):
                data += conn.recv(4096)
            opcode, length = data[0] & 0x0F, data[1] & 0x7F
            data = data[6 + length :]
            if opcode == 8:
                break
        for reply in replies:
            conn.sendall(RawClient.frame(1, reply, mask=False))
        conn.sendall(RawClient.frame(8, struct.pack("!H", 1000), mask=False))
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(4096):
            pass


def test_stdin_eof_prints_replies_that_come_during_the_closing_handshake() -> None:
    """`printf 'one\\ntwo\\n' | python -m wsgiws ws://...`: EOF sends the close frame at
    once; replies the server sends before its own close frame are still printed."""
    for _ in range(3):
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            server = threading.Thread(
                target=replies_after_the_close_frame, args=(listener, [b"one", b"two"])
            )
            server.start()
            result = run_cli(
                f"ws://127.0.0.1:{listener.getsockname()[1]}/echo",
                "--no-compression",
                stdin="one\ntwo\n",
            )
            server.join(10)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "one\ntwo\n"
        assert "closed: 1000" in result.stderr
