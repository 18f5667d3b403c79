"""Redis hub backends: rooms that span every worker of every server.

>>> hub = Hub(RedisStreamsBackend("redis://127.0.0.1:6379/0"))   # history, recovery
>>> hub = Hub(RedisBackend("redis://127.0.0.1:6379/0"))          # pub/sub: at most once
>>> hub = Hub.from_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7000/0")  # a Redis Cluster

:class:`RedisStreamsBackend` keeps each room in a Redis stream (bounded by count
and age) and each process reads only the rooms it has members in, from the last
id it saw: see its docstring and ``docs/rooms.md``.

:class:`RedisBackend` (pub/sub) is described below.

Every hub on the same Redis ``channel`` publishes its envelopes there, and each
process that has sockets keeps one subscriber (a greenlet under gevent, else a
daemon thread) that hands the others' envelopes to its hub. A process that only
publishes (an HTTP route in a worker without sockets, a cron job) never
subscribes. Needs the ``redis`` extra; under gevent, sockets must be
monkey-patched (gunicorn's gevent worker does it).

Failure behaviour (also in ``docs/rooms.md``): publishing never raises. While
Redis is unreachable a publishing process still reaches its own sockets, the
envelopes meant for the other processes are dropped (counted in
``backend.dropped``), and subscribers retry with backoff (0.1 s doubling to 5
s). After Redis returns they resubscribe; rooms and memberships are local and
survive. Nothing is buffered or replayed.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from ..hub import GAP, Deliver, Envelope, HistoryGap, HubUnavailable, Position
from ..metrics import metrics

__all__ = ["RedisBackend", "RedisStreamsBackend"]

logger = logging.getLogger("wsgiws.hub")

_BATCH = 512


def _spawn(target: Any, name: str) -> Any:
    """A greenlet if sockets are gevent's (patched), else a daemon thread."""
    try:
        from gevent import monkey

        if monkey.is_module_patched("socket"):
            import gevent

            return gevent.spawn(target)
    except ImportError:  # pragma: no cover - gevent is a dependency
        pass
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def _sleep(seconds: float) -> None:
    time.sleep(seconds)  # gevent's when patched


class _Backoff:
    """Waits between reconnection attempts: 0.1 s doubling up to ``cap``, with
    jitter, so that processes cut off together do not all come back at once."""

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self.delay = 0.1

    def reset(self) -> None:
        self.delay = 0.1

    def sleep(self) -> None:
        _sleep(self.delay * (0.5 + random.random()))
        self.delay = min(self.delay * 2, self.cap)


def _hand_over(deliver: Deliver, envelope: Envelope) -> None:
    try:
        deliver(envelope)
    except Exception:
        logger.exception("hub: delivering a message from Redis failed")


def _stop(task: Any) -> None:
    """Kill a reader greenlet (a daemon thread ends with its process)."""
    kill = getattr(task, "kill", None)
    if kill is not None:
        kill(block=False)


Client = redis.Redis | RedisCluster

# What a server or cluster that is down, or moving, raises (RedisClusterException: no
# node answers, a MOVED that led nowhere, too many redirections).
_DOWN = (redis.RedisError, OSError, RedisClusterException)

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


def is_cluster_url(url: str) -> bool:
    """``redis+cluster://host:port,host:port/0`` (``rediss+cluster://`` for TLS)."""
    return url.startswith(CLUSTER_SCHEMES)


def _cluster_client(url: str, options: dict[str, Any]) -> RedisCluster:
    """A cluster client from a ``redis+cluster://[user:password@]host:port,host:port[/0]``
    URL: every host is a seed node (one that answers is enough); a cluster has
    database 0 only."""
    from urllib.parse import unquote

    scheme, _, rest = url.partition("://")
    netloc, _, path = rest.partition("/")
    if path.strip("/") not in ("", "0"):
        raise ValueError(f"a Redis Cluster has database 0 only, not {path!r} ({url})")
    credentials, _, hosts = netloc.rpartition("@")
    if credentials:
        user, _, password = credentials.partition(":")
        options = {"username": unquote(user) or None, "password": unquote(password), **options}
    seeds = []
    for host_port in hosts.split(","):
        host, _, port = host_port.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected host:port in {url!r}, got {host_port!r}")
        seeds.append(ClusterNode(host.strip("[]"), int(port)))  # type: ignore[no-untyped-call]
    return RedisCluster(startup_nodes=seeds, ssl=scheme == "rediss+cluster", **options)


def _connect(url: str, options: dict[str, Any]) -> Client:
    if is_cluster_url(url):
        return _cluster_client(url, options)
    return redis.Redis.from_url(url, **options)


def _close_client(client: Client | None) -> None:
    if client is not None:
        client.close()


def _connection_options(extra: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {
        "socket_connect_timeout": 2.0,
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), 0),  # we decide when to retry, and never publish twice
    }
    options.update(extra)
    return options


