"""wsgiws.client.connect against real servers on 127.0.0.1: this project's own
(gevent.pywsgi, gunicorn), an independent one (websockets), and raw sockets that
answer with exact bytes."""

from __future__ import annotations

import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.server import ServerConnection, serve

from tests.servers import Server
from wsgiws.client import connect
from wsgiws.deflate import PerMessageDeflate
from wsgiws.exceptions import (
    ConnectionClosedError,
    ConnectionClosedOK,
    HandshakeRejected,
    InvalidHandshake,
)
from wsgiws.handshake import accept_key

# ----------------------------------------------------------------- own server


def test_echo_against_own_server(echo_server: Server) -> None:
    with connect(echo_server.url + "/echo", max_message_size=None) as ws:
        assert ws.subprotocol is None
        ws.send("héllo")
        assert ws.receive() == "héllo"
        ws.send(b"\x00\xff")
        assert ws.receive() == b"\x00\xff"
        big = bytes(range(256)) * 8192  # 2 MiB
        ws.send(big)
        assert ws.receive() == big
        assert ws.ping(b"p").wait(5)
    assert ws.close_code == 1000
    assert ws.closed


def test_subprotocols_against_own_server(echo_server: Server) -> None:
    with connect(echo_server.url + "/proto", subprotocols=["superchat", "chat"]) as ws:
        assert ws.subprotocol == "chat"
        ws.send("x")
        assert ws.receive() == "x"
    with connect(echo_server.url + "/proto", subprotocols=["other"]) as ws:
        assert ws.subprotocol is None


def test_rejections_carry_status_headers_and_body(echo_server: Server) -> None:
    with pytest.raises(HandshakeRejected) as info:
        connect(echo_server.url + "/echo", origin="http://evil.example")
    assert info.value.status == 403
    assert b"origin" in info.value.body
    assert info.value.header("content-type", "").startswith("text/plain")
    with pytest.raises(HandshakeRejected) as info:
        connect(echo_server.url + "/no-such-route")
    assert info.value.status == 404
    # Same origin (Origin host equals Host, port included) is accepted.
    with connect(echo_server.url + "/echo", origin=echo_server.http_url) as ws:
        ws.send("same origin")
        assert ws.receive() == "same origin"


def test_query_string_and_extra_headers_reach_the_server(echo_server: Server) -> None:
    with connect(echo_server.url + "/echo?a=1&b=%20", headers={"X-Trace": "t1"}) as ws:
        ws.send("q")
        assert ws.receive() == "q"


def test_message_too_big_for_the_client_fails_with_1009(echo_server: Server) -> None:
    with connect(echo_server.url + "/echo", max_message_size=1000) as ws:
        ws.send(b"x" * 1001)
        with pytest.raises(ConnectionClosedError) as info:
            ws.receive()
    assert info.value.code == 1009
    assert ws.close_code == 1009


def test_many_green_clients_in_one_process(echo_server: Server) -> None:
    import gevent
    from gevent import socket as gsocket

    def one(i: int) -> tuple[int, bool]:
        with connect(echo_server.url + "/echo") as ws:
            green = isinstance(ws._sock, gsocket.socket)
            for j in range(3):
                ws.send(f"{i}:{j}")
                assert ws.receive() == f"{i}:{j}"
        return ws.close_code or 0, green

    started = time.monotonic()
    greenlets = [gevent.spawn(one, i) for i in range(300)]
    gevent.joinall(greenlets, raise_error=True, timeout=60)
    assert [g.value for g in greenlets] == [(1000, True)] * 300
    assert time.monotonic() - started < 30


def test_plain_threads_use_blocking_sockets(echo_server: Server) -> None:
    results: list[object] = []

    def run() -> None:
        try:
            with connect(echo_server.url + "/echo") as ws:
                ws.send("t")
                results.append((ws.receive(), ws._rt.name if ws._rt else None, type(ws._sock)))
            results.append(ws.close_code)
        except Exception as exc:  # pragma: no cover - reported below
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results.count(("t", "threads", socket.socket)) == 8
    assert results.count(1000) == 8


