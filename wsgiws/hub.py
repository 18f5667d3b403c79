"""Rooms and broadcast: one message to many WebSockets, in one process or across many.

>>> hub = Hub()                                   # in-process: one worker
>>> hub = Hub.from_url(os.environ.get("WSGIWS_REDIS_URL"))   # Redis when set
>>> @sockets.route("/chat")
... def chat(ws):
...     hub.join(ws, "lobby")
...     for message in ws:
...         hub.send("lobby", message, exclude=ws)   # everyone in the room but the sender

A socket may be in many rooms and leaves them all when it closes. Sending
never blocks on a socket: each member has a bounded outgoing queue drained by
a sender greenlet (started only while the queue is non-empty), so a slow
receiver cannot stall the others; when its queue overflows the hub applies
its overflow policy (see :class:`Hub`). Where messages travel between
processes is the backend's business: :class:`LocalBackend` (the default) keeps
them in this process, :class:`wsgiws.backends.redis.RedisBackend` spreads them
over every worker of every server that uses the same Redis channel.

See ``docs/rooms.md`` for the backend interface and the delivery guarantees.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from . import metrics
from .exceptions import ConnectionClosed
from .protocol import CloseCode
from .websocket import WebSocket

__all__ = [
    "Backend",
    "Envelope",
    "Hub",
    "HubStats",
    "LocalBackend",
]

logger = logging.getLogger("wsgiws.hub")

Deliver = Callable[["Envelope"], None]
Overflow = Literal["close", "drop_oldest"]


@dataclass(frozen=True)
class Envelope:
    """One published message as it travels between hubs.

    ``room`` is None for a broadcast to everyone. ``exclude`` is the global id
    of a socket that must not receive it (the sender). ``publisher`` identifies
    the publishing hub process and ``seq`` numbers its messages 1, 2, 3...: a
    receiver drops an envelope whose ``seq`` it has already seen from that
    publisher, so a backend that delivers twice still delivers once.
    """

    room: str | None
    payload: str | bytes
    exclude: str | None
    publisher: str
    seq: int

    def encode(self) -> bytes:
        """Wire form: a one-line JSON header, ``\\n``, then the payload (UTF-8 for text)."""
        header = {"r": self.room, "x": self.exclude, "p": self.publisher, "s": self.seq}
        if isinstance(self.payload, str):
            body = self.payload.encode()
        else:
            header["b"] = 1
            body = self.payload
        return json.dumps(header, separators=(",", ":")).encode() + b"\n" + body

    @classmethod
    def decode(cls, data: bytes) -> Envelope:
        """Inverse of :meth:`encode`; raises ``ValueError`` on a malformed envelope."""
        head, sep, body = data.partition(b"\n")
        if not sep:
            raise ValueError("not a wsgiws envelope")
        header = json.loads(head)
        if not isinstance(header, dict) or not isinstance(header.get("s"), int):
            raise ValueError("not a wsgiws envelope")
        payload: str | bytes = bytes(body) if header.get("b") else body.decode()
        return cls(header.get("r"), payload, header.get("x"), str(header["p"]), header["s"])


class Backend(Protocol):
    """Carries envelopes between the hubs that share it (see ``docs/rooms.md``).

    - ``start(deliver)``: begin receiving; from now on call ``deliver(envelope)``
      for every envelope published by *another* hub (delivery to this hub's own
      sockets is done by the hub itself). Called once, lazily, when the first
      socket joins; a process that only publishes never starts receiving.
      ``deliver`` never blocks and may be called from any greenlet or thread.
    - ``publish(envelope)``: hand the envelope to every other hub, in the order
      of calls. Must not raise for an unreachable transport: log, count, drop.
    - ``close()``: stop receiving and release connections.
    """

    def start(self, deliver: Deliver) -> None: ...
    def publish(self, envelope: Envelope) -> None: ...
    def close(self) -> None: ...


class LocalBackend:
    """No transport: only this process's sockets exist. The default; needs nothing."""

    def start(self, deliver: Deliver) -> None:
        pass

    def publish(self, envelope: Envelope) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class HubStats:
    """Counters of one hub process (they only grow)."""

    published: int = 0  #: messages sent through this hub
    received: int = 0  #: envelopes from other processes accepted
    duplicates: int = 0  #: envelopes dropped as already seen
    delivered: int = 0  #: messages written to sockets
    send_failures: int = 0  #: sockets that failed while the hub wrote to them
    overflows: int = 0  #: queue overflows (socket closed or oldest message dropped)
    #: per-publisher sequence gaps seen (messages another process published that never came)
    gaps: int = 0


