"""The gunicorn floor: the least any WSGI WebSocket library can do inside gunicorn's gevent worker.

A bare WSGI app (no library): it writes the 101 by hand on ``gunicorn.socket``
(accept key only, no validation, gunicorn's response machinery unused) and runs
the bound's frame loop on that socket. Whatever separates it from the bound is
gunicorn's own cost (accept, HTTP parsing, the environ, the per-request objects,
connection bookkeeping), which any library under gunicorn pays too.
Run as ``gunicorn -k gevent floor_gunicorn:app``.

The load generator sends nothing before the 101, so no frame bytes are left in
gunicorn's request parser. When the connection ends the app shuts the socket
down and returns gunicorn's ``ALREADY_HANDLED``: gunicorn then writes no response
and logs no access line, and its keep-alive read sees EOF and closes.
"""

import os
import socket
import sys

import gevent

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bound import echo_frames, switching_protocols
from gunicorn.workers.base_async import ALREADY_HANDLED


def app(environ, start_response):
    sock = environ["gunicorn.socket"]
    sock.sendall(switching_protocols(environ["HTTP_SEC_WEBSOCKET_KEY"].encode("ascii")))
    echo_frames(sock)
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    return ALREADY_HANDLED


def detached(environ, start_response):
    """The floor, but the connection leaves gunicorn's request handling once it is ours:
    the frame loop runs in a fresh greenlet on a duplicate of the socket, and
    StopIteration makes gunicorn close its copy and drop its per-request objects (the
    environ, Request, Response, parser) and its frames. An experiment for the memory
    plan in docs/performance.md: gunicorn's worker_connections and graceful shutdown
    no longer see such a connection."""
    sock = environ["gunicorn.socket"]
    sock.sendall(switching_protocols(environ["HTTP_SEC_WEBSOCKET_KEY"].encode("ascii")))
    gevent.spawn(_serve_detached, sock.dup())
    raise StopIteration


def _serve_detached(sock):
    try:
        echo_frames(sock)
    finally:
        sock.close()
