"""What an adapter hands the middleware: the server's socket, and how to take it over."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeGuard

from gevent import socket as gsocket


def is_socket(obj: object) -> TypeGuard[socket.socket]:
    """A standard or gevent socket (gevent's is not a subclass of the standard one, but
    has its interface)."""
    return isinstance(obj, (socket.socket, gsocket.socket))


#: environ key where the middleware keeps the server's ``start_response`` (set before the
#: socket is looked for).
ENVIRON_START_RESPONSE = "wsgiws.start_response"


@dataclass(slots=True)  # one per connection, kept for its life: no __dict__
class Hijack:
    """A server's socket, and how to collect the bytes it already read past the request."""

    sock: socket.socket
    take_buffered: Callable[[], bytes]
    #: Makes the 101 head for the connection to write as its first bytes (and records
    #: what the server needs of it, for its access log), for a server whose
    #: start_response would spoil it or costs more than it must; None: the 101 goes
    #: through the server's own start_response. Used once (it may hold on to the
    #: server's request).
    send_head: Callable[[str, Sequence[tuple[str, str]]], bytes] | None = None
    #: What the WSGI app returns to the server once the WebSocket is over.
    end: Callable[[], Iterable[bytes]] = list
    #: Called once the 101 is out and the buffered bytes taken, for a server the
    #: connection leaves at that point (see :func:`wsgiws.servers.detacher`): returns the
    #: socket to use from then on; None: the connection stays in the server's request.
    detach: Callable[[], socket.socket] | None = None
