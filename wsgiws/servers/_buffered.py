"""Reading what a buffered reader holds without waiting for more."""

from __future__ import annotations

import io
import socket

#: ``read1`` size: more than a server's reader buffers (8 KiB, io.DEFAULT_BUFFER_SIZE).
_CHUNK = 65536
#: Most bytes taken from the socket itself once the buffer is empty. A client that
#: floods right behind its handshake keeps the socket readable: reading until it is
#: not would hold the handshake (and every other connection of the worker) while
#: buffering without bound. What is left stays in the socket for the WebSocket.
_LIMIT = 16 * _CHUNK


def drain_reader(reader: io.BufferedReader, sock: socket.socket) -> bytes:
    """The bytes ``reader`` already buffered from ``sock``, without blocking.

    With the socket non-blocking for a moment, ``read1`` returns what is buffered, or,
    once the buffer is empty, what one read of the socket finds (nothing: an empty
    socket). Reading stops after a short chunk (nothing is buffered any more) or at
    ``_LIMIT``, which is far above any reader's buffer: the rest waits in the socket.
    """
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    chunks: list[bytes] = []
    try:
        total = 0
        while total < _LIMIT:
            chunk = reader.read1(_CHUNK)
            chunks.append(chunk)
            total += len(chunk)
            if len(chunk) < _CHUNK:
                break
    except OSError:
        pass  # (no data: BlockingIOError)
    finally:
        sock.settimeout(timeout)
    return b"".join(chunks)
