"""The bound: a deliberately minimal WebSocket echo on a bare gevent StreamServer.

It is the practical upper bound for pure Python on gevent, and a strict one: one
greenlet per connection reads with ``recv()``, turns every complete frame of what
it read into its reply and sends all the replies with one ``sendall()`` (the
fastest way to answer pipelined messages), and keeps no buffered file, only the
bytes of a frame not complete yet. It does what the benchmark scenarios need and
little more: masked client frames, 7/16/64-bit lengths, fragmented messages, ping,
close. No UTF-8 validation, no extensions, no limits beyond a 16 MiB message cap.
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
READ_SIZE = 65536
MAX_READ = 262144  # larger reads cost a fresh large allocation (page faults) each


def unmask(mask, data):
    n = len(data)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    x = int.from_bytes(data, "little") ^ int.from_bytes(key, "little")
    return x.to_bytes(n, "little")


def frame_header(opcode, n):
    if n < 126:
        return bytes((0x80 | opcode, n))
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n)
    return struct.pack("!BBQ", 0x80 | opcode, 127, n)


def switching_protocols(key):
    """The 101 response for a Sec-WebSocket-Key (also used by floor_gunicorn.py)."""
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


def handshake(sock):
    """Read the request, answer 101; returns the bytes read past the headers, or None."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(8192)
        if not chunk or len(buf) > 65536:
            return None
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"GET "):
        return None
    key = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            key = value.strip()
    if not key:
        sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        return None
    sock.sendall(switching_protocols(key))
    return rest


def handle(sock, address):
    try:
        rest = handshake(sock)
        if rest is not None:
            echo_frames(sock, rest)
    except OSError:
        pass
    finally:
        sock.close()


def echo_frames(sock, data=b""):
    """Echo frames until close or EOF: every complete frame of one read answered, all
    the replies in one write (also used by floor_gunicorn.py)."""
    recv = sock.recv
    send = sock.sendall
    buf = bytearray(data)
    parts = []  # fragments of the message being assembled
    msg_op = 0
    need = 0  # bytes of buffer the incomplete frame at its start needs
    try:
        while True:
            replies = []
            pos, end = 0, len(buf)
            while end - pos >= 2:
                b0, b1 = buf[pos], buf[pos + 1]
                fin, op, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
                hl = 2
                if n == 126:
                    if end - pos < 4:
                        break
                    (n,) = struct.unpack_from("!H", buf, pos + 2)
                    hl = 4
                elif n == 127:
                    if end - pos < 10:
                        break
                    (n,) = struct.unpack_from("!Q", buf, pos + 2)
                    hl = 10
                if not b1 & 0x80 or n > MAX_MESSAGE:
                    replies.append(b"\x88\x02\x03\xea")  # 1002 protocol error
                    send(b"".join(replies))
                    return
                frame_end = pos + hl + 4 + n
                if frame_end > end:
                    need = frame_end - pos
                    break
                mask = bytes(buf[pos + hl : pos + hl + 4])
                payload = unmask(mask, buf[pos + hl + 4 : frame_end])
                pos = frame_end
                if op >= 8:
                    if op == 8:
                        replies.append(frame_header(8, len(payload[:2])) + payload[:2])
                        send(b"".join(replies))
                        return
                    if op == 9:
                        replies.append(frame_header(10, n) + payload)
                    continue
                if op:
                    msg_op = op
                if fin and not parts:
                    replies.append(frame_header(msg_op, n) + payload)
                    continue
                parts.append(payload)
                if fin:
                    payload = b"".join(parts)
                    parts = []
                    replies.append(frame_header(msg_op, len(payload)) + payload)
            if replies:
                send(b"".join(replies))
            del buf[:pos]
            # a large frame: read what it still needs in big pieces
            chunk = recv(min(max(READ_SIZE, need - len(buf)), MAX_READ))
            if not chunk:
                return
            buf += chunk
            need = 0
    except OSError:
        pass


def main():
    args = parse_args(__doc__.splitlines()[0])
    server = StreamServer((args.host, args.port), handle, backlog=2048)
    server.serve_forever()


if __name__ == "__main__":
    main()
