"""Connection logs: one id per connection, in every line about it (logger ``wsgiws``).

Each upgrade request gets an id (8 hex digits, also in
``environ["wsgiws.connection_id"]`` and in every record's ``ws_id`` attribute for
structured log handlers). The lines, and why they have these levels:

- ``INFO ws 1a2b3c4d closed 1000 "bye" by remote after 12.3 s; in 5 msg 310 B, out 5 msg 310 B;
  GET /chat from 203.0.113.7``: the one line per connection. gunicorn's access log
  also writes a line when the connection ends (status 101, path, duration), but not
  how it ended or what went through it.
- ``INFO ws 1a2b3c4d refused 429 GET /chat from 203.0.113.7: <reason>``: an access
  log shows the status, never why.
- ``DEBUG ws 1a2b3c4d opened GET /chat from 203.0.113.7 subprotocol=chat
  extension=permessage-deflate``: DEBUG because the close line repeats all of it.
- ``DEBUG`` per message (direction, text/binary, size) and per pong (round trip).

Message contents are never logged; the query string (where tokens often travel)
only with ``log_query_string=True``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .websocket import WebSocket

__all__ = [
    "ENVIRON_CONNECTION_ID",
    "connection_id",
    "describe_request",
    "label",
    "log",
    "new_id",
]

logger = logging.getLogger("wsgiws")

#: environ key holding the connection's id.
ENVIRON_CONNECTION_ID = "wsgiws.connection_id"


def new_id(environ: dict[str, Any]) -> str:
    """Give this upgrade request its id (random: ids from several workers do not collide;
    ``random`` reseeds in every forked worker, and costs no system call, unlike urandom)."""
    conn_id = "%08x" % random.getrandbits(32)  # noqa: UP031 (half the cost of f"{n:08x}")
    environ[ENVIRON_CONNECTION_ID] = conn_id
    return conn_id


def connection_id(ws: WebSocket) -> str:
    """``ws``'s id ("-" for a WebSocket not opened through the middleware, e.g. a client)."""
    return str(ws.environ.get(ENVIRON_CONNECTION_ID, "-"))


def label(ws: WebSocket) -> str:
    """How log lines name a connection: ``ws <id>``."""
    return f"ws {connection_id(ws)}"


def log(ws: WebSocket, level: int, text: str, *args: object, exc_info: bool = False) -> None:
    """Log ``text % args`` about ``ws``: the line starts with its label, ``ws_id`` is set."""
    if logger.isEnabledFor(level):
        conn_id = connection_id(ws)
        logger.log(level, "ws %s " + text, conn_id, *args, exc_info=exc_info, extra=extra(conn_id))


def describe_request(environ: Mapping[str, Any], client: str, with_query: bool = False) -> str:
    """``GET /path from 203.0.113.7`` (``via <proxy>`` when forwarded)."""
    path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
    query = environ.get("QUERY_STRING")
    if with_query and query:
        path += f"?{query}"
    text = f"{environ.get('REQUEST_METHOD', 'GET')} {path} from {client or '?'}"
    peer = environ.get("REMOTE_ADDR")
    if peer and peer != client:
        text += f" via {peer}"
    return text


def extra(conn_id: str) -> dict[str, str]:
    return {"ws_id": conn_id}
