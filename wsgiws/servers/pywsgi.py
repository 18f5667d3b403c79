"""gevent.pywsgi.WSGIServer (and gunicorn's ``-k gevent_pywsgi`` worker).

For an upgrade request pywsgi puts its buffered reader itself in
``wsgi.input``; the socket is the reader's raw stream's. Bytes the client sent
right behind its handshake sit in that reader's buffer.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from ._buffered import drain_reader
from ._hijack import Hijack, is_socket


def find(environ: Mapping[str, Any]) -> Hijack | None:
    reader = environ.get("wsgi.input")
    sock = getattr(getattr(reader, "raw", None), "_sock", None)
    if not isinstance(reader, io.BufferedReader) or not is_socket(sock):
        sock = environ.get("gunicorn.sock")  # gunicorn's pywsgi worker names it so
        if not isinstance(reader, io.BufferedReader) or not is_socket(sock):
            return None
    conn = sock

    def take_buffered() -> bytes:
        data = drain_reader(reader, conn)
        # Frees the reader's 8 KiB buffer for the WebSocket's lifetime (the socket stays
        # open); pywsgi reads no further request from a closed reader.
        reader.close()
        return data

    return Hijack(conn, take_buffered)
