"""The Werkzeug development server (``flask run``, ``werkzeug.serving.run_simple``).

Werkzeug puts the connection in ``werkzeug.socket``; ``wsgi.input`` is the
handler's buffered reader, holding any bytes read past the request headers.
It runs each connection on its own OS thread (``threaded=True``, the
``flask run`` default), so an open WebSocket holds one thread.

Werkzeug adds ``Connection: close`` to every response, the 101 included, so
the handshake answer carries two ``Connection`` headers (``Upgrade`` and
``close``). Browsers look for the ``upgrade`` token and accept it (checked in
headless Chromium by the test suite).
"""

from __future__ import annotations

import io
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from ._buffered import drain_reader

if TYPE_CHECKING:
    from . import Hijack


def find(environ: Mapping[str, Any]) -> Hijack | None:
    from . import Hijack, is_socket

    sock = environ.get("werkzeug.socket")
    if not is_socket(sock):
        return None
    conn = cast(socket.socket, sock)
    reader = environ.get("wsgi.input")
    if not isinstance(reader, io.BufferedReader):
        return Hijack(conn, lambda: b"")
    return Hijack(conn, lambda: drain_reader(reader, conn))