class _Member:
    """One socket's membership: its rooms and its outgoing queue."""

    __slots__ = ("evicted", "id", "queue", "rooms", "sending", "ws")

    def __init__(self, ws: WebSocket, member_id: str) -> None:
        self.ws = ws
        self.id = member_id
        self.rooms: set[str] = set()
        self.queue: deque[str | bytes] | None = None  # created on first message
        self.sending = False  # a sender greenlet is draining the queue
        self.evicted = False


class Hub:
    """Rooms of WebSockets, and messages sent to them.

    ``max_queue``: messages waiting for one socket before it counts as too slow
    (they are shared between members, so this bounds pointers, not copies).
    ``overflow``: what happens to a socket whose queue is full when another
    message arrives for it:

    - ``"close"`` (default): the socket is removed from the hub and closed with
      ``overflow_code`` (1013 "try again later" by default), reason
      ``"slow consumer"``; the messages queued for it are dropped. A client
      that reconnects gets a fresh start.
    - ``"drop_oldest"``: the oldest queued message is dropped for that socket
      only; it stays, and misses messages. For dashboards where only the latest
      state matters.

    A socket whose connection fails while the hub writes to it is removed
    quietly; the others are not affected.
    """

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        max_queue: int = 256,
        overflow: Overflow = "close",
        overflow_code: int = CloseCode.TRY_AGAIN_LATER,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        if overflow not in ("close", "drop_oldest"):
            raise ValueError(f"unknown overflow policy {overflow!r}")
        self.backend: Backend = backend if backend is not None else LocalBackend()
        self.max_queue = max_queue
        self.overflow = overflow
        self.overflow_code = overflow_code
        self.stats = HubStats()
        metrics.track_hub(self)  # deliveries and overflows in wsgiws.metrics
        self._lock = threading.Lock()  # never held across anything that blocks
        self._members: dict[WebSocket, _Member] = {}
        self._rooms: dict[str, dict[_Member, None]] = {}  # ordered sets
        self._by_id: dict[str, _Member] = {}
        self._seen: OrderedDict[str, int] = OrderedDict()  # publisher -> last seq
        self._pid = -1
        self._node = ""
        self._seq = 0
        self._counter = 0
        self._started = False

    @classmethod
    def from_url(cls, url: str | None, **options: object) -> Hub:
        """A hub on the backend ``url`` names: empty or None is in-process, ``redis://``,
        ``rediss://`` and ``unix://`` are Redis (needs the ``redis`` extra).

        Keyword arguments go to :class:`Hub`, except ``channel`` (Redis channel name).
        """
        channel = options.pop("channel", None)
        if not url:
            return cls(**options)  # type: ignore[arg-type]
        if url.startswith(("redis://", "rediss://", "unix://")):
            from .backends.redis import RedisBackend

            backend = RedisBackend(url, channel=str(channel or "wsgiws:hub"))
            return cls(backend, **options)  # type: ignore[arg-type]
        raise ValueError(f"no hub backend for {url!r}")

    # ------------------------------------------------------------- identity

    @property
    def node_id(self) -> str:
        """This process's publisher id (new after a fork: workers forked from a
        preloaded app each get their own)."""
        pid = os.getpid()
        if pid != self._pid:
            with self._lock:
                if pid != self._pid:
                    self._node = os.urandom(8).hex()
                    self._seq = 0
                    self._pid = pid
        return self._node

    def socket_id(self, ws: WebSocket) -> str | None:
        """The globally unique id the hub gave ``ws`` (None if it never joined)."""
        member = self._members.get(ws)
        return member.id if member is not None else None

    # ----------------------------------------------------------- membership

    def join(self, ws: WebSocket, *rooms: str) -> str:
        """Add ``ws`` to the hub and to ``rooms``; returns its global socket id.

        Joining with no room makes it a member that only broadcasts reach.
        Accepts the WebSocket if the handler has not yet. A closed socket joins
        nothing. The socket leaves every room when it closes.
        """
        if not ws.accepted:
            ws.accept()
        node = self.node_id
        new = False
        with self._lock:
            member = self._members.get(ws)
            if member is None:
                self._counter += 1
                member = _Member(ws, f"{node}.{self._counter}")
                self._members[ws] = member
                self._by_id[member.id] = member
                new = True
            for room in rooms:
                member.rooms.add(room)
                self._rooms.setdefault(room, {})[member] = None
        if new:
            ws.add_close_callback(self._closed)
        if not self._started:
            self._start()
        return member.id

    def leave(self, ws: WebSocket, *rooms: str) -> None:
        """Take ``ws`` out of ``rooms``; with no room, out of the hub altogether."""
        with self._lock:
            member = self._members.get(ws)
            if member is None:
                return
            if not rooms:
                self._remove(member, drop_queue=False)  # what was sent before still goes out
            else:
                for room in rooms:
                    member.rooms.discard(room)
                    self._discard_from_room(room, member)
        if not rooms:
            ws.remove_close_callback(self._closed)

    def rooms_of(self, ws: WebSocket) -> frozenset[str]:
        member = self._members.get(ws)
        return frozenset(member.rooms) if member is not None else frozenset()

    def members(self, room: str | None = None) -> list[WebSocket]:
        """This process's sockets in ``room`` (all members for None)."""
        with self._lock:
            if room is None:
                return list(self._members)
            return [m.ws for m in self._rooms.get(room, ())]

    def rooms(self) -> list[str]:
        """Rooms with at least one socket in this process."""
        return list(self._rooms)

    def _closed(self, ws: WebSocket) -> None:
        with self._lock:
            member = self._members.get(ws)
            if member is not None:
                self._remove(member)

    def _remove(self, member: _Member, *, drop_queue: bool = True) -> None:
        # The hub lock is held.
        self._members.pop(member.ws, None)
        self._by_id.pop(member.id, None)
        for room in member.rooms:
            self._discard_from_room(room, member)
        member.rooms = set()
        if drop_queue:
            member.evicted = True
            member.queue = None

    def _discard_from_room(self, room: str, member: _Member) -> None:
        sockets = self._rooms.get(room)
        if sockets is not None:
            sockets.pop(member, None)
            if not sockets:
                del self._rooms[room]

    # -------------------------------------------------------------- sending

    def send(
        self,
        room: str,
        message: str | bytes | bytearray | memoryview,
        *,
        exclude: WebSocket | str | None = None,
    ) -> None:
        """Send ``message`` to every socket in ``room``, on every process of the backend.

        ``exclude``: a socket (or its :meth:`socket_id`) that must not get it,
        typically the sender. Returns at once: no socket is waited for.
        """
        self._publish(room, message, exclude)

    def broadcast(
        self,
        message: str | bytes | bytearray | memoryview,
        *,
        exclude: WebSocket | str | None = None,
    ) -> None:
        """Send ``message`` to every member of the hub, on every process of the backend."""
        self._publish(None, message, exclude)

    def _publish(
        self,
        room: str | None,
        message: str | bytes | bytearray | memoryview,
        exclude: WebSocket | str | None,
    ) -> None:
        payload: str | bytes = message if isinstance(message, str) else bytes(message)
        if isinstance(exclude, WebSocket):
            member = self._members.get(exclude)
            exclude_id = member.id if member is not None else None
        else:
            exclude_id = exclude
        node = self.node_id
        with self._lock:
            self._seq += 1
            seq = self._seq
        self.stats.published += 1
        envelope = Envelope(room, payload, exclude_id, node, seq)
        self._deliver_local(envelope)  # our own sockets never depend on the backend
        self.backend.publish(envelope)

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        self.backend.start(self._receive)

    def _receive(self, envelope: Envelope) -> None:
        """An envelope from another process (the backend's ``deliver``)."""
        if envelope.publisher == self.node_id:
            return  # our own, already delivered
        with self._lock:
            seen = self._seen
            last = seen.pop(envelope.publisher, 0)
            seen[envelope.publisher] = max(last, envelope.seq)  # most recent last
            if len(seen) > 4096:
                seen.popitem(last=False)
        if envelope.seq <= last:
            self.stats.duplicates += 1
            return
        if last and envelope.seq != last + 1:
            self.stats.gaps += 1
        self.stats.received += 1
        self._deliver_local(envelope)

    def _deliver_local(self, envelope: Envelope) -> None:
        payload = envelope.payload
        exclude = envelope.exclude
        starting: list[_Member] = []
        overflowed: list[_Member] = []
        with self._lock:
            if envelope.room is None:
                targets: Iterable[_Member] = self._members.values()
            else:
                targets = self._rooms.get(envelope.room, ())
            limit = self.max_queue
            for member in targets:
                if member.id == exclude:
                    continue
                queue = member.queue
                if queue is None:
                    queue = member.queue = deque()
                elif len(queue) >= limit:
                    if self.overflow == "drop_oldest":
                        queue.popleft()
                        self.stats.overflows += 1
                    else:
                        overflowed.append(member)
                        continue
                queue.append(payload)
                if not member.sending:
                    member.sending = True
                    starting.append(member)
            for member in overflowed:
                self.stats.overflows += 1
                self._remove(member)
        for member in starting:
            self._spawn_sender(member)
        for member in overflowed:
            self._evict(member)

    def _spawn_sender(self, member: _Member) -> None:
        member.ws.spawn(lambda: self._drain(member))

    def _drain(self, member: _Member) -> None:
        """The sender greenlet: write the member's queue, then end."""
        ws = member.ws
        lock = self._lock
        while True:
            with lock:
                queue = member.queue
                if not queue or member.evicted:
                    member.sending = False
                    if queue is not None and not queue:
                        member.queue = None  # idle members hold no deque
                    return
                message = queue.popleft()
            try:
                ws.send(message)
            except (ConnectionClosed, OSError) as exc:
                self.stats.send_failures += 1
                logger.debug("hub: socket %s failed while sending: %s", member.id, exc)
                with lock:
                    member.sending = False
                    self._remove(member)
                return
            except Exception:
                logger.exception("hub: sending to socket %s failed", member.id)
                with lock:
                    member.sending = False
                    self._remove(member)
                return
            self.stats.delivered += 1

    def _evict(self, member: _Member) -> None:
        """Close a socket that fell ``max_queue`` messages behind (policy ``close``)."""
        ws = member.ws
        ws.remove_close_callback(self._closed)
        logger.info(
            "hub: socket %s (%s) is %d messages behind; closing it with %d",
            member.id,
            ws.path,
            self.max_queue,
            self.overflow_code,
        )
        code = self.overflow_code

        def close() -> None:
            try:
                ws.close(code, "slow consumer")
            except (ConnectionClosed, OSError):
                pass

        ws.spawn(close)

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop the backend (the sockets stay open; their handlers own them)."""
        self.backend.close()
        with self._lock:
            self._started = False

    def __repr__(self) -> str:
        return (
            f"<Hub {type(self.backend).__name__} {len(self._members)} sockets "
            f"in {len(self._rooms)} rooms>"
        )
