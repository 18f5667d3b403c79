"""A raw WebSocket client for wire-level assertions: exact bytes, no library in between."""

from __future__ import annotations

import base64
import os
import socket
import struct
import time

from wsgiws.handshake import accept_key


class RawClient:
    def __init__(
        self,
        port: int,
        path: str = "/echo",
        headers: dict[str, str] | None = None,
        extra: bytes = b"",
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {self.key}",
            "Sec-WebSocket-Version: 13",
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + extra)
        self.buf = b""
        self.status, self.headers = self._read_response_head()

    def _read_response_head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"EOF during handshake: {self.buf!r}")
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            headers[key] = (headers[key] + ", " if key in headers else "") + value.strip()
        return status, headers

    def body(self) -> bytes:
        length = int(self.headers.get("content-length", "0"))
        while len(self.buf) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        body, self.buf = self.buf[:length], self.buf[length:]
        return body

    def accepted_properly(self) -> bool:
        return self.status == 101 and self.headers.get("sec-websocket-accept") == accept_key(
            self.key
        )

    @staticmethod
    def frame(
        opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0, mask: bool = True
    ) -> bytes:
        b0 = (0x80 if fin else 0) | rsv | opcode
        n = len(payload)
        mbit = 0x80 if mask else 0
        if n < 126:
            header = struct.pack("!BB", b0, mbit | n)
        elif n < 65536:
            header = struct.pack("!BBH", b0, mbit | 126, n)
        else:
            header = struct.pack("!BBQ", b0, mbit | 127, n)
        if not mask:
            return header + payload
        key = os.urandom(4)
        masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return header + key + masked

    def send_frame(self, opcode: int, payload: bytes = b"", **kw: object) -> None:
        self.sock.sendall(self.frame(opcode, payload, **kw))  # type: ignore[arg-type]

    def _fill(self, n: int) -> None:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk

    def read_frame(self) -> tuple[int, bool, bytes]:
        """(opcode, fin, payload) of the next frame from the server (which must be unmasked)."""
        self._fill(2)
        b0, b1 = self.buf[0], self.buf[1]
        assert not b1 & 0x80, "server frames must not be masked"
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            self._fill(4)
            (n,) = struct.unpack("!H", self.buf[2:4])
            pos = 4
        elif n == 127:
            self._fill(10)
            (n,) = struct.unpack("!Q", self.buf[2:10])
            pos = 10
        self._fill(pos + n)
        payload = self.buf[pos : pos + n]
        self.buf = self.buf[pos + n :]
        return b0 & 0x0F, bool(b0 & 0x80), payload

    def read_close(self) -> tuple[int | None, str]:
        """Skip to the server's close frame; return its code and reason."""
        while True:
            opcode, _, payload = self.read_frame()
            if opcode == 8:
                if not payload:
                    return None, ""
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode()

    def rest_until_eof(self, timeout: float = 5.0) -> bytes:
        """Everything the server sends until it closes TCP (FIN); fails on timeout."""
        self.sock.settimeout(timeout)
        data = self.buf
        self.buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = self.sock.recv(65536)
            if not chunk:
                return data
            data += chunk
        raise TimeoutError("server did not close TCP")

    def close(self) -> None:
        self.sock.close()


def assert_bye_is_clean(client: RawClient) -> None:
    """Against ``/bye`` (echo one message, then close 4000): the close frame, then only FIN."""
    assert client.accepted_properly()
    client.send_frame(1, b"one")
    assert client.read_frame() == (1, True, b"one")
    assert client.read_close() == (4000, "done here")
    client.send_frame(8, struct.pack("!H", 4000))
    assert client.rest_until_eof() == b""
    client.close()
