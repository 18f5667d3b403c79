"""gunicorn's own HTTP workers (``-k gevent``, ``gthread``, ``sync``).

gunicorn puts the socket in ``gunicorn.socket``; bytes read past the request
headers stay in its parser's unreader, behind ``wsgi.input``.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from . import Hijack


def find(environ: Mapping[str, Any]) -> Hijack | None:
    from . import Hijack, is_socket

    sock = environ.get("gunicorn.socket")
    if not is_socket(sock):
        return None
    body = environ.get("wsgi.input")
    unreader = getattr(getattr(body, "reader", None), "unreader", None)

    def take_buffered() -> bytes:
        if unreader is None:
            return b""
        take = getattr(unreader, "take_buffered", None)
        if take is not None:
            return bytes(take())
        buf = getattr(unreader, "buf", None)  # older gunicorn: a BytesIO
        if buf is None:
            return b""
        data = bytes(buf.getvalue())
        buf.seek(0)
        buf.truncate()
        return data

    return Hijack("gunicorn", cast(socket.socket, sock), take_buffered)
