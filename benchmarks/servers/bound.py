"""The bound: a deliberately minimal WebSocket echo on a bare gevent StreamServer.

It is the practical upper bound for pure Python on gevent: one greenlet per
connection reads frames from a buffered socket file and writes each echo with
one sendall().  It does what the benchmark scenarios need and little more:
masked client frames, 7/16/64-bit lengths, fragmented messages, ping, close.
No UTF-8 validation, no extensions, no limits beyond a 16 MiB message cap.
Unmasking uses int.from_bytes XOR, with no per-byte Python loop.
"""

import base64
import hashlib
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import MAX_MESSAGE, parse_args
from gevent.server import StreamServer

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def unmask(mask: bytes, data: bytes) -> bytes:
    n = len(data)
    if not n:
        return data
    key = (mask * (n // 4 + 1))[:n]
    x = int.from_bytes(data, "little") ^ int.from_bytes(key, "little")
    return x.to_bytes(n, "little")


def frame_header(opcode: int, n: int) -> bytes:
    if n < 126:
        return bytes((0x80 | opcode, n))
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n)
    return struct.pack("!BBQ", 0x80 | opcode, 127, n)


def handshake(sock, rfile) -> bool:
    key = None
    line = rfile.readline(8192)
    if not line.startswith(b"GET "):
        return False
    while True:
        line = rfile.readline(8192)
        if not line or line in (b"\r\n", b"\n"):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            key = value.strip()
    if not key:
        sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        return False
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    sock.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    return True


def handle(sock, address):
    rfile = sock.makefile("rb", buffering=65536)
    try:
        if handshake(sock, rfile):
            echo_frames(sock, rfile)
    finally:
        rfile.close()
        sock.close()


def echo_frames(sock, rfile):
    """Echo frames until close or EOF (also used by floor_gunicorn.py)."""
    read = rfile.read
    send = sock.sendall
    try:
        parts = []
        msg_op = 0
        while True:
            head = read(2)
            if len(head) < 2:
                return
            b0, b1 = head
            fin, op, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", read(8))
            if not b1 & 0x80 or n > MAX_MESSAGE:
                send(b"\x88\x02\x03\xea")  # 1002 protocol error
                return
            mask = read(4)
            data = read(n)
            if len(data) < n:
                return
            data = unmask(mask, data)
            if op >= 8:
                if op == 8:
                    send(frame_header(8, len(data[:2])) + data[:2])
                    return
                if op == 9:
                    send(frame_header(10, n) + data)
                continue
            if op:
                msg_op = op
            if fin and not parts:
                send(frame_header(msg_op, n) + data)
                continue
            parts.append(data)
            if fin:
                data = b"".join(parts)
                parts = []
                send(frame_header(msg_op, len(data)) + data)
    except OSError:
        pass


def main():
    args = parse_args(__doc__.splitlines()[0])
    server = StreamServer((args.host, args.port), handle, backlog=2048)
    server.serve_forever()


if __name__ == "__main__":
    main()
