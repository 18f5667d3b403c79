"""Taking the bytes a server's buffered reader holds past the request head."""

from __future__ import annotations

import io
import socket

import pytest

from wsgiws.servers._buffered import _LIMIT, drain_reader

pytestmark = pytest.mark.unit


class EndlessStream(io.RawIOBase):
    """A socket a client floods: a read always finds data (until ``total`` bytes)."""

    def __init__(self, total: int) -> None:
        self.left = total
        self.reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        self.reads += 1
        n = min(len(buffer), self.left)
        buffer[:n] = b"x" * n
        self.left -= n
        return n


@pytest.fixture
def sock() -> socket.socket:
    a, b = socket.socketpair()
    b.close()
    return a


def test_a_flood_behind_the_request_is_not_read_whole(sock: socket.socket) -> None:
    """Once the buffer is empty, a bounded amount: the rest stays in the socket."""
    raw = EndlessStream(100 << 20)
    reader = io.BufferedReader(raw, 8192)
    data = drain_reader(reader, sock)
    assert 0 < len(data) <= _LIMIT
    assert raw.left >= (100 << 20) - _LIMIT


def test_everything_buffered_is_taken_and_nothing_more(sock: socket.socket) -> None:
    raw = EndlessStream(8192 + 100)
    reader = io.BufferedReader(raw, 8192)
    assert reader.read(10) == b"x" * 10  # the request head's read leaves 8182 buffered
    reads = raw.reads
    assert drain_reader(reader, sock) == b"x" * 8182
    assert raw.reads == reads  # the socket was not read: its 100 bytes wait there
    assert sock.gettimeout() is None  # and its timeout is restored


def test_an_empty_buffer_and_an_empty_socket_give_nothing(sock: socket.socket) -> None:
    a, b = socket.socketpair()
    with a, b:
        reader = a.makefile("rb")
        assert drain_reader(reader, a) == b""
        assert a.gettimeout() is None
