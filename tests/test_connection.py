"""The WebSocket connection layer over a socketpair, driven by a scripted peer.

The peer is raw bytes (tests/wire.py frames): every assertion is about what
wsgiws puts on the wire and how it ends TCP.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator

import pytest

from wsgiws.protocol import Role
from wsgiws.websocket import WebSocket

trustme = pytest.importorskip("trustme")


def server_frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """A frame as a server sends it (unmasked, short payload)."""
    assert len(payload) < 126
    return bytes(((0x80 if fin else 0) | opcode, len(payload))) + payload


@pytest.fixture(scope="module")
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context


@pytest.fixture
def tls_pair(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> Iterator[tuple[ssl.SSLSocket, ssl.SSLSocket]]:
    """Two ends of a TLS connection over a socketpair: (our end as client, the peer's)."""
    server_context, client_context = tls_contexts
    a, b = socket.socketpair()
    peer_box: list[ssl.SSLSocket] = []
    handshake = threading.Thread(
        target=lambda: peer_box.append(server_context.wrap_socket(b, server_side=True))
    )
    handshake.start()
    ours = client_context.wrap_socket(a, server_hostname="127.0.0.1")
    handshake.join(10)
    peer = peer_box[0]
    try:
        yield ours, peer
    finally:
        for sock in (ours, peer):
            sock.close()


def test_keepalive_judges_a_silent_tls_peer_with_many_unread_messages(
    tls_pair: tuple[ssl.SSLSocket, ssl.SSLSocket],
) -> None:
    """Keepalive over TLS with 256+ received messages unread: the silent peer is still judged.

    Keepalive then only checks whether the peer sent anything (it does not read more
    into a full queue); that check must work on an SSL socket too.
    """
    ours, peer = tls_pair
    peer.sendall(b"".join(server_frame(1, b"m%d" % i) for i in range(300)))
    ended = threading.Event()
    ws = WebSocket(role=Role.CLIENT, sock=ours, ping_interval=0.05, ping_timeout=0.05)
    ws.add_close_callback(lambda _: ended.set())
    assert ws.receive() == "m0"  # one read takes all 300 messages; 299 stay unread
    assert ended.wait(10), "keepalive never judged the silent peer"
    assert ws.close_code == 1011
    assert ws.close_reason == "keepalive ping timeout"
