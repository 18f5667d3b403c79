"""Rooms and broadcast: one message to many WebSockets, in one process or across many.

>>> hub = Hub()                                   # in-process: one worker
>>> hub = Hub.from_url(os.environ.get("WSGIWS_REDIS_URL"))   # Redis when set
>>> @sockets.route("/chat")
... def chat(ws):
...     hub.join(ws, "lobby")
...     for message in ws:
...         hub.send("lobby", message, exclude=ws)   # everyone in the room but the sender

A socket may be in many rooms and leaves them all when it closes. Sending
never blocks on a socket. A message is framed once for all the sockets that
put the same bytes on the wire (see :class:`Hub`); what was published is
written as soon as the publisher yields (or after 64 messages, by the
publisher), each socket's messages in one write, to every socket that takes
them at once. Only a socket that would make the hub wait gets a bounded
outgoing queue, drained by a sender greenlet (started only while the queue is
non-empty, several messages a write), so a slow receiver cannot stall the
others; when its queue overflows the hub applies its overflow policy.

Where messages travel between processes is the backend's business:
:class:`LocalBackend` (the default) keeps them in this process,
:class:`wsgiws.backends.redis.RedisStreamsBackend` (what ``redis://`` URLs give)
and :class:`wsgiws.backends.redis.RedisBackend` (pub/sub) spread them over every
worker of every server on the same Redis.

With a backend that keeps history (in-process and Streams) every message of a
room has a :class:`Position`; ``join(ws, room, after=position)`` replays what a
returning client missed, then goes live, each message once, or raises
:class:`HistoryGap`. ``wire_format`` puts positions in the frames
(:func:`json_wire_format`); ``wsgiws.resume`` and ``wsgiws/static/wsgiws-rooms.js``
are the clients that resume. ``presence(room)`` lists members across processes.

See ``docs/rooms.md`` for the backend interface and the delivery guarantees.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field, replace
from typing import Final, Literal, Protocol

from . import metrics
from .deflate import PerMessageDeflate
from .exceptions import ConnectionClosed
from .protocol import CloseCode, FramedMessage, Role
from .websocket import WebSocket

__all__ = [
    "Backend",
    "Envelope",
    "HistoryGap",
    "Hub",
    "HubStats",
    "HubUnavailable",
    "LocalBackend",
    "Position",
    "json_wire_format",
]

logger = logging.getLogger("wsgiws.hub")

Deliver = Callable[["Envelope"], None]
Overflow = Literal["close", "drop_oldest"]
WireFormat = Callable[["Envelope"], "str | bytes"]

#: Envelope kinds: an app message, an order to close the room's sockets, presence events.
MESSAGE = "m"
CLOSE = "c"
JOINED = "j"
LEFT = "l"
#: Made by a backend (never published): messages of the room were lost for this process.
GAP = "g"
PresenceHook = Callable[[str, str, str, object], None]
#: What a member's queue holds: a message framed for many, or a payload its socket frames.
Outgoing = str | bytes | FramedMessage
#: The wire form of members whose frames nobody shares: a compression context of their own
#: (each payload depends on the messages before it), or a client's per-frame masking.
_OWN_FORM: Final = "own"
#: Most queued messages one sender writes at once (one vectored write when they fit).
_BATCH: Final = 64
#: No member's wire form: what a delivery's last form is before its first member.
_NO_FORM: Final = object()


@dataclass(frozen=True)
class Position:
    """Where a message sits in its room's history.

    ``epoch`` names one life of the history: a history that was lost and started
    again (Redis restarted without persistence, an in-process hub restarted) has
    another epoch, so an old position is never taken for a place in the new one.
    ``offset`` is ``"<int>-<int>"`` (a Redis stream id; ``"0-n"`` in process),
    increasing within an epoch. :attr:`token` is the form to give clients.
    """

    epoch: str
    offset: str

    @property
    def token(self) -> str:
        return f"{self.epoch}:{self.offset}"

    @property
    def key(self) -> tuple[int, int]:
        """The offset as a comparable pair."""
        high, _, low = self.offset.partition("-")
        return int(high), int(low or 0)

    @classmethod
    def parse(cls, token: str | Position) -> Position:
        """A position from its token; ``ValueError`` when malformed."""
        if isinstance(token, Position):
            return token
        epoch, sep, offset = str(token).rpartition(":")
        high, dash, low = offset.partition("-")
        if not sep or not epoch or not dash or not high.isdigit() or not low.isdigit():
            raise ValueError(f"not a hub position: {token!r}")
        return cls(epoch, offset)

    def __str__(self) -> str:
        return self.token


def json_wire_format(envelope: Envelope) -> str:
    """A ready-made ``wire_format``: ``{"room": r, "pos": token, "data": payload}`` as
    JSON text (a binary payload goes base64 in ``"b64"`` instead of ``"data"``).
    What ``wsgiws.resume`` and ``wsgiws-rooms.js`` read by default."""
    frame: dict[str, object] = {"room": envelope.room}
    if envelope.position is not None:
        frame["pos"] = envelope.position.token
    if isinstance(envelope.payload, str):
        frame["data"] = envelope.payload
    else:
        import base64

        frame["b64"] = base64.b64encode(envelope.payload).decode()
    return json.dumps(frame, separators=(",", ":"))


class HistoryGap(Exception):
    """The messages after ``position`` in ``room`` cannot all be replayed.

    ``reason`` is ``"epoch"`` (the history was reset: the position belongs to a
    history that no longer exists), ``"trimmed"`` (messages after the position
    already left the bounded history) or ``"no history"`` (the backend keeps
    none). The socket was not joined to the room: the app resynchronises the
    client (from its database, or by telling the user), then joins it afresh.
    """

    def __init__(self, room: str, position: Position | None, reason: str) -> None:
        super().__init__(f"room {room!r}: cannot resume after {position}: {reason}")
        self.room = room
        self.position = position
        self.reason = reason


class HubUnavailable(Exception):
    """The backend cannot take the message: its transport is down and the bounded
    buffer of messages waiting for it is full."""


@dataclass(frozen=True)
class Envelope:
    """One published message as it travels between hubs.

    ``room`` is None for a broadcast to everyone. ``exclude`` is the global id
    of a socket that must not receive it (the sender). ``publisher`` identifies
    the publishing hub process and ``seq`` numbers its messages 1, 2, 3...: a
    receiver drops an envelope whose ``seq`` it has already seen from that
    publisher, so a backend that delivers twice still delivers once. ``kind``
    is :data:`MESSAGE` or :data:`CLOSE` (``payload`` then holds the close code
    and reason). ``position`` is set by a backend with history when it delivers
    the envelope (it is not part of the wire form).
    """

    room: str | None
    payload: str | bytes
    exclude: str | None
    publisher: str
    seq: int
    kind: str = MESSAGE
    position: Position | None = field(default=None, compare=False)

    def encode(self) -> bytes:
        """Wire form: a one-line JSON header, ``\\n``, then the payload (UTF-8 for text)."""
        header: dict[str, object] = {
            "r": self.room,
            "x": self.exclude,
            "p": self.publisher,
            "s": self.seq,
        }
        if self.kind != MESSAGE:
            header["k"] = self.kind
        if isinstance(self.payload, str):
            body = self.payload.encode()
        else:
            header["b"] = 1
            body = self.payload
        return json.dumps(header, separators=(",", ":")).encode() + b"\n" + body

    @classmethod
    def decode(cls, data: bytes, position: Position | None = None) -> Envelope:
        """Inverse of :meth:`encode`; raises ``ValueError`` on a malformed envelope."""
        head, sep, body = data.partition(b"\n")
        if not sep:
            raise ValueError("not a wsgiws envelope")
        header = json.loads(head)
        if not isinstance(header, dict) or not isinstance(header.get("s"), int):
            raise ValueError("not a wsgiws envelope")
        payload: str | bytes = bytes(body) if header.get("b") else body.decode()
        return cls(
            header.get("r"),
            payload,
            header.get("x"),
            str(header["p"]),
            header["s"],
            str(header.get("k", MESSAGE)),
            position,
        )


class Backend(Protocol):
    """Carries envelopes between the hubs that share it (see ``docs/rooms.md``).

    - ``history``: False for a fire-and-forget transport (the hub delivers to its
      own sockets itself and the backend brings only the others' envelopes);
      True for a backend with history, which delivers *every* envelope of a
      watched room, this process's own included, in the room's order and with
      its :class:`Position`, and answers ``head`` and ``replay``.
    - ``per_room_order`` (optional, default False): True for a fire-and-forget
      transport that keeps a publisher's order within each room only (one
      channel per room, as sharded pub/sub on a cluster); the hub then drops
      repeats per publisher and room, and cannot count gaps.
    - ``start(deliver)``: begin receiving; from now on call ``deliver(envelope)``.
      Called once, lazily, when the first socket joins; a process that only
      publishes never starts receiving. ``deliver`` never blocks and may be
      called from any greenlet or thread.
    - ``publish(envelope)``: hand the envelope on, in the order of calls. Never
      raises for a transport that is down, except :class:`HubUnavailable` when
      a bounded buffer of waiting messages is full.
    - ``watch(room, start)`` / ``unwatch(room)``: this process has members in
      ``room`` from now on (deliver its messages after ``start``, the room's
      ``head`` taken before) / no longer. ``unwatch`` must not block.
    - ``head(room)``: the position of the room's last message (offset ``0-0``
      for none), creating the room's epoch if it has none.
    - ``replay(room, after)``: the room's messages after ``after``, oldest first;
      raises :class:`HistoryGap` if some of them are gone.
    - ``present(room, member_id, info)`` / ``absent(room, member_id)``: record
      that a member with app ``info`` is in / left ``room`` (may block);
      ``presence(room)`` returns ``({member_id: info} of live members, [ids of
      members whose process died, now removed])`` across every process.
    - ``close()``: stop receiving and release connections.
    """

    history: bool

    def start(self, deliver: Deliver) -> None: ...
    def publish(self, envelope: Envelope) -> None: ...
    def watch(self, room: str, start: Position | None) -> None: ...
    def unwatch(self, room: str) -> None: ...
    def head(self, room: str) -> Position | None: ...
    def replay(self, room: str, after: Position) -> list[Envelope]: ...
    def present(self, room: str, member_id: str, info: object) -> None: ...
    def absent(self, room: str, member_id: str) -> None: ...
    def presence(self, room: str) -> tuple[dict[str, object], list[str]]: ...
    def close(self) -> None: ...


class LocalBackend:
    """No transport: only this process's sockets exist. The default; needs nothing.

    Keeps each room's last ``history`` messages, for at most ``history_age``
    seconds (None: no age limit), in memory: a client that reconnects to this
    process resumes from its last position. The epoch is new in every process,
    so a position from before a restart is reported as a reset history.
    """

    history = True

    # A room's record (its counter: the positions) stays when its messages age out, so that
    # a client whose last message aged out with nothing after it resumes without a false gap.

    def __init__(self, history: int = 1000, history_age: float | None = 600.0) -> None:
        if history < 1:
            raise ValueError("history must be at least 1")
        self.max_history = history
        self.history_age = history_age
        self.epoch = os.urandom(4).hex()
        self._deliver: Deliver | None = None
        # Reentrant: delivery runs under it, and an on_presence hook may publish.
        self._lock = threading.RLock()
        self._rooms: dict[str, _LocalRoom] = {}
        self._present: dict[str, dict[str, object]] = {}

    def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def publish(self, envelope: Envelope) -> None:
        room = envelope.room
        now = time.monotonic()
        # Delivered under the lock: publishers in two threads would otherwise hand the
        # hub a room's positions out of order (and it drops what looks older as seen).
        with self._lock:
            if room is None:
                positioned = envelope
            else:
                history = self._rooms.get(room)
                if history is None:
                    history = self._rooms[room] = _LocalRoom()
                history.added += 1
                positioned = replace(envelope, position=Position(self.epoch, f"0-{history.added}"))
                if envelope.kind == MESSAGE:
                    history.entries.append((now, positioned))
                    self._trim(history, now)
            deliver = self._deliver
            if deliver is not None:
                deliver(positioned)

    def _trim(self, history: _LocalRoom, now: float) -> None:
        entries = history.entries
        age = self.history_age
        while entries and (
            len(entries) > self.max_history or (age is not None and now - entries[0][0] > age)
        ):
            _, gone = entries.popleft()
            assert gone.position is not None
            history.trimmed = gone.position.key

    def watch(self, room: str, start: Position | None) -> None:
        pass

    def unwatch(self, room: str) -> None:
        pass

    def head(self, room: str) -> Position:
        with self._lock:
            history = self._rooms.get(room)
            if history is None:
                history = self._rooms[room] = _LocalRoom()
            return Position(self.epoch, f"0-{history.added}")

    def replay(self, room: str, after: Position) -> list[Envelope]:
        with self._lock:
            history = self._rooms.get(room)
            if after.epoch != self.epoch or history is None:
                raise HistoryGap(room, after, "epoch")  # from another life of this process
            self._trim(history, time.monotonic())
            key = after.key
            if history.trimmed > key:
                raise HistoryGap(room, after, "trimmed")
            return [
                e for _, e in history.entries if e.position is not None and e.position.key > key
            ]

    def present(self, room: str, member_id: str, info: object) -> None:
        with self._lock:
            self._present.setdefault(room, {})[member_id] = info

    def absent(self, room: str, member_id: str) -> None:
        with self._lock:
            members = self._present.get(room)
            if members is not None:
                members.pop(member_id, None)
                if not members:
                    del self._present[room]

    def presence(self, room: str) -> tuple[dict[str, object], list[str]]:
        with self._lock:
            return dict(self._present.get(room, {})), []  # one process: nobody dies alone

    def close(self) -> None:
        self._deliver = None


class _LocalRoom:
    __slots__ = ("added", "entries", "trimmed")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, Envelope]] = deque()
        self.added = 0
        self.trimmed: tuple[int, int] = (0, 0)  # key of the newest message trimmed away


@dataclass
class HubStats:
    """Counters of one hub process (they only grow)."""

    published: int = 0  #: messages sent through this hub
    received: int = 0  #: envelopes from other processes accepted
    duplicates: int = 0  #: envelopes dropped as already seen
    #: messages the sockets took (written, or the part the socket could not take yet
    #: held by the connection to go out before anything else)
    delivered: int = 0
    send_failures: int = 0  #: sockets that failed while the hub wrote to them
    overflows: int = 0  #: queue overflows (socket closed or oldest message dropped)
    #: per-publisher sequence gaps seen (messages another process published that never came)
    gaps: int = 0
    replayed: int = 0  #: messages replayed to resuming sockets


class _Member:
    """One socket's membership: its rooms and its outgoing queue."""

    __slots__ = (
        "evicted",
        "form",
        "holding",
        "id",
        "info",
        "pending",
        "queue",
        "rooms",
        "seam",
        "sending",
        "slack",
        "ws",
    )

    def __init__(self, ws: WebSocket, member_id: str, form: Hashable) -> None:
        self.ws = ws
        self.id = member_id
        self.form = form  # its wire form: members of one form get the same frame bytes
        self.rooms: set[str] = set()
        self.queue: deque[Outgoing] | None = None  # created on first message
        self.sending = False  # a sender greenlet is draining the queue
        # Delivered since the hub's last flush, not written yet: one message, or a list of
        # them in a burst (no container while there is one: a gentle rate allocates nothing).
        self.pending: Outgoing | list[Outgoing] | None = None
        self.evicted = False
        # While a resume replays a room's history: the live envelopes that arrive meanwhile.
        self.holding: dict[str, list[Envelope]] | None = None
        # After a resume: the last replayed position per room; live messages up to it are skipped.
        self.seam: dict[str, tuple[int, int]] | None = None
        # Queue room granted to a replay on top of max_queue (shrinks as the queue drains):
        # a resume may owe a whole history, which is no sign of a slow consumer.
        self.slack = 0
        self.info: object = None  # app info for presence; None: not announced


