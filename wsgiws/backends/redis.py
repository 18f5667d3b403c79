"""Redis pub/sub hub backend: rooms that span every worker of every server.

>>> hub = Hub(RedisBackend("redis://127.0.0.1:6379/0"))

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

import logging
import random
import threading
import time
from collections import deque
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..hub import Deliver, Envelope
from ..metrics import metrics

__all__ = ["RedisBackend"]

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


class RedisBackend:
    """Envelopes over one Redis pub/sub channel.

    ``url``: a redis-py URL (``redis://host:port/db``, ``rediss://``, ``unix://``).
    ``channel``: hubs on the same channel form one hub; use another name for an
    unrelated set of rooms on the same Redis. ``max_outbox``: envelopes waiting
    to be published (while a publish to Redis is in flight) beyond which new
    ones are dropped. Extra keyword arguments go to ``redis.Redis.from_url``.
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
        options: dict[str, Any] = {
            "socket_connect_timeout": 2.0,
            "socket_keepalive": True,
            "retry": Retry(NoBackoff(), 0),  # we decide when to retry, and never publish twice
        }
        options.update(redis_options)
        self._options = options
        self._publisher: redis.Redis | None = None
        self._pid = -1
        self._lock = threading.Lock()
        self._outbox: deque[bytes] = deque()
        self._flushing = False
        self._down_until = 0.0
        self._deliver: Deliver | None = None
        self._subscriber: Any = None
        self._closed = False
        #: True while the subscriber holds a live subscription.
        self.subscribed = False
        #: Envelopes that never reached Redis (unreachable, or outbox full).
        self.dropped = 0
        #: Times the subscriber (re)subscribed.
        self.subscriptions = 0

    def _client(self, **extra: Any) -> redis.Redis:
        return redis.Redis.from_url(self.url, **{**self._options, **extra})

    # -------------------------------------------------------------- publish

    def publish(self, envelope: Envelope) -> None:
        """Queue the envelope and, unless another caller is already at it, publish
        the queue in order (pipelined). Never raises."""
        data = envelope.encode()
        with self._lock:
            if len(self._outbox) >= self.max_outbox:
                self.dropped += 1
                return
            self._outbox.append(data)
            if self._flushing:
                return  # the flushing caller takes ours along, in order
            self._flushing = True
        try:
            self._flush()
        finally:
            with self._lock:
                self._flushing = False

    def _flush(self) -> None:
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
                    client.publish(self.channel, batch[0])
                else:
                    pipe = client.pipeline(transaction=False)
                    for data in batch:
                        pipe.publish(self.channel, data)
                    pipe.execute()
            except (redis.RedisError, OSError) as exc:
                self.dropped += len(batch)
                if self._down_until == 0.0 or time.monotonic() - self._down_until > 5:
                    logger.warning("hub: cannot publish to Redis (%s); dropping for now", exc)
                self._down_until = time.monotonic() + 0.5
            else:
                self._down_until = 0.0

    def _publishing_client(self) -> redis.Redis:
        import os

        if self._publisher is None or self._pid != os.getpid():
            self._publisher = self._client(socket_timeout=5.0)
            self._pid = os.getpid()
        return self._publisher

    # ------------------------------------------------------------ subscribe

    def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._closed = False
        self._subscriber = _spawn(self._subscribe_forever, "wsgiws-redis-subscriber")

    def _subscribe_forever(self) -> None:
        delay = 0.1
        client = self._client(health_check_interval=15)
        while not self._closed:
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
                self.subscribed = True
                self.subscriptions += 1
                if self.subscriptions > 1:
                    logger.warning("hub: subscribed to Redis again after an outage")
                    metrics.hub_backend_reconnects += 1
                delay = 0.1
                self._listen(pubsub)
            except (redis.RedisError, OSError, ValueError) as exc:
                if self.subscribed:
                    logger.warning("hub: lost Redis subscription (%s); reconnecting", exc)
            finally:
                self.subscribed = False
                try:
                    pubsub.close()
                except Exception:
                    pass
            if self._closed:
                break
            _sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)

    def _listen(self, pubsub: Any) -> None:
        deliver = self._deliver
        assert deliver is not None
        while not self._closed:
            message = pubsub.get_message(timeout=5.0)
            if message is None or message.get("type") != "message":
                continue
            try:
                envelope = Envelope.decode(message["data"])
            except (ValueError, UnicodeDecodeError):
                logger.warning("hub: ignoring a malformed message on %s", self.channel)
                continue
            try:
                deliver(envelope)
            except Exception:
                logger.exception("hub: delivering a message from Redis failed")

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self._closed = True
        subscriber, self._subscriber = self._subscriber, None
        kill = getattr(subscriber, "kill", None)
        if kill is not None:
            kill(block=False)
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None

    def __repr__(self) -> str:
        state = "subscribed" if self.subscribed else "not subscribed"
        return f"<RedisBackend {self.url} {self.channel!r} {state}>"
