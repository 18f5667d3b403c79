"""Taking the socket over from the WSGI server: one small module per server.

Each adapter answers ``find(environ)`` with a :class:`Hijack` when it
recognises the mechanism its server offers (servers are told apart by what
they put in the environ, never by ``SERVER_SOFTWARE``), else None.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..exceptions import HijackError

__all__ = ["Detacher", "Hijack", "detacher", "find_socket"]


def is_socket(obj: object) -> bool:
    """A standard or gevent socket (gevent's is not a subclass of the standard one)."""
    if isinstance(obj, socket.socket):
        return True
    try:
        from gevent import socket as gsocket
    except ImportError:  # pragma: no cover - gevent is a dependency
        return False
    return isinstance(obj, gsocket.socket)


#: environ key where the middleware keeps the server's ``start_response`` (set before the
#: socket is looked for).
ENVIRON_START_RESPONSE = "wsgiws.start_response"


@dataclass(slots=True)  # one per connection, kept for its life: no __dict__
class Hijack:
    """A server's socket, and how to collect the bytes it already read past the request."""

    sock: socket.socket
    take_buffered: Callable[[], bytes]
    #: Writes the 101 head on the socket itself, for a server whose start_response would
    #: spoil it; None: the 101 goes through the server's own start_response.
    send_head: Callable[[str, Sequence[tuple[str, str]]], None] | None = None
    #: What the WSGI app returns to the server once the WebSocket is over.
    end: Callable[[], Iterable[bytes]] = list
    #: Called once the 101 is out and the buffered bytes taken, for a server the
    #: connection leaves at that point (see :func:`detacher`): returns the socket to
    #: use from then on; None: the connection stays in the server's request.
    detach: Callable[[], socket.socket] | None = None


from . import gunicorn, pywsgi, testing, uwsgi, werkzeug  # noqa: E402  (they use Hijack and is_socket)

Finder = Callable[[Mapping[str, Any]], "Hijack | None"]

#: Tried in order; the first that recognises the environ wins (the most specific first:
#: Werkzeug's input would also pass for pywsgi's, whose finder frees the reader).
FINDERS: list[Finder] = [testing.find, gunicorn.find, uwsgi.find, werkzeug.find, pywsgi.find]


def find_socket(environ: Mapping[str, Any]) -> Hijack:
    """The upgrade request's socket, or :class:`HijackError` naming the server."""
    for finder in FINDERS:
        found = finder(environ)
        if found is not None:
            return found
    raise HijackError(
        f"{server_name(environ)} does not give WSGI applications access to the client socket, "
        "so it cannot serve WebSockets; run the app under gunicorn (-k gevent) or gevent.pywsgi"
    )


#: ``detach(environ, start_response, serve)``: runs ``serve(environ, start_response)`` (the
#: upgrade request's WSGI call) so that the connection can leave the server's request at
#: the 101; returns what the server gets back.
Detacher = Callable[
    [dict[str, Any], Callable[..., Any], Callable[[dict[str, Any], Callable[..., Any]], Any]],
    Iterable[bytes],
]


def detacher(environ: Mapping[str, Any]) -> Detacher | None:
    """How this server lets an upgraded connection leave its request, or None.

    Only gunicorn's gevent worker does, once :func:`wsgiws.gunicorn.post_worker_init`
    turned it on (it also makes the worker wait for those connections when it stops).
    """
    return gunicorn.detacher(environ)


def server_name(environ: Mapping[str, Any]) -> str:
    """The server's name for error messages (here ``SERVER_SOFTWARE`` is only a label)."""
    software = str(environ.get("SERVER_SOFTWARE") or "")
    if "uwsgi.version" in environ or "uwsgi.node" in environ:
        return "uWSGI" + (f" ({software})" if software else "")  # outside uWSGI's process
    if software:
        return software
    if any(key.startswith("waitress.") for key in environ):
        return "waitress"
    return "this WSGI server"