class Hub:
    """Rooms of WebSockets, and messages sent to them.

    ``max_queue``: messages waiting for one socket before it counts as too slow
    (they are shared between members, so this bounds pointers, not copies).
    ``overflow``: what happens to a socket whose queue is full when another
    message arrives for it:

    - ``"close"`` (default): the socket is removed from the hub and closed with
      ``overflow_code`` (1013 "try again later" by default), reason
      ``"slow consumer"``; the messages queued for it are dropped. A client
      that reconnects resumes from its last position.
    - ``"drop_oldest"``: the oldest queued message is dropped for that socket
      only; it stays, and misses messages. For dashboards where only the latest
      state matters.

    ``wire_format(envelope) -> str | bytes``: what a socket receives for a
    message, called once per message and process; None sends the payload as it
    was published. With a backend that keeps history ``envelope.position`` is
    set: put ``envelope.position.token`` in the frame so the client can resume.

    ``on_presence(room, event, member_id, info)``: called in every process with
    members in ``room`` when a member joined with ``info`` (``event`` is
    ``"join"``) or left it (``"leave"``; also for a member whose process died,
    found by :meth:`presence`). E.g. send "alice joined" to the local sockets.

    ``reset_code``: when a room's history is found reset under live sockets
    (Redis lost it), its members here are closed with this code (1012 "service
    restart"), so that their clients reconnect and learn of the gap on resume.

    A socket whose connection fails while the hub writes to it is removed
    quietly; the others are not affected.

    A message is framed once per wire form and its bytes are shared: every
    uncompressed socket gets the same frame (server frames are unmasked), every
    socket that compresses each message on its own (``server_no_context_takeover``
    negotiated) with the same settings the same compressed one; a socket with a
    compression context of its own gets the payload and compresses it itself.
    """

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        max_queue: int = 256,
        overflow: Overflow = "close",
        overflow_code: int = CloseCode.TRY_AGAIN_LATER,
        wire_format: WireFormat | None = None,
        reset_code: int = CloseCode.SERVICE_RESTART,
        on_presence: PresenceHook | None = None,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        if overflow not in ("close", "drop_oldest"):
            raise ValueError(f"unknown overflow policy {overflow!r}")
        self.backend: Backend = backend if backend is not None else LocalBackend()
        self.max_queue = max_queue
        self.overflow = overflow
        self.overflow_code = overflow_code
        self.wire_format = wire_format
        self.reset_code = reset_code
        self.on_presence = on_presence
        self.stats = HubStats()
        metrics.track_hub(self)  # deliveries and overflows in wsgiws.metrics
        self._history = bool(getattr(self.backend, "history", False))
        self._per_room_order = bool(getattr(self.backend, "per_room_order", False))
        self._lock = threading.Lock()  # never held across anything that blocks
        self._members: dict[WebSocket, _Member] = {}
        self._rooms: dict[str, dict[_Member, None]] = {}  # ordered sets
        self._watched: set[str] = set()  # rooms the backend delivers to us
        self._by_id: dict[str, _Member] = {}
        self._encoders: dict[Hashable, PerMessageDeflate] = {}  # shared wire form -> encoder
        # Members with messages pending since the last flush; how many messages were
        # published since; whether a flush is scheduled; after how many one runs at once.
        self._unflushed: list[_Member] = []
        self._unflushed_messages = 0
        self._flush_scheduled = False
        self._flush_after = min(_BATCH, max_queue)  # a refused batch fits the empty queue
        # When this run of the publishers began (its first message; the scheduled flush
        # ends it), when the last run ended, and how long it kept the hub busy: whether a
        # run's first message is written through (see _deliver_local).
        self._clock: Callable[[], float] = time.monotonic
        self._run_start = 0.0
        self._idle_since = float("-inf")
        self._busy = 0.0
        self._seen: OrderedDict[str, int] = OrderedDict()  # publisher -> last seq
        self._last: dict[str, Position] = {}  # room -> last position delivered here
        self._pid = -1
        self._node = ""
        self._seq = 0
        self._counter = 0
        self._started = False

    @classmethod
    def from_url(cls, url: str | None, **options: object) -> Hub:
        """A hub on the backend ``url`` names: empty or None is in-process, ``redis://``,
        ``rediss://`` and ``unix://`` are Redis (needs the ``redis`` extra),
        ``redis+cluster://host:port,host:port/0`` a Redis Cluster.

        Redis options: ``transport="streams"`` (default: history, recovery,
        each process reads only its rooms) or ``"pubsub"`` (at most once, no
        history); ``prefix`` (streams key prefix) or ``channel`` (pub/sub channel);
        ``history`` and ``history_age`` (both); ``presence_ttl`` and ``max_outbox``
        (streams; ignored in process). Other keyword arguments go to :class:`Hub`.
        """
        transport = str(options.pop("transport", "streams"))
        channel = options.pop("channel", None)
        prefix = options.pop("prefix", None)
        bounds = {k: options.pop(k) for k in ("history", "history_age") if k in options}
        redis_only = {k: options.pop(k) for k in ("presence_ttl", "max_outbox") if k in options}
        if not url:
            return cls(LocalBackend(**bounds), **options)  # type: ignore[arg-type]
        if url.startswith(
            ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
        ):
            from .backends import redis as redis_backends

            backend: Backend
            if transport == "pubsub":
                backend = redis_backends.RedisBackend(url, channel=str(channel or "wsgiws:hub"))
            elif transport == "streams":
                backend = redis_backends.RedisStreamsBackend(
                    url,
                    prefix=str(prefix or "wsgiws"),
                    **bounds,  # type: ignore[arg-type]
                    **redis_only,  # type: ignore[arg-type]
                )
            else:
                raise ValueError(f"unknown Redis transport {transport!r}")
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

    def join(
        self,
        ws: WebSocket,
        *rooms: str,
        after: str | Position | None = None,
        info: object = None,
    ) -> str:
        """Add ``ws`` to the hub and to ``rooms``; returns its global socket id.

        ``after``: the position (token) of the last message the client saw in
        the one room given: the socket first gets every message of the room
        after it, then the live ones, each once, in order. If that history is
        gone, :class:`HistoryGap` is raised and the socket is not in the room.

        ``info`` (JSON-serialisable, e.g. ``{"name": "alice"}``): the socket is
        listed by :meth:`presence` in these rooms on every process, and
        ``on_presence`` hooks hear of its joining and leaving.

        Joining with no room makes it a member that only broadcasts reach.
        Accepts the WebSocket if the handler has not yet. The socket leaves
        every room when it closes.
        """
        resume: Position | None = None
        if after is not None:
            if len(rooms) != 1:
                raise ValueError("join(after=...) takes exactly one room")
            if not self._history:
                raise HistoryGap(rooms[0], None, "no history")
            resume = Position.parse(after)
        if not ws.accepted:
            ws.accept()
        node = self.node_id
        new = False
        if not self._started:
            self._start()
        with self._lock:
            member = self._members.get(ws)
            if member is None:
                self._counter += 1
                member = _Member(ws, f"{node}.{self._counter}", self._wire_form(ws))
                self._members[ws] = member
                self._by_id[member.id] = member
                new = True
            for room in rooms:
                if room in member.rooms:
                    resume = None  # already live in it: nothing to catch up
                elif resume is not None:
                    if member.holding is None:
                        member.holding = {}
                    member.holding[room] = []
                member.rooms.add(room)
                self._rooms.setdefault(room, {})[member] = None
        if new:
            ws.add_close_callback(self._closed)
        self._watch(rooms)  # after the membership: a leave meanwhile cannot unwatch it under us
        if resume is not None:
            self._resume(member, rooms[0], resume)
        if info is not None and rooms:
            member.info = info
            self._announce(JOINED, rooms, member.id, info)
        return member.id

    def _announce(self, kind: str, rooms: Iterable[str], member_id: str, info: object) -> None:
        for room in rooms:
            if kind == JOINED:
                self.backend.present(room, member_id, info)
            else:
                self.backend.absent(room, member_id)
            payload = json.dumps({"id": member_id, "info": info})
            self._publish(room, payload, None, kind)

    def _departed(self, member: _Member, rooms: Iterable[str]) -> None:
        # The hub lock is held: the presence records are updated by a greenlet of their own.
        if member.info is None:
            return
        gone = list(rooms)
        if not gone or not member.ws.accepted:
            return
        info = member.info

        def announce() -> None:
            try:
                self._announce(LEFT, gone, member.id, info)
            except Exception:
                logger.exception("hub: recording that socket %s left failed", member.id)

        member.ws.spawn(announce)

    def presence(self, room: str) -> dict[str, object]:
        """Who is in ``room`` on every process: ``{socket_id: info}`` of the sockets
        that joined it with ``info``. Entries of a process that died disappear
        within the backend's presence ttl (Redis: 15 s) and are announced as left."""
        alive, dead = self.backend.presence(room)
        for member_id in dead:
            self._publish(room, json.dumps({"id": member_id, "info": None}), None, LEFT)
        return alive

    def _watch(self, rooms: Iterable[str]) -> None:
        """Have the backend deliver these rooms to this process (history backends
        read only rooms with members here)."""
        for room in rooms:
            if room in self._watched:
                continue
            start = self.backend.head(room) if self._history else None
            with self._lock:
                if room in self._watched or room not in self._rooms:
                    continue  # watched by another join, or its members left meanwhile
                self._watched.add(room)
                if start is not None:
                    self._last.setdefault(room, start)  # its epoch: a reset is seen as one
            self.backend.watch(room, start)

    def _resume(self, member: _Member, room: str, after: Position) -> None:
        try:
            missed = self.backend.replay(room, after)
        except BaseException:  # a gap, or Redis unreachable: never keep holding for it
            with self._lock:
                if member.holding is not None:
                    member.holding.pop(room, None)
                    if not member.holding:
                        member.holding = None
                member.rooms.discard(room)
                self._discard_from_room(room, member)
            raise
        with self._lock:
            held = member.holding.pop(room, []) if member.holding is not None else []
            if not member.holding:
                member.holding = None
            if member.evicted or room not in member.rooms:
                return  # closed or left while the history was read
            last = after.key
            member.slack += len(missed) + len(held)
            for envelope in missed:
                last = self._enqueue_positioned(member, envelope, last)
            for envelope in held:
                last = self._enqueue_positioned(member, envelope, last)
            if member.seam is None:
                member.seam = {}
            member.seam[room] = last
            self.stats.replayed += len(missed)
        self._kick(member)

    def _enqueue_positioned(
        self, member: _Member, envelope: Envelope, last: tuple[int, int]
    ) -> tuple[int, int]:
        # The hub lock is held. Queues one replayed or held envelope past ``last``.
        position = envelope.position
        if position is None or position.key <= last:
            return last
        if envelope.kind == MESSAGE and envelope.exclude != member.id:
            self._append(member, self._prepare(member.form, self._frame(envelope)))
        return position.key

    def position(self, room: str) -> str | None:
        """The token of the last message in ``room`` (None without history): what
        a client that joins now and has seen nothing resumes from."""
        if not self._history:
            return None
        head = self.backend.head(room)
        return head.token if head is not None else None

    def leave(self, ws: WebSocket, *rooms: str) -> None:
        """Take ``ws`` out of ``rooms``; with no room, out of the hub altogether."""
        with self._lock:
            member = self._members.get(ws)
            if member is None:
                return
            if not rooms:
                self._remove(member, drop_queue=False)  # what was sent before still goes out
            else:
                left = [room for room in rooms if room in member.rooms]
                for room in left:
                    member.rooms.discard(room)
                    self._discard_from_room(room, member)
                self._departed(member, left)
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
        self._departed(member, member.rooms)
        member.rooms = set()
        member.holding = None
        if drop_queue:
            member.evicted = True
            member.queue = None
            member.pending = None

    def _discard_from_room(self, room: str, member: _Member) -> None:
        # The hub lock is held.
        if member.seam is not None:
            member.seam.pop(room, None)
        sockets = self._rooms.get(room)
        if sockets is not None:
            sockets.pop(member, None)
            if not sockets:
                del self._rooms[room]
                if room in self._watched:
                    self._watched.discard(room)
                    self._last.pop(room, None)
                    self.backend.unwatch(room)

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

    def close_room(
        self, room: str, code: int = CloseCode.POLICY_VIOLATION, reason: str = ""
    ) -> None:
        """Close every socket in ``room``, on every process of the backend, with
        ``code`` and ``reason``. E.g. log a user out everywhere: join each of the
        user's sockets to ``"user:<id>"`` and close that room."""
        self._publish(room, json.dumps({"code": code, "reason": reason}), None, CLOSE)

    def _publish(
        self,
        room: str | None,
        message: str | bytes | bytearray | memoryview,
        exclude: WebSocket | str | None,
        kind: str = MESSAGE,
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
        envelope = Envelope(room, payload, exclude_id, node, seq, kind)
        if self._history:
            self.backend.publish(envelope)  # comes back to us with its position, in order
        else:
            self._deliver_local(envelope)  # our own sockets never depend on the backend
            self.backend.publish(envelope)
        self.stats.published += 1

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        self.backend.start(self._receive)

    def _receive(self, envelope: Envelope) -> None:
        """An envelope from the backend (its ``deliver``)."""
        if self._history:
            self._receive_positioned(envelope)
            return
        if envelope.publisher == self.node_id:
            return  # our own, already delivered
        source = envelope.publisher
        if self._per_room_order:  # its rooms arrive in any order: their seqs interleave
            source = f"{source} {envelope.room}"
        with self._lock:
            seen = self._seen
            last = seen.pop(source, 0)
            seen[source] = max(last, envelope.seq)  # most recent last
            if len(seen) > 4096:
                seen.popitem(last=False)
        if envelope.seq <= last:
            self.stats.duplicates += 1
            return
        if last and envelope.seq != last + 1 and not self._per_room_order:
            self.stats.gaps += 1
        self.stats.received += 1
        self._deliver_local(envelope)

    def _receive_positioned(self, envelope: Envelope) -> None:
        room, position = envelope.room, envelope.position
        if room is not None and position is not None:
            with self._lock:
                last = self._last.get(room)
                if last is not None and last.epoch == position.epoch and position.key <= last.key:
                    self.stats.duplicates += 1
                    return
                self._last[room] = position
            if last is not None and last.epoch != position.epoch:
                self.stats.gaps += 1
                logger.warning(
                    "hub: the history of room %r was reset (epoch %s, now %s): closing its "
                    "sockets here with %d so that their clients resynchronise",
                    room,
                    last.epoch,
                    position.epoch,
                    self.reset_code,
                )
                self._close_members(room, self.reset_code, "history reset")
                return
        self.stats.received += 1
        self._deliver_local(envelope)

    def _frame(self, envelope: Envelope) -> str | bytes:
        wire_format = self.wire_format
        return envelope.payload if wire_format is None else wire_format(envelope)

    def _wire_form(self, ws: WebSocket) -> Hashable:
        """Which members get the same frame bytes as ``ws`` (the hub lock is held): None
        for no compression, the compression settings when each message is compressed
        on its own, :data:`_OWN_FORM` when no other socket's bytes can be its."""
        extension = ws.extension
        if ws.role is not Role.SERVER:
            return _OWN_FORM
        if extension is None:
            return None
        if isinstance(extension, PerMessageDeflate):
            shared = extension.shared_encoding
            if shared is not None:
                if shared not in self._encoders:
                    self._encoders[shared] = extension.shared_encoder()
                return shared
        return _OWN_FORM

    def _prepare(self, form: Hashable, payload: str | bytes) -> Outgoing:
        """``payload`` as members of wire ``form`` are sent it (the hub lock is held)."""
        if form is _OWN_FORM:
            return payload
        return FramedMessage.frame(payload, None if form is None else self._encoders[form])

    def _deliver_local(self, envelope: Envelope) -> None:
        if envelope.kind == CLOSE:
            self._close_order(envelope)
            return
        if envelope.kind in (JOINED, LEFT):
            self._presence_event(envelope)
            return
        if envelope.kind == GAP and envelope.room is not None:
            logger.warning(
                "hub: messages of room %r were lost for this process (trimmed before its "
                "reader got to them): closing its sockets here with %d so that they resume",
                envelope.room,
                self.reset_code,
            )
            self.stats.gaps += 1
            self._close_members(envelope.room, self.reset_code, "history gap")
            return
        exclude = envelope.exclude
        payload: str | bytes | None = None
        prepared: dict[Hashable, tuple[Outgoing, ...]] = {}  # wire form -> (the message in it,)
        form: Hashable = _NO_FORM  # the last member's form, and the message in that form
        single: tuple[Outgoing, ...] = ()
        overflowed: list[_Member] = []
        starting: list[_Member] = []
        delivered = 0
        room = envelope.room
        last: _Member | None = None
        with self._lock:
            if room is None:
                targets: Iterable[_Member] = self._members.values()
            else:
                targets = self._rooms.get(room, ())
            unflushed = self._unflushed
            # The first message since the publishers last yielded is written at once, from
            # here, to every socket that takes it now: no second pass, no wait for a flush.
            # The ones after it in the same run are batched (one write per socket for a
            # whole burst), until the flush that the run arranges below. But only while the
            # hub idles longer between runs than a run keeps it busy: busier than that,
            # messages come in runs of one or two (a broker's reader gets them as they are
            # published), and batching every run's first one too saves a write per socket.
            if self._flush_scheduled:
                write_now = False
            else:
                now = self._run_start = self._clock()
                write_now = not unflushed and now - self._idle_since > self._busy
            for member in targets:
                if exclude is not None and member.id == exclude:
                    continue
                if room is not None:
                    if member.holding is not None and room in member.holding:
                        member.holding[room].append(envelope)  # its resume is replaying
                        continue
                    if member.seam is not None and room in member.seam:
                        assert envelope.position is not None
                        if envelope.position.key <= member.seam[room]:
                            continue  # the replay already gave it
                        del member.seam[room]
                last = member
                if member.form is not form:  # (members mostly share one: no lookup for them)
                    form = member.form
                    if payload is None:
                        payload = self._frame(envelope)
                    if form in prepared:
                        single = prepared[form]
                    else:
                        single = prepared[form] = (self._prepare(form, payload),)
                pending = member.pending
                if pending is not None:  # older than anything queued after it
                    if isinstance(pending, list):
                        pending.append(single[0])
                    else:
                        member.pending = [pending, single[0]]
                elif member.sending or member.queue:
                    if not self._append(member, single[0]):
                        overflowed.append(member)
                elif write_now:
                    # try_send neither blocks nor yields (observers included): no delivery
                    # runs meanwhile, so holding the hub lock here delays nobody.
                    try:
                        taken = member.ws.try_send(single)
                    except Exception:
                        taken = False  # its sender meets the error again, and reports it
                    if taken:
                        delivered += 1
                    else:
                        member.queue = deque(single)
                        member.sending = True
                        starting.append(member)
                else:
                    member.pending = single[0]
                    unflushed.append(member)
            for member in overflowed:
                self.stats.overflows += 1
                self._remove(member)
            if write_now:
                flush_now = False
            else:
                self._unflushed_messages += 1
                flush_now = self._unflushed_messages >= self._flush_after
            # The scheduled flush ends this run of the publishers: see above.
            schedule = last is not None and not self._flush_scheduled
            if schedule:
                self._flush_scheduled = True
        self.stats.delivered += delivered
        if flush_now:
            self._flush()
        if schedule:
            assert last is not None
            try:
                last.ws.spawn(self._scheduled_flush)
            except Exception:  # no thread to be had (thread mode, out of resources): end it here
                self._scheduled_flush()
        for member in starting:
            self._spawn_sender(member)
        for member in overflowed:
            self._evict(member)

    def _scheduled_flush(self) -> None:
        with self._lock:
            self._flush_scheduled = False
        self._flush()
        end = self._clock()
        self._busy, self._idle_since = end - self._run_start, end

    def _flush(self) -> None:
        """Write what is pending since the last flush, each member's messages in one write,
        to every socket that takes them at once; the others get them queued, and a sender.

        Runs once the publisher yields (a burst of messages goes out in a few writes per
        socket instead of one each), or in the publisher after ``_flush_after`` messages.
        """
        starting: list[_Member] = []
        overflowed: list[_Member] = []
        delivered = 0
        with self._lock:
            members, self._unflushed = self._unflushed, []
            self._unflushed_messages = 0
            for member in members:
                pending, member.pending = member.pending, None
                if pending is None or member.evicted:
                    continue
                batch = pending if isinstance(pending, list) else (pending,)
                if member.sending or member.queue:  # a resume's sender took over meanwhile
                    if not all(self._append(member, message) for message in batch):
                        overflowed.append(member)
                    continue
                # try_send neither blocks nor yields (observers included): no delivery
                # runs meanwhile, so holding the hub lock here delays nobody.
                try:
                    taken = member.ws.try_send(batch)
                except Exception:
                    taken = False  # its sender meets the error again, and reports it
                if taken:
                    delivered += len(batch)
                else:
                    member.queue = deque(batch)
                    member.sending = True
                    starting.append(member)
            for member in overflowed:
                self.stats.overflows += 1
                self._remove(member)
        self.stats.delivered += delivered
        for member in starting:
            self._spawn_sender(member)
        for member in overflowed:
            self._evict(member)

    def _append(self, member: _Member, message: Outgoing) -> bool:
        """Queue ``message`` for ``member`` (hub lock held); False if it overflowed
        under the ``close`` policy."""
        queue = member.queue
        if queue is None:
            queue = member.queue = deque()
        elif len(queue) >= self.max_queue + member.slack:
            if self.overflow != "drop_oldest":
                return False
            queue.popleft()
            self.stats.overflows += 1
        queue.append(message)
        return True

    def _kick(self, member: _Member) -> None:
        """Start ``member``'s sender if something waits and none runs."""
        with self._lock:
            if member.sending or not member.queue or member.evicted:
                return
            member.sending = True
        self._spawn_sender(member)

    def _close_order(self, envelope: Envelope) -> None:
        try:
            order = json.loads(envelope.payload)
            code, reason = int(order["code"]), str(order.get("reason", ""))
        except (ValueError, TypeError, KeyError):
            logger.warning("hub: ignoring a malformed close order for room %r", envelope.room)
            return
        if envelope.room is not None:
            self._close_members(envelope.room, code, reason)

    def _presence_event(self, envelope: Envelope) -> None:
        hook, room = self.on_presence, envelope.room
        if hook is None or room is None or room not in self._rooms:
            return
        try:
            event = json.loads(envelope.payload)
            hook(room, "join" if envelope.kind == JOINED else "leave", event["id"], event["info"])
        except Exception:
            logger.exception("hub: the on_presence hook failed")

    def _close_members(self, room: str, code: int, reason: str) -> None:
        with self._lock:
            members = list(self._rooms.get(room, ()))
            for member in members:
                self._remove(member)
        for member in members:
            member.ws.remove_close_callback(self._closed)
            self._close_socket(member.ws, code, reason)
        if members:
            logger.info("hub: closed %d sockets of room %r with %d", len(members), room, code)

    def _spawn_sender(self, member: _Member) -> None:
        member.ws.spawn(lambda: self._drain(member))

    def _drain(self, member: _Member) -> None:
        """The sender greenlet: write the member's queue, several messages a write, then end."""
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
                batch = [queue.popleft() for _ in range(min(len(queue), _BATCH))]
                if member.slack:
                    member.slack = max(0, member.slack - len(batch))
            try:
                ws.send_many(batch)
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
            self.stats.delivered += len(batch)

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
        self._close_socket(ws, self.overflow_code, "slow consumer")

    def _close_socket(self, ws: WebSocket, code: int, reason: str) -> None:

        def close() -> None:
            try:
                ws.close(code, reason)
            except (ConnectionClosed, OSError):
                pass

        ws.spawn(close)

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop the backend (the sockets stay open; their handlers own them)."""
        self.backend.close()
        with self._lock:
            self._started = False
            self._watched.clear()

    def __repr__(self) -> str:
        return (
            f"<Hub {type(self.backend).__name__} {len(self._members)} sockets "
            f"in {len(self._rooms)} rooms>"
        )