# ------------------------------------------------------- independent server


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def _handler(conn: ServerConnection) -> None:
    path = conn.request.path if conn.request else ""
    if path.startswith("/close"):
        code = int(path.rpartition("/")[2])
        conn.send("bye")
        conn.close(code, "server says bye")
        return
    if path == "/headers":
        assert conn.request is not None
        conn.send(repr(sorted(conn.request.headers.raw_items())))
        conn.send(path)
        return
    for message in conn:
        conn.send(message)


@contextmanager
def websockets_server(host: str = "127.0.0.1", **kwargs: Any) -> Iterator[int]:
    """websockets' own server in a thread; yields its port."""
    where: dict[str, Any] = {} if "sock" in kwargs else {"host": host, "port": 0}
    server = serve(_handler, **where, **kwargs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.socket.getsockname()[1])
    finally:
        server.shutdown()
        thread.join(10)


def test_echo_and_compression_against_websockets() -> None:
    with websockets_server(max_size=None) as port, connect(f"ws://127.0.0.1:{port}/") as ws:
        assert isinstance(ws.extension, PerMessageDeflate)
        assert "Sec-WebSocket-Extensions" in dict(ws.response_headers)
        text = "compress me " * 10000
        ws.send(text)
        assert ws.receive() == text
        ws.send(b"\x01" * 70000)
        assert ws.receive() == b"\x01" * 70000
        ws.send_stream(["a", "b", "c"])
        assert ws.receive() == "abc"
    assert ws.close_code == 1000
    with websockets_server() as port, connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
        assert ws.extension is None
        ws.send("plain")
        assert ws.receive() == "plain"


def test_server_initiated_close_codes() -> None:
    with websockets_server() as port:
        ws = connect(f"ws://127.0.0.1:{port}/close/1000")
        assert ws.receive() == "bye"
        with pytest.raises(ConnectionClosedOK):
            ws.receive()
        assert (ws.close_code, ws.close_reason) == (1000, "server says bye")
        ws = connect(f"ws://127.0.0.1:{port}/close/4002")
        assert ws.receive() == "bye"
        with pytest.raises(ConnectionClosedError) as info:
            ws.receive()
        assert info.value.code == 4002
        assert ws.close_reason == "server says bye"


def test_request_headers_seen_by_an_independent_server() -> None:
    with websockets_server() as port:
        ws = connect(
            f"ws://127.0.0.1:{port}/headers",
            headers=[("X-One", "1")],
            origin="http://example.com",
            subprotocols=None,
        )
        seen = ws.receive()
        assert isinstance(seen, str)
        assert "('Origin', 'http://example.com')" in seen
        assert "('X-One', '1')" in seen
        assert f"('Host', '127.0.0.1:{port}')" in seen
        assert ws.receive() == "/headers"
        ws.close()


def test_subprotocol_negotiated_by_websockets() -> None:
    with (
        websockets_server(subprotocols=["b", "a"]) as port,
        connect(f"ws://127.0.0.1:{port}/", subprotocols=["a", "b"]) as ws,
    ):
        assert ws.subprotocol in ("a", "b")
        ws.send("s")
        assert ws.receive() == "s"


def test_rejection_by_websockets() -> None:
    def refuse(conn: ServerConnection, request: Any) -> Any:
        return conn.respond(403, "members only\n")

    with (
        websockets_server(process_request=refuse) as port,
        pytest.raises(HandshakeRejected) as info,
    ):
        connect(f"ws://127.0.0.1:{port}/")
    assert info.value.status == 403
    assert info.value.body == b"members only\n"


def test_ipv6_literal() -> None:
    try:
        listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback")
    with websockets_server(sock=listener) as port, connect(f"ws://[::1]:{port}/headers") as ws:
        assert f"('Host', '[::1]:{port}')" in str(ws.receive())