class RedisBackend:
    """Envelopes over Redis pub/sub: at most once, no history.

    ``url``: a redis-py URL (``redis://host:port/db``, ``rediss://``, ``unix://``),
    or ``redis+cluster://host:port,host:port/0`` for a Redis Cluster (7+).
    ``channel``: hubs on the same channel form one hub; use another name for an
    unrelated set of rooms on the same Redis. On one server every room travels
    on that one channel and each process receives everything; on a cluster each
    room has its own sharded channel (``SPUBLISH``/``SSUBSCRIBE``,
    ``<channel>:{<room>}``, served by the room's slot's node) and each process
    subscribes to the rooms it has members in. ``max_outbox``: envelopes
    waiting to be published (while a publish to Redis is in flight) beyond which
    new ones are dropped. Extra keyword arguments go to the redis-py client.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        channel: str = "wsgiws:hub",
        max_outbox: int = 10000,
        **redis_options: Any,
    ) -> None:
        self.url = url
        self.channel = channel
        self.max_outbox = max_outbox
        self.cluster = is_cluster_url(url)
        self._options = _connection_options(redis_options)
        self._publisher: Client | None = None
        self._pid = -1
        self._lock = threading.Lock()
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._flushing = False
        self._down_until = 0.0
        self._deliver: Deliver | None = None
        self._subscriber: Any = None
        self._closed = False
        self._channels: set[str] = set()  # cluster: the rooms' channels this process wants
        self._shards: _ShardedSubscription | None = None
        #: True while the subscriber holds a live subscription.
        self.subscribed = False
        #: Envelopes that never reached Redis (unreachable, or outbox full).
        self.dropped = 0
        #: Times the subscriber (re)subscribed.
        self.subscriptions = 0

    history = False

    @property
    def per_room_order(self) -> bool:
        """A cluster's rooms travel on separate channels (see the hub's Backend)."""
        return self.cluster

    def _client(self, **extra: Any) -> Client:
        return _connect(self.url, {**self._options, **extra})

    def channel_of(self, room: str | None) -> str:
        """Where a room's envelopes travel: ``channel`` on one server; on a cluster
        the room's sharded channel, in the room's slot (None: the broadcasts')."""
        if not self.cluster:
            return self.channel
        return f"{self.channel}:{{{'*' if room is None else room}}}"

    def watch(self, room: str, start: Position | None) -> None:
        """On a cluster, subscribe to the room's channel (waiting, briefly, for
        the node to confirm: what is sent after ``join`` returns arrives)."""
        if not self.cluster:
            return  # one channel carries every room: every process gets everything
        channel = self.channel_of(room)
        with self._lock:
            self._channels.add(channel)
            shards = self._shards
        if shards is not None:
            try:
                shards.subscribe(channel)
                shards.wait_confirmed({channel}, 2.0)
            except (*_DOWN, ValueError):
                pass  # the subscriber resubscribes to every wanted channel

    def unwatch(self, room: str) -> None:
        if not self.cluster:
            return
        channel = self.channel_of(room)
        with self._lock:
            self._channels.discard(channel)
            shards = self._shards
        if shards is not None:
            shards.unsubscribe(channel)

    def head(self, room: str) -> Position | None:
        return None

    def replay(self, room: str, after: Position) -> list[Envelope]:
        raise HistoryGap(room, after, "no history")

    # Presence needs shared state: RedisStreamsBackend has it; pub/sub shows this process.
    def present(self, room: str, member_id: str, info: object) -> None:
        pass

    def absent(self, room: str, member_id: str) -> None:
        pass

    def presence(self, room: str) -> tuple[dict[str, object], list[str]]:
        return {}, []

    # -------------------------------------------------------------- publish

    def publish(self, envelope: Envelope) -> None:
        """Queue the envelope and, unless another caller is already at it, publish
        the queue in order (pipelined). Never raises."""
        item = (self.channel_of(envelope.room), envelope.encode())
        with self._lock:
            if len(self._outbox) >= self.max_outbox:
                self.dropped += 1
                return
            self._outbox.append(item)
            if self._flushing:
                return  # the flushing caller takes ours along, in order
            self._flushing = True
        try:
            self._flush()
        finally:
            with self._lock:
                self._flushing = False

    def _flush(self) -> None:
        command = "spublish" if self.cluster else "publish"
        while True:
            with self._lock:
                if not self._outbox:
                    return
                batch = [self._outbox.popleft() for _ in range(min(_BATCH, len(self._outbox)))]
            if time.monotonic() < self._down_until:
                self.dropped += len(batch)
                continue
            try:
                client = self._publishing_client()
                if len(batch) == 1:
                    getattr(client, command)(*batch[0])
                else:
                    pipe = client.pipeline(transaction=False)
                    for channel, data in batch:
                        getattr(pipe, command)(channel, data)
                    pipe.execute()
            except _DOWN as exc:
                self.dropped += len(batch)
                if self._down_until == 0.0 or time.monotonic() - self._down_until > 5:
                    logger.warning("hub: cannot publish to Redis (%s); dropping for now", exc)
                self._down_until = time.monotonic() + 0.5
            else:
                self._down_until = 0.0

    def _publishing_client(self) -> Client:
        import os

        if self._publisher is None or self._pid != os.getpid():
            self._publisher = self._client(socket_timeout=5.0)
            self._pid = os.getpid()
        return self._publisher

    # ------------------------------------------------------------ subscribe

    def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._closed = False
        if self.cluster:
            with self._lock:
                self._channels.add(self.channel_of(None))
        self._subscriber = _spawn(self._subscribe_forever, "wsgiws-redis-subscriber")

    def _subscribe_forever(self) -> None:
        backoff = _Backoff(5.0)
        client: Client | None = None
        while not self._closed:
            try:
                if client is None:
                    client = self._client(health_check_interval=15)
                if self.cluster:
                    assert isinstance(client, RedisCluster)
                    self._subscribe_sharded(client)
                else:
                    assert isinstance(client, redis.Redis)
                    self._subscribe_channel(client)
                backoff.reset()
            except (*_DOWN, ValueError) as exc:
                if self.subscribed and not self._closed:
                    logger.warning("hub: lost Redis subscription (%s); reconnecting", exc)
            finally:
                self.subscribed = False
            if self._closed:
                break
            backoff.sleep()
        _close_client(client)

    def _subscribed(self) -> None:
        self.subscribed = True
        self.subscriptions += 1
        if self.subscriptions > 1:
            logger.warning("hub: subscribed to Redis again after an outage")
            metrics.hub_backend_reconnects += 1

    def _subscribe_channel(self, client: redis.Redis) -> None:
        """One server: the one channel, until the connection fails."""
        pubsub = client.pubsub()  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(self.channel)
            deadline = time.monotonic() + 5.0
            while True:  # wait for Redis to confirm the subscription
                reply = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
                if reply is not None and reply.get("type") == "subscribe":
                    break
                if time.monotonic() >= deadline:
                    raise redis.TimeoutError("no subscribe confirmation")
            self._subscribed()
            while not self._closed:
                message = pubsub.get_message(timeout=5.0)
                if message is not None and message.get("type") == "message":
                    self._hand_over(message["data"])
        finally:
            try:
                pubsub.close()
            except Exception:
                pass

    def _subscribe_sharded(self, client: RedisCluster) -> None:
        """A cluster: every wanted channel on the node serving its slot, until a
        node fails, a slot moves away (the node unsubscribes us, or answers
        MOVED) or a failover; then the caller starts over with a fresh map."""
        client.nodes_manager.initialize()
        shards = _ShardedSubscription(client, self._hand_over, self._wanted)
        try:
            with self._lock:
                self._shards = shards
                channels = set(self._channels)
            for channel in channels:
                shards.subscribe(channel)
            if not shards.wait_confirmed(channels, 5.0):
                raise redis.TimeoutError("no ssubscribe confirmation")
            self._subscribed()
            shards.wait_broken()
        finally:
            with self._lock:
                self._shards = None
            shards.close()

    def _wanted(self, channel: str) -> bool:
        with self._lock:
            return channel in self._channels

    def _hand_over(self, data: bytes) -> None:
        deliver = self._deliver
        assert deliver is not None
        try:
            envelope = Envelope.decode(data)
        except (ValueError, UnicodeDecodeError):
            logger.warning("hub: ignoring a malformed message on %s", self.channel)
            return
        _hand_over(deliver, envelope)

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self._closed = True
        with self._lock:
            shards = self._shards
        if shards is not None:
            shards.close()
        _stop(self._subscriber)
        self._subscriber = None
        _close_client(self._publisher)
        self._publisher = None

    def __repr__(self) -> str:
        state = "subscribed" if self.subscribed else "not subscribed"
        return f"<RedisBackend {self.url} {self.channel!r} {state}>"


class _ShardedSubscription:
    """One life of a process's sharded subscriptions on a cluster: a pub/sub
    connection to each node that serves a wanted channel's slot, each read by
    its own listener. Any failure breaks the whole of it (see ``wait_broken``)."""

    def __init__(
        self,
        client: RedisCluster,
        on_message: Callable[[bytes], None],
        wanted: Callable[[str], bool],
    ) -> None:
        self._client = client
        self._on_message = on_message
        self._wanted = wanted
        self._lock = threading.Condition()
        self._pubsubs: dict[str, Any] = {}  # node name -> its PubSub
        self._listeners: list[Any] = []
        self._confirmed: set[str] = set()
        self._leaving: set[str] = set()
        self._broken = threading.Event()
        self.error: BaseException | None = None

    def subscribe(self, channel: str) -> None:
        node = self._client.get_node_from_key(channel)  # type: ignore[no-untyped-call]
        with self._lock:
            if self._broken.is_set():
                return
            self._leaving.discard(channel)
            pubsub: Any = self._pubsubs.get(node.name)
            new = pubsub is None
            if new:
                pubsub = self._client.get_redis_connection(node).pubsub()  # type: ignore[no-untyped-call]
                self._pubsubs[node.name] = pubsub
        pubsub.ssubscribe(channel)  # one channel a command: several would have to share a slot
        if new:
            self._listeners.append(_spawn(lambda: self._listen(pubsub), "wsgiws-redis-shard"))

    def unsubscribe(self, channel: str) -> None:
        node = self._client.get_node_from_key(channel)  # type: ignore[no-untyped-call]
        with self._lock:
            pubsub = self._pubsubs.get(node.name)
            self._confirmed.discard(channel)
            self._leaving.add(channel)
        if pubsub is not None:
            try:
                pubsub.sunsubscribe(channel)
            except (*_DOWN, ValueError) as exc:
                self._break(exc)

    def wait_confirmed(self, channels: set[str], timeout: float) -> bool:
        with self._lock:
            return (
                self._lock.wait_for(
                    lambda: channels <= self._confirmed or self._broken.is_set(), timeout
                )
                and not self._broken.is_set()
            )

    def wait_broken(self) -> None:
        self._broken.wait()
        if self.error is not None:
            raise self.error

    def _listen(self, pubsub: Any) -> None:
        try:
            while not self._broken.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                kind, channel = message["type"], message["channel"].decode()
                if kind == "smessage":
                    self._on_message(message["data"])
                elif kind == "ssubscribe":
                    with self._lock:
                        self._confirmed.add(channel)
                        self._lock.notify_all()
                elif kind == "sunsubscribe":
                    with self._lock:
                        asked = channel in self._leaving
                        self._leaving.discard(channel)
                    if not asked and self._wanted(channel):  # its slot moved to another node
                        raise redis.ConnectionError(f"{channel} moved to another node")
        except Exception as exc:  # a node down, MOVED, a closed connection: start over
            self._break(exc)

    def _break(self, exc: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = exc
            self._broken.set()
            self._lock.notify_all()

    def close(self) -> None:
        self._break(redis.ConnectionError("closed"))
        with self._lock:
            pubsubs = list(self._pubsubs.values())
            self._pubsubs.clear()
        for task in self._listeners:
            _stop(task)
        for pubsub in pubsubs:
            try:
                pubsub.close()
            except Exception:
                pass


# Appends one envelope to a room's stream, once: the room's meta hash remembers each
# publisher's last sequence number, so a batch retried after a lost reply adds nothing
# twice. Creates the room's epoch on first use, and trims by count and age, exactly,
# recording in 'floor' the newest id trimmed away: a client whose position is older
# than that has missed a message that is gone. (Redis's own 'max-deleted-entry-id'
# counts XDEL only, not trimming.) Each entry names the id before it ('p'): a reader
# whose last id is not that one has lost what came between (trimmed, or expired,
# before it read it), and says so instead of skipping it silently.
# KEYS: stream, meta. ARGV: publisher, seq, data, maxlen, age_ms, new epoch, stream ttl, meta ttl.
_PUBLISH = """
local seq = tonumber(ARGV[2])
local field = 'p:' .. ARGV[1]
if seq <= tonumber(redis.call('HGET', KEYS[2], field) or '0') then return false end
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then epoch = ARGV[6] end
local prev = redis.call('HGET', KEYS[2], 'last') or '0-0'
local id = redis.call('XADD', KEYS[1], '*', 'e', epoch, 'p', prev, 'd', ARGV[3])
redis.call('HSET', KEYS[2], 'epoch', epoch, field, ARGV[2], 'last', id)
local floor = nil
local excess = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[4])
if excess > 0 then
  local gone = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', excess)
  floor = gone[#gone][1]
  redis.call('XTRIM', KEYS[1], 'MAXLEN', '=', ARGV[4])
end
local age = tonumber(ARGV[5])
if age > 0 then
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local cutoff = string.format('%d', ms - age)
  local old = redis.call('XREVRANGE', KEYS[1], '(' .. cutoff .. '-0', '-', 'COUNT', 1)
  if #old > 0 then
    floor = old[1][1]
    redis.call('XTRIM', KEYS[1], 'MINID', '=', cutoff .. '-0')
  end
end
if floor then redis.call('HSET', KEYS[2], 'floor', floor) end
if tonumber(ARGV[7]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[7]) end
redis.call('EXPIRE', KEYS[2], ARGV[8])
return id
"""

# The room's epoch (created if missing) and last id.  KEYS: meta. ARGV: new epoch, meta ttl.
_HEAD = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return {epoch, redis.call('HGET', KEYS[1], 'last') or '0-0'}
"""

# Everything after a position, or why not: {'ok', entries} | {'epoch'} | {'trimmed'}.
# A stream that expired (idle longer than its ttl) lost everything up to 'last'.
# KEYS: stream, meta. ARGV: epoch, after.
_REPLAY = """
if redis.call('HGET', KEYS[2], 'epoch') ~= ARGV[1] then return {'epoch'} end
local function later(a, b)
  local ah, al = string.match(a, '^(%d+)-(%d+)$')
  local bh, bl = string.match(b, '^(%d+)-(%d+)$')
  ah, al, bh, bl = tonumber(ah), tonumber(al), tonumber(bh), tonumber(bl)
  return ah > bh or (ah == bh and al > bl)
end
local floor = redis.call('HGET', KEYS[2], 'floor') or '0-0'
if redis.call('EXISTS', KEYS[1]) == 0 then floor = redis.call('HGET', KEYS[2], 'last') or '0-0' end
if later(floor, ARGV[2]) then return {'trimmed'} end
return {'ok', redis.call('XRANGE', KEYS[1], '(' .. ARGV[2], '+')}
"""


@dataclass(eq=False)
class _ReadGroup:
    """The streams one reader blocks on in one XREAD (on a cluster: one slot's)."""

    wake_key: str  # a small stream in the same slot: a watch appends to it to wake the reader
    keys: set[str] = field(default_factory=set)
    task: Any = None
    reading: bool = False
    connections: int = 0


_SLOTS = 16384  # a Redis Cluster's hash slots
_META_TTL = 7 * 86400  # a room's epoch and last id outlive its messages (no false gaps)
_BLOCK_MS = 5000


class RedisStreamsBackend:
    """Envelopes in Redis streams, one per room: history, recovery, each process
    reading only its rooms (needs Redis 7 or a compatible server). ``url`` as
    for :class:`RedisBackend`, a cluster's included: there the rooms spread over
    the primaries by hash slot and each process reads each slot it has members
    in with one blocking XREAD (a command's keys must share a slot).

    ``history``: messages kept per room; ``history_age``: seconds a message is
    kept (None: no age limit, and an idle room's stream then lives forever, else
    it expires ``history_age`` + 60 s after its last message). Both are applied
    exactly, by whichever process publishes: give every process the same values. Each room
    has a meta hash with its epoch, last id and the publishers' last sequence
    numbers (kept 7 days after the room's last message).

    Each process with sockets runs one reader (a greenlet under gevent, else a
    daemon thread) that blocks in ``XREAD`` on the streams of the rooms it has
    members in, from the last id it delivered: a reader whose connection is cut,
    or a Redis that restarts with persistence, loses nothing that is still in the
    history. What was trimmed before the reader got to it (it was away, or a burst
    longer than ``history`` outran it) is reported, never skipped silently: the
    room's sockets in this process are closed with the hub's ``reset_code`` so
    that their clients resume and learn of the gap. Joining a new room wakes the
    reader through a small per-process stream.

    Publishing appends through a Lua script (each envelope once, even when a
    batch is retried). While Redis is unreachable envelopes wait in order in a
    buffer of ``max_outbox`` and are retried with backoff; a ``publish`` that
    finds it full raises :class:`~wsgiws.hub.HubUnavailable`.

    Presence: a hash per room (socket id -> app info) and a key per process
    refreshed every ``presence_ttl`` / 3 seconds; a dead process's key expires
    after ``presence_ttl`` seconds and its members drop out of ``presence``.
    """

    history = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "wsgiws",
        history: int = 1000,
        history_age: float | None = 600.0,
        max_outbox: int = 10000,
        presence_ttl: int = 15,
        **redis_options: Any,
    ) -> None:
        if history < 1:
            raise ValueError("history must be at least 1")
        self.url = url
        self.prefix = prefix
        self.max_history = history
        self.history_age = history_age
        self.max_outbox = max_outbox
        self._options = _connection_options(redis_options)
        self._lock = threading.Lock()
        self._publisher: Client | None = None
        self._scripts: dict[str, Any] = {}
        self._pid = -1
        self._outbox: deque[tuple[str | None, bytes, str, int]] = deque()
        self._flushing = False
        self._retrying = False
        self._down = False
        self._deliver: Deliver | None = None
        self._closed = False
        self._cursors: dict[str, str] = {}  # stream key -> last id delivered
        self._rooms_by_key: dict[str, str | None] = {}
        self._groups: dict[int, _ReadGroup] = {}  # cluster slot (0 on one server) -> its reader
        self._reading: Client | None = None
        self._token = ""
        self.cluster = is_cluster_url(url)
        self.presence_ttl = presence_ttl
        self._nodes: set[str] = set()
        self._heartbeating = False
        #: Times a reader (re)connected.
        self.subscriptions = 0
        #: Envelopes waiting for Redis (it is unreachable).
        self.waiting = 0

    # ----------------------------------------------------------------- keys

    @property
    def subscribed(self) -> bool:
        """True while every reader holds a live connection."""
        with self._lock:
            groups = list(self._groups.values())
        return bool(groups) and all(group.reading for group in groups)

    def stream_key(self, room: str | None) -> str:
        """The room's stream (the broadcast stream for None); the hash tag keeps a
        room's keys in one Redis Cluster slot."""
        if room is None:
            return f"{self.prefix}:{{*}}:b"
        return f"{self.prefix}:{{{room}}}:s"

    def _meta_key(self, room: str | None) -> str:
        if room is None:
            return f"{self.prefix}:{{*}}:bm"
        return f"{self.prefix}:{{{room}}}:m"

    def _slot(self, key: str) -> int:
        """Which reader reads ``key``: on a cluster one per slot, because a
        multi-key command such as XREAD must name keys of one slot (CROSSSLOT)."""
        return key_slot(key.encode()) if self.cluster else 0

    def _client(self, **extra: Any) -> Client:
        return _connect(self.url, {**self._options, **extra})

    def _publishing_client(self) -> Client:
        import os

        if self._publisher is None or self._pid != os.getpid():
            self._publisher = self._client(socket_timeout=5.0)
            self._scripts = {
                name: self._publisher.register_script(source)
                for name, source in (("publish", _PUBLISH), ("head", _HEAD), ("replay", _REPLAY))
            }
            self._pid = os.getpid()
        return self._publisher

    def _reading_client(self) -> Client:
        """One client for every reader of this process (each blocked XREAD holds
        one of its connections); on a cluster it follows MOVED and failovers."""
        if self._reading is None:
            self._reading = self._client(  # a connection per reader: up to one per slot
                socket_timeout=_BLOCK_MS / 1000 + 5, max_connections=_SLOTS + 16
            )
        return self._reading

    def _wake_suffix(self) -> str:
        import os

        if not self._token.startswith(f"{os.getpid()}:"):
            self._token = f"{os.getpid()}:{os.urandom(4).hex()}"
        return self._token

    @staticmethod
    def _new_epoch() -> str:
        import os

        return os.urandom(4).hex()

    # -------------------------------------------------------------- publish

    def publish(self, envelope: Envelope) -> None:
        """Queue the envelope and, unless another caller is already at it, append
        the queue in order (pipelined). Raises HubUnavailable only when Redis is
        unreachable and ``max_outbox`` envelopes already wait."""
        item = (envelope.room, envelope.encode(), envelope.publisher, envelope.seq)
        with self._lock:
            if len(self._outbox) >= self.max_outbox:
                raise HubUnavailable(
                    f"Redis at {self.url} is unreachable and {self.max_outbox} messages "
                    "already wait for it"
                )
            self._outbox.append(item)
            self.waiting = len(self._outbox)
            if self._flushing or self._down:
                return  # the flushing caller (or the retry loop) takes ours along, in order
            self._flushing = True
        self._flush_now()

    def _flush_now(self) -> bool:
        """Flush (the caller set ``_flushing``); True when the outbox is empty."""
        try:
            return self._flush()
        finally:
            with self._lock:
                self._flushing = False

    def _flush(self) -> bool:
        ttl = str(int(self.history_age) + 60) if self.history_age else "0"
        age_ms = str(int(self.history_age * 1000)) if self.history_age else "0"
        maxlen = str(self.max_history)
        while True:
            with self._lock:
                if not self._outbox:
                    self.waiting = 0
                    return True
                batch = [self._outbox[i] for i in range(min(_BATCH, len(self._outbox)))]
            try:
                self._append(batch, maxlen, age_ms, ttl)
            except _DOWN as exc:
                with self._lock:
                    first_failure = not self._down
                    self._down = True
                    start_retry = not self._retrying
                    self._retrying = True
                if first_failure:
                    logger.warning(
                        "hub: cannot append to Redis (%s); %d messages wait, retrying",
                        exc,
                        len(self._outbox),
                    )
                if start_retry:
                    _spawn(self._retry_forever, "wsgiws-redis-retry")
                return False
            with self._lock:
                for _ in batch:
                    self._outbox.popleft()  # only this flusher removes, so these are ours
                self.waiting = len(self._outbox)
                if self._down:
                    self._down = False
                    logger.warning("hub: Redis takes messages again")

    def _append(self, batch: list[tuple[str | None, bytes, str, int]], *bounds: str) -> None:
        """One pipelined round trip (one per node on a cluster). EVALSHA by hand: a
        cluster pipeline refuses Script objects; a server that lost its scripts
        (restarted, or a replica just promoted) gets them again and the batch is
        sent again, which appends nothing twice."""
        maxlen, age_ms, ttl = bounds
        client = self._publishing_client()
        sha = self._scripts["publish"].sha
        for attempt in range(2):
            pipe = client.pipeline(transaction=False)
            for room, data, publisher, seq in batch:
                keys = [self.stream_key(room), self._meta_key(room)]
                args = [publisher, seq, data, maxlen, age_ms, self._new_epoch(), ttl, _META_TTL]
                pipe.execute_command("EVALSHA", sha, 2, *keys, *args)
            try:
                pipe.execute()
                return
            except redis.exceptions.NoScriptError:
                if attempt:
                    raise
                client.script_load(_PUBLISH)  # every primary, on a cluster

    def _retry_forever(self) -> None:
        backoff = _Backoff(2.0)
        try:
            while not self._closed:
                backoff.sleep()
                with self._lock:
                    if self._flushing:
                        continue
                    self._flushing = True
                if self._flush_now():
                    with self._lock:
                        if not self._outbox:
                            return
        finally:
            with self._lock:
                self._retrying = False

    # -------------------------------------------------------------- history

    def head(self, room: str) -> Position:
        self._publishing_client()
        epoch, last = self._scripts["head"](
            keys=[self._meta_key(room)], args=[self._new_epoch(), _META_TTL]
        )
        return Position(epoch.decode(), last.decode())

    def replay(self, room: str, after: Position) -> list[Envelope]:
        self._publishing_client()
        reply = self._scripts["replay"](
            keys=[self.stream_key(room), self._meta_key(room)], args=[after.epoch, after.offset]
        )
        status = reply[0].decode()
        if status != "ok":
            raise HistoryGap(room, after, status)
        out = []
        for entry_id, fields in reply[1]:
            decoded = self._decode(entry_id, fields)
            if decoded is not None:
                out.append(decoded)
        return out

    def _decode(self, entry_id: bytes, fields: Any) -> Envelope | None:
        if isinstance(fields, list):  # as Lua returns it: [k1, v1, k2, v2]
            fields = dict(zip(fields[::2], fields[1::2], strict=False))
        try:
            position = Position(fields[b"e"].decode(), entry_id.decode())
            return Envelope.decode(fields[b"d"], position)
        except (KeyError, ValueError, UnicodeDecodeError):
            logger.warning("hub: ignoring a malformed stream entry %r", entry_id)
            return None

    # ------------------------------------------------------------- presence

    def _who_key(self, room: str) -> str:
        return f"{self.prefix}:{{{room}}}:who"

    def _node_key(self, node: str) -> str:
        return f"{self.prefix}:node:{node}"

    def present(self, room: str, member_id: str, info: object) -> None:
        node = member_id.rpartition(".")[0]
        client = self._publishing_client()
        pipe = client.pipeline(transaction=False)
        pipe.set(self._node_key(node), 1, ex=self.presence_ttl)
        pipe.hset(self._who_key(room), member_id, json.dumps({"info": info}))
        pipe.execute()
        with self._lock:
            self._nodes.add(node)
            start = not self._heartbeating
            self._heartbeating = True
        if start:
            _spawn(self._heartbeat_forever, "wsgiws-redis-heartbeat")

    def absent(self, room: str, member_id: str) -> None:
        self._publishing_client().hdel(self._who_key(room), member_id)

    def presence(self, room: str) -> tuple[dict[str, object], list[str]]:
        client = self._publishing_client()
        entries: dict[bytes, bytes] = client.hgetall(self._who_key(room))  # type: ignore[assignment]
        members = {k.decode(): json.loads(v).get("info") for k, v in entries.items()}
        nodes = sorted({member_id.rpartition(".")[0] for member_id in members})
        pipe = client.pipeline(transaction=False)
        for node in nodes:
            pipe.exists(self._node_key(node))
        alive_nodes = {node for node, up in zip(nodes, pipe.execute(), strict=True) if up}
        dead = [m for m in members if m.rpartition(".")[0] not in alive_nodes]
        removed = []
        for member_id in dead:
            if client.hdel(self._who_key(room), member_id):  # one caller wins each
                removed.append(member_id)
            del members[member_id]
        return members, removed

    def _heartbeat_forever(self) -> None:
        """Keep this process's node keys alive: when it dies they expire within
        ``presence_ttl`` and its members leave every presence list."""
        while not self._closed:
            _sleep(self.presence_ttl / 3)
            with self._lock:
                nodes = list(self._nodes)
            try:
                pipe = self._publishing_client().pipeline(transaction=False)
                for node in nodes:
                    pipe.set(self._node_key(node), 1, ex=self.presence_ttl)
                pipe.execute()
            except _DOWN as exc:
                logger.debug("hub: presence heartbeat failed: %s", exc)

    # ------------------------------------------------------------ receiving

    def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._closed = False
        try:
            broadcast: str = self.head_of_broadcast()
        except _DOWN:
            broadcast = "$"  # Redis is down; the reader starts at what comes next
        self._watch_key(self.stream_key(None), None, broadcast)
        with self._lock:
            groups = list(self._groups.items())
        for slot, group in groups:
            self._start_reader(slot, group)

    def _start_reader(self, slot: int, group: _ReadGroup) -> bool:
        """Start the group's reader unless it runs or this backend is not receiving."""
        with self._lock:
            if group.task is not None or self._deliver is None or self._closed:
                return False
            group.task = starting = object()
        task = _spawn(functools.partial(self._read_forever, slot, group), "wsgiws-redis-reader")
        with self._lock:
            if group.task is starting:
                group.task = task
        return True

    def head_of_broadcast(self) -> str:
        self._publishing_client()
        _, last = self._scripts["head"](keys=[self._meta_key(None)], args=["b", _META_TTL])
        return str(last.decode())

    def watch(self, room: str, start: Position | None) -> None:
        self._watch_key(self.stream_key(room), room, start.offset if start is not None else "$")

    def _watch_key(self, key: str, room: str | None, cursor: str) -> None:
        slot = self._slot(key)
        with self._lock:
            self._cursors[key] = cursor
            self._rooms_by_key[key] = room
            group = self._groups.get(slot)
            if group is None:  # its wake key is in the slot too: ``key`` + a suffix
                group = self._groups[slot] = _ReadGroup(f"{key}:w:{self._wake_suffix()}")
            group.keys.add(key)
        if self._start_reader(slot, group):
            return
        try:  # wake the group's reader so that it reads this stream too
            client = self._publishing_client()
            pipe = client.pipeline(transaction=False)
            pipe.xadd(group.wake_key, {"w": 1}, maxlen=1)
            pipe.expire(group.wake_key, 60)
            pipe.execute()
        except _DOWN:
            pass  # the reader is reconnecting and will read it

    def unwatch(self, room: str) -> None:
        key = self.stream_key(room)
        with self._lock:
            self._cursors.pop(key, None)
            self._rooms_by_key.pop(key, None)
            group = self._groups.get(self._slot(key))
            if group is not None:
                group.keys.discard(key)  # an empty group's reader ends at its next wake-up

    def _read_forever(self, slot: int, group: _ReadGroup) -> None:
        backoff = _Backoff(5.0)
        wake_cursor = "0-0"
        try:
            while not self._closed:
                try:
                    client = self._reading_client()
                    client.exists(group.wake_key)  # reaches the node serving the slot
                    group.reading = True
                    self.subscriptions += 1
                    if group.connections:
                        logger.warning("hub: reading Redis streams again after an outage")
                    group.connections += 1
                    backoff.reset()
                    while not self._closed:
                        with self._lock:
                            if not group.keys:
                                del self._groups[slot]  # a new watch starts another
                                return
                            streams: dict[Any, Any] = {k: self._cursors[k] for k in group.keys}
                        streams[group.wake_key] = wake_cursor
                        reply: Any = client.xread(streams, count=_BATCH, block=_BLOCK_MS)
                        for key, entries in reply or ():
                            name = key.decode()
                            if name == group.wake_key:
                                wake_cursor = entries[-1][0].decode()
                                continue
                            self._deliver_entries(name, entries)
                except (*_DOWN, ValueError) as exc:  # ValueError: closed
                    if group.reading and not self._closed:
                        logger.warning("hub: lost the Redis stream reader (%s); reconnecting", exc)
                finally:
                    group.reading = False
                if self._closed:
                    break
                backoff.sleep()
        finally:
            group.task = None

    def _deliver_entries(self, key: str, entries: Any) -> None:
        deliver = self._deliver
        assert deliver is not None
        for entry_id, fields in entries:
            with self._lock:
                cursor = self._cursors.get(key)
                if cursor is None:
                    return  # unwatched meanwhile
                self._cursors[key] = entry_id.decode()
                room = self._rooms_by_key.get(key)
            prev = fields.get(b"p")  # absent in entries an older wsgiws appended
            # "0-0": the first entry of a new history (Redis lost the room's meta):
            # the hub sees the new epoch and resets the room; that is no gap to report.
            if prev is not None and cursor != "$" and prev not in (b"0-0", cursor.encode()):
                self._lost(room, cursor, prev.decode())
            envelope = self._decode(entry_id, fields)
            if envelope is not None:
                _hand_over(deliver, envelope)

    def _lost(self, room: str | None, cursor: str, prev: str) -> None:
        """Entries after ``cursor`` up to ``prev`` are gone from the stream (trimmed
        by count or age, or expired, before this reader got to them: it fell behind
        a burst longer than the history, or its connection was cut meanwhile). The
        hub hears of a room's loss as a GAP envelope and closes the room's sockets
        here so that their clients resume, and learn of the gap, from history."""
        if room is None:
            logger.warning(
                "hub: broadcast messages between %s and %s were lost for this process "
                "(trimmed before its reader got to them)",
                cursor,
                prev,
            )
            return
        assert self._deliver is not None
        _hand_over(self._deliver, Envelope(room, "", None, "", 0, GAP))

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self._closed = True
        with self._lock:
            groups = list(self._groups.values())
            self._groups.clear()
            self._cursors.clear()
            self._rooms_by_key.clear()
        for group in groups:
            _stop(group.task)
        _close_client(self._publisher)
        self._publisher = None
        _close_client(self._reading)
        self._reading = None

    def __repr__(self) -> str:
        state = "reading" if self.subscribed else "not reading"
        return f"<RedisStreamsBackend {self.url} {self.prefix!r} {state}>"
