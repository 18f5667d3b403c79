"""The in-process server of :mod:`wsgiws.testing` (no listening socket).

It puts the server end of a socket pair in ``wsgiws.test_socket`` and the bytes
it read past the request head in ``wsgiws.test_buffered``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ._hijack import Hijack, is_socket

ENVIRON_SOCKET: Final = "wsgiws.test_socket"
ENVIRON_BUFFERED: Final = "wsgiws.test_buffered"


def find(environ: Mapping[str, Any]) -> Hijack | None:
    sock = environ.get(ENVIRON_SOCKET)
    if not is_socket(sock):
        return None
    buffered = [bytes(environ.get(ENVIRON_BUFFERED) or b"")]

    def take_buffered() -> bytes:
        data, buffered[0] = buffered[0], b""
        return data

    return Hijack(sock, take_buffered)