@pytest.mark.parametrize("green", [False, True])
def test_wss_with_a_custom_context(tls_files: tuple[Path, Path], green: bool) -> None:
    cert, key = tls_files
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    def run() -> tuple[object, object, int | None]:
        with connect(f"wss://127.0.0.1:{port}/", ssl_context=client_ctx) as ws:
            ws.send("secret" * 1000)
            reply = ws.receive()
            return reply, ws._rt.name if ws._rt else None, None
        return None, None, None  # pragma: no cover

    with websockets_server(ssl=server_ctx) as port:
        if green:
            import gevent

            reply, runtime, _ = gevent.spawn(run).get(timeout=30)
        else:
            box: list[tuple[object, object, int | None]] = []
            thread = threading.Thread(target=lambda: box.append(run()))
            thread.start()
            thread.join(30)
            reply, runtime, _ = box[0]
        assert reply == "secret" * 1000
        assert runtime == ("gevent" if green else "threads")
        # Without the CA the certificate is refused.
        with pytest.raises(ssl.SSLError):
            connect(f"wss://127.0.0.1:{port}/", ssl_context=ssl.create_default_context())


# ------------------------------------------------------------ exact bytes


@contextmanager
def raw_server(
    script: Callable[[socket.socket], None],
) -> Iterator[tuple[int, list[BaseException]]]:
    """A one-connection TCP server on 127.0.0.1 running ``script(conn)`` in a thread."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    errors: list[BaseException] = []

    def run() -> None:
        conn, _ = listener.accept()
        conn.settimeout(10)
        try:
            script(conn)
        except BaseException as exc:  # reported by the test
            errors.append(exc)
        finally:
            conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1]), errors
    finally:
        thread.join(10)
        listener.close()
    assert not errors, errors


def read_request(conn: socket.socket) -> tuple[str, dict[str, str]]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        assert chunk
        data += chunk
    lines = data.split(b"\r\n\r\n")[0].decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        headers[name.lower()] = value
    return lines[0], headers


def accept(conn: socket.socket, *extra: str) -> dict[str, str]:
    _, headers = read_request(conn)
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(headers['sec-websocket-key'])}",
        *extra,
    ]
    conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return headers


def read_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        assert chunk, "EOF"
        data += chunk
    return data


def read_client_frame(conn: socket.socket) -> tuple[int, bool, bytes]:
    b0, b1 = read_exact(conn, 2)
    assert b1 & 0x80, "client frames must be masked"
    length = b1 & 0x7F
    if length == 126:
        length = struct.unpack("!H", read_exact(conn, 2))[0]
    elif length == 127:
        length = struct.unpack("!Q", read_exact(conn, 8))[0]
    key = read_exact(conn, 4)
    payload = bytes(b ^ key[i % 4] for i, b in enumerate(read_exact(conn, length)))
    return b0 & 0x0F, bool(b1 & 0x80), payload


def test_every_frame_is_masked_with_a_fresh_key() -> None:
    keys: list[bytes] = []

    def script(conn: socket.socket) -> None:
        accept(conn)
        for _ in range(3):
            _, b1 = read_exact(conn, 2)
            assert b1 & 0x80
            keys.append(read_exact(conn, 4))
            read_exact(conn, b1 & 0x7F)
        opcode, _, payload = read_client_frame(conn)
        assert (opcode, payload[:2]) == (8, struct.pack("!H", 1000))
        conn.sendall(b"\x88\x02\x03\xe8")

    with (
        raw_server(script) as (port, _),
        connect(f"ws://127.0.0.1:{port}/", compression=None, close_timeout=2) as ws,
    ):
        ws.send("a")
        ws.send(b"b")
        ws.ping(b"c")
    assert len(set(keys)) == 3


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (("Sec-WebSocket-Protocol: chat",), "not offered"),
        (("Sec-WebSocket-Extensions: permessage-deflate",), "none were offered"),
    ],
)
def test_unoffered_subprotocol_or_extension_fails(extra: tuple[str, ...], match: str) -> None:
    def script(conn: socket.socket) -> None:
        accept(conn, *extra)
        conn.recv(10)

    with raw_server(script) as (port, _), pytest.raises(InvalidHandshake, match=match):
        connect(f"ws://127.0.0.1:{port}/", compression=None)


@pytest.mark.parametrize(
    ("response", "match"),
    [
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         b"Sec-WebSocket-Accept: bm90IHRoZSByaWdodCBrZXkgYXQgYWxs\r\n\r\n",
         "wrong Sec-WebSocket-Accept"),
        (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n", "Upgrade"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "HTTP 200"),
        (b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n"
         b"Content-Length: 0\r\n\r\n", "HTTP 426"),
        (b"garbage\r\n\r\n", "malformed"),
        (b"HTTP/1.1 101 Switch", "closed during the opening handshake"),
    ],
)  # fmt: skip
def test_handshake_failures_over_a_socket(response: bytes, match: str) -> None:
    def script(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(response)

    with raw_server(script) as (port, _), pytest.raises(InvalidHandshake, match=match):
        connect(f"ws://127.0.0.1:{port}/")


def test_open_timeout_bounds_a_silent_server() -> None:
    release = threading.Event()

    def script(conn: socket.socket) -> None:
        read_request(conn)
        release.wait(10)

    with raw_server(script) as (port, _):
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            connect(f"ws://127.0.0.1:{port}/", open_timeout=0.5)
        assert 0.4 < time.monotonic() - started < 3
        release.set()


def test_frames_right_behind_the_101_are_not_lost() -> None:
    def script(conn: socket.socket) -> None:
        accept(conn)  # then, in the same breath, two messages
        conn.sendall(b"\x81\x05early\x82\x04bird")
        assert read_client_frame(conn)[0] == 8
        conn.sendall(b"\x88\x02\x03\xe8")

    with (
        raw_server(script) as (port, _),
        connect(f"ws://127.0.0.1:{port}/", compression=None) as ws,
    ):
        assert ws.receive() == "early"
        assert ws.receive() == b"bird"


def test_client_waits_for_the_server_to_end_tcp() -> None:
    """RFC 6455 7.1.1: after the closing handshake the server closes TCP first."""
    observed: list[object] = []

    def script(conn: socket.socket) -> None:
        accept(conn)
        conn.sendall(b"\x88\x02\x03\xe8")  # the server closes
        opcode, _, payload = read_client_frame(conn)
        observed.append((opcode, payload))
        conn.settimeout(0.3)
        try:
            observed.append(conn.recv(10))  # the client must not have ended TCP
        except TimeoutError:
            observed.append("still open")
        conn.shutdown(socket.SHUT_WR)

    with raw_server(script) as (port, _):
        ws = connect(f"ws://127.0.0.1:{port}/", compression=None)
        with pytest.raises(ConnectionClosedOK):
            ws.receive()
    assert observed == [(8, struct.pack("!H", 1000)), "still open"]
    assert ws.close_code == 1000
    assert ws._sock is not None and ws._sock.fileno() == -1  # closed after the server's FIN


def test_close_gives_up_after_close_timeout_when_the_server_never_ends_tcp() -> None:
    release = threading.Event()

    def script(conn: socket.socket) -> None:
        accept(conn)
        read_client_frame(conn)
        conn.sendall(b"\x88\x02\x03\xe8")
        release.wait(10)

    with raw_server(script) as (port, _):
        ws = connect(f"ws://127.0.0.1:{port}/", compression=None, close_timeout=0.5)
        started = time.monotonic()
        ws.close()
        assert time.monotonic() - started < 2
        assert ws.close_code == 1000
        release.set()


def test_http_connect_proxy(echo_server: Server) -> None:
    seen: list[str] = []

    def script(conn: socket.socket) -> None:
        line, headers = read_request(conn)
        seen.append(line)
        seen.append(headers.get("proxy-authorization", ""))
        host, _, port = line.split()[1].rpartition(":")
        upstream = socket.create_connection((host, int(port)))
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        conn.settimeout(None)

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        other = threading.Thread(target=pump, args=(upstream, conn))
        other.start()
        pump(conn, upstream)
        other.join(10)
        upstream.close()

    with raw_server(script) as (port, _):
        proxy = f"http://me:pw@127.0.0.1:{port}"
        with connect(echo_server.url + "/echo", proxy=proxy) as ws:
            ws.send("through the tunnel")
            assert ws.receive() == "through the tunnel"
    assert seen[0] == f"CONNECT 127.0.0.1:{echo_server.port} HTTP/1.1"
    assert seen[1] == "Basic bWU6cHc="
