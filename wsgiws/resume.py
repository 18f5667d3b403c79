"""A client that follows a room and resumes where it left off after any cut.

>>> from wsgiws.resume import Follower
>>> for message in Follower("ws://127.0.0.1:8000/feed?room=lobby"):
...     print(message.position, message.data)

It connects, reads frames in the hub's JSON wire format
(:func:`wsgiws.hub.json_wire_format`: ``{"room", "pos", "data"}``; a frame with
``"pos"`` and no data, such as the server's greeting, only moves the position),
and when the connection ends for any reason but a deliberate close it reconnects
with exponential backoff and full jitter, adding ``after=<last position>`` to the
URL so the server's ``hub.join(ws, room, after=...)`` replays what it missed. The
server refusing to resume (it closes with :data:`GAP_CODE`, the history is gone)
raises :class:`ResumeFailed`: the caller resynchronises and starts a new Follower.

Works in threads (blocking sockets) and under gevent (green), like
:func:`wsgiws.client.connect`. The browser counterpart is ``wsgiws/static/wsgiws-rooms.js``.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .client import connect
from .exceptions import ConnectionClosed, WebSocketError

__all__ = ["BROWSER_CLIENT", "GAP_CODE", "Follower", "Message", "ResumeFailed"]

logger = logging.getLogger("wsgiws.resume")

#: The browser client, one JavaScript file for the app to serve (no build step).
BROWSER_CLIENT = Path(__file__).parent / "static" / "wsgiws-rooms.js"

#: Close code a server sends when it cannot resume from the client's position
#: (4000-4999 are for applications, RFC 6455 section 7.4.2).
GAP_CODE = 4409


class ResumeFailed(Exception):
    """The server cannot replay from our position (its history lost it)."""

    def __init__(self, position: str | None, reason: str) -> None:
        super().__init__(f"cannot resume after {position}: {reason}")
        self.position = position
        self.reason = reason


@dataclass(frozen=True)
class Message:
    room: str | None
    position: str | None
    data: str | bytes


def with_position(url: str, position: str | None) -> str:
    """``url`` with its ``after`` query parameter set to ``position`` (or removed)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "after"]
    if position is not None:
        query.append(("after", position))
    return urlunsplit(parts._replace(query=urlencode(query)))


class Follower:
    """Iterate to get every message of the followed room once, in order, across cuts.

    ``position``: start after this position (a token the app kept); None lets the
    server choose (its greeting gives the current one). ``min_delay`` and
    ``max_delay`` bound the reconnect backoff (full jitter: a random wait between
    0 and the current bound, which doubles after each failed attempt and resets
    once a connection delivers). Other keyword arguments go to ``connect``.
    """

    def __init__(
        self,
        url: str,
        *,
        position: str | None = None,
        min_delay: float = 0.05,
        max_delay: float = 5.0,
        **connect_options: Any,
    ) -> None:
        self.url = url
        self.position = position
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.connect_options = {"open_timeout": 10.0, **connect_options}
        #: Connections made (1 + reconnects).
        self.connections = 0
        self._ws: Any = None
        self._stopped = threading.Event()

    def __iter__(self) -> Iterator[Message]:
        delay = self.min_delay
        while not self._stopped.is_set():
            try:
                self._ws = connect(with_position(self.url, self.position), **self.connect_options)
            except (OSError, WebSocketError) as exc:
                logger.debug("resume: connect failed (%s); retrying", exc)
                self._stopped.wait(random.uniform(0, delay))
                delay = min(delay * 2, self.max_delay)
                continue
            self.connections += 1
            try:
                for frame in self._ws:
                    delay = self.min_delay
                    message = self._read(frame)
                    if message is not None:
                        yield message
            except ConnectionClosed as exc:
                if exc.code == GAP_CODE:
                    raise ResumeFailed(self.position, exc.reason) from None
                logger.debug("resume: connection lost (%s); resuming", exc)
            except OSError as exc:
                logger.debug("resume: connection lost (%s); resuming", exc)
            finally:
                self._close_socket()
            if self._ws is not None and getattr(self._ws, "close_code", None) == GAP_CODE:
                raise ResumeFailed(self.position, getattr(self._ws, "close_reason", ""))
            self._stopped.wait(random.uniform(0, delay))
            delay = min(delay * 2, self.max_delay)

    def _read(self, frame: str | bytes) -> Message | None:
        try:
            parsed = json.loads(frame)
        except ValueError:
            return Message(None, self.position, frame)  # not ours: pass it through
        if not isinstance(parsed, dict) or "pos" not in parsed:
            return Message(None, self.position, frame)
        self.position = str(parsed["pos"])
        if "data" in parsed:
            return Message(parsed.get("room"), self.position, parsed["data"])
        if "b64" in parsed:
            return Message(parsed.get("room"), self.position, base64.b64decode(parsed["b64"]))
        return None  # a greeting: only the position

    @property
    def connected(self) -> bool:
        """True while a connection is open (between a cut and the next connect: False)."""
        ws = self._ws
        return ws is not None and not ws.closed

    def cut(self) -> None:
        """Drop the current connection without a close handshake (as a network
        failure would); the iteration resumes on a new one."""
        ws = self._ws
        sock = getattr(ws, "_sock", None) if ws is not None else None
        if sock is not None:
            import socket

            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        """End the iteration (from another thread or greenlet)."""
        self._stopped.set()
        self._close_socket()

    def _close_socket(self) -> None:
        ws = self._ws
        if ws is not None:
            try:
                ws.close()
            except (OSError, WebSocketError):
                pass

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
