"""Taking the socket over from the WSGI server: one small module per server.

Each adapter answers ``find(environ)`` with a :class:`Hijack` when it
recognises the mechanism its server offers (servers are told apart by what
they put in the environ, never by ``SERVER_SOFTWARE``), else None.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..exceptions import HijackError
from . import gunicorn, pywsgi, testing, uwsgi, werkzeug
from ._hijack import ENVIRON_START_RESPONSE, Hijack, is_socket

__all__ = ["ENVIRON_START_RESPONSE", "Detacher", "Hijack", "detacher", "find_socket", "is_socket"]

Finder = Callable[[Mapping[str, Any]], "Hijack | None"]

#: Tried in order; the first that recognises the environ wins (the most specific first:
#: Werkzeug's input would also pass for pywsgi's, whose finder frees the reader). gunicorn
#: leads: its key is its own, and it serves most upgrades.
FINDERS: list[Finder] = [gunicorn.find, testing.find, uwsgi.find, werkzeug.find, pywsgi.find]


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
