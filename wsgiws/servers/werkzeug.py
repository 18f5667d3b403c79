"""The Werkzeug development server (``flask run``, ``werkzeug.serving.run_simple``).

Werkzeug puts the connection in ``werkzeug.socket``; ``wsgi.input`` is the
handler's buffered reader, holding any bytes read past the request headers.
It runs each connection on its own OS thread (``threaded=True``, the
``flask run`` default), so an open WebSocket holds one thread.

Werkzeug adds ``Connection: close`` to every response sent through its
``start_response``, a 101 too ("Always close the connection", serving.py), and
a client that keeps the last ``Connection`` header (websocket-client) then
refuses the handshake. So the 101 is written on the socket here, Werkzeug
never starts a response, and the app ends by telling it the connection is gone
(its ``connection_dropped`` path: nothing written, nothing logged). The access
log line Werkzeug would have written for the 101 is logged here, to its logger.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..http import response_head
from ._buffered import drain_reader
from ._hijack import Hijack, is_socket

access_log = logging.getLogger("werkzeug")


def find(environ: Mapping[str, Any]) -> Hijack | None:
    sock = environ.get("werkzeug.socket")
    if not is_socket(sock):
        return None
    conn = sock
    reader = environ.get("wsgi.input")

    def take_buffered() -> bytes:
        return drain_reader(reader, conn) if isinstance(reader, io.BufferedReader) else b""

    def send_head(status: str, headers: Sequence[tuple[str, str]]) -> bytes:
        access_log.info(
            '%s - - [%s] "%s %s %s" %s -',
            environ.get("REMOTE_ADDR", "-"),
            time.strftime("%d/%b/%Y %H:%M:%S"),
            environ.get("REQUEST_METHOD"),
            environ.get("REQUEST_URI") or environ.get("PATH_INFO"),
            environ.get("SERVER_PROTOCOL"),
            status.split(None, 1)[0],
        )
        return response_head(status, headers)  # the connection's first write

    return Hijack(conn, take_buffered, send_head=send_head, end=_handed_over)


def _handed_over() -> Iterator[bytes]:
    # Werkzeug writes a response (a 500 when none was started) after the app returns,
    # unless the connection dropped; for HTTP it did: it now belongs to the WebSocket.
    raise ConnectionAbortedError("the connection was handed over to a WebSocket")
    yield b""  # pragma: no cover - makes this a generator: Werkzeug iterates it
