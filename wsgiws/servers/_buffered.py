"""Reading what a buffered reader holds without waiting for more."""

from __future__ import annotations

import io
import socket


def drain_reader(reader: io.BufferedReader, sock: socket.socket) -> bytes:
    """The bytes ``reader`` already buffered from ``sock``, without blocking.

    With the socket non-blocking for a moment, ``read1`` returns the buffer, or
    nothing when the buffer is empty (its raw read then finds no data).
    """
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        chunks = []
        while True:
            chunk = reader.read1(65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return b"".join(chunks)
    finally:
        sock.settimeout(timeout)
