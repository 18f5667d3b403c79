"""wss:// with gunicorn's own TLS (--certfile/--keyfile), a throwaway certificate per run."""

from __future__ import annotations

import ssl
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.servers import Server, serve
from tests.wire import RawClient

trustme = pytest.importorskip("trustme")


@pytest.fixture(scope="module")
def ca() -> object:
    return trustme.CA()


@pytest.fixture(scope="module", params=["gunicorn-gevent", "gunicorn-gthread"])
def tls_server(
    request: pytest.FixtureRequest, ca: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tmp: Path = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")  # type: ignore[attr-defined]
    certfile, keyfile = tmp / "cert.pem", tmp / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    args = ["--certfile", str(certfile), "--keyfile", str(keyfile)]
    if request.param == "gunicorn-gthread":
        args += ["--threads", "8"]
    with serve(request.param, "tests.server_apps:app", args) as server:
        yield server


@pytest.fixture(scope="module")
def client_context(ca: object) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)  # type: ignore[attr-defined]
    return context


def wss(server: Server) -> str:
    return f"wss://127.0.0.1:{server.port}"


def test_echo_and_large_messages_over_tls(tls_server: Server, ctx: ssl.SSLContext) -> None:
    with connect(wss(tls_server) + "/echo", ssl=ctx, max_size=None) as ws:
        ws.send("over tls")
        assert ws.recv() == "over tls"
        big = bytes(range(256)) * (12 << 12)  # 12 MiB: many TLS records each way
        ws.send(big)
        assert ws.recv() == big
    assert ws.close_code == 1000


def test_concurrent_sends_over_tls(tls_server: Server, ctx: ssl.SSLContext) -> None:
    senders, count, size = 4, 25, 70_000
    with connect(wss(tls_server) + "/burst", ssl=ctx, max_size=None) as ws:
        ws.send(f"{senders} {count} {size}")
        seen: dict[int, list[int]] = {s: [] for s in range(senders)}
        while (message := ws.recv()) != "done":
            assert isinstance(message, bytes) and len(message) == size  # whole, not interleaved
            sender, index, rest = message.split(b":", 2)
            assert rest == b"x" * len(rest)
            seen[int(sender)].append(int(index))
        assert all(indexes == list(range(count)) for indexes in seen.values())


def test_clean_close_over_tls(tls_server: Server, ctx: ssl.SSLContext) -> None:
    with connect(wss(tls_server) + "/bye", ssl=ctx) as ws:
        ws.send("last")
        assert ws.recv() == "last"
        with pytest.raises(ConnectionClosed):  # 4000: websockets calls it an error
            ws.recv()
    assert ws.close_code == 4000 and ws.close_reason == "done here"


@pytest.fixture
def ctx(client_context: ssl.SSLContext) -> ssl.SSLContext:
    return client_context


def test_tls_socket_ends_with_close_notify_or_fin(tls_server: Server, ctx: ssl.SSLContext) -> None:
    """On the wire under TLS: the close frame, then the TLS stream ends (no stray records)."""
    import socket

    raw = socket.create_connection(("127.0.0.1", tls_server.port), timeout=5)
    sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    client = RawClient.__new__(RawClient)
    client.sock = sock
    client.key = "dGhlIHNhbXBsZSBub25jZQ=="
    client.buf = b""
    sock.sendall(
        b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    client.status, client.headers = client._read_response_head()
    assert client.accepted_properly()
    client.send_frame(1, b"x")
    assert client.read_frame() == (1, True, b"x")
    client.send_frame(8, struct.pack("!H", 1000))
    assert client.read_close() == (1000, "")
    try:
        rest = client.rest_until_eof()
    except ssl.SSLEOFError:
        rest = b""  # the server ended TCP without close_notify: still no stray bytes
    assert rest == b""
    sock.close()
