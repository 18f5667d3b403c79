"""Limits against abuse: who may open a WebSocket, how fast it may talk, how long it may idle.

The settings are :class:`~wsgiws.middleware.WebSocketOptions` fields, so each is
set per app (the middleware's keywords) and per route (the route's keywords):

- ``max_connections``: open WebSockets per worker process; beyond it the
  upgrade request gets ``503`` with ``Retry-After`` (before any ``101``).
- ``max_connections_per_client``: open WebSockets per client address in this
  worker; beyond it ``429`` with ``Retry-After``. Behind a proxy the address is
  taken from ``X-Forwarded-For`` only when the request came from an address in
  ``trusted_proxies`` (see :func:`client_address`).
- ``max_request_headers``: bytes of the upgrade request's headers and query
  string; beyond it ``431``.
- ``message_rate`` and ``byte_rate``: token buckets per connection
  (:class:`RateLimit`); beyond them the connection closes with ``1008``, or with
  ``rate_limit_action="drop"`` the message is dropped and a warning logged.
- ``idle_timeout``: seconds without a data message either way; then the
  connection closes with ``1000`` and reason ``"idle timeout"``.

Under gunicorn's gevent worker with :func:`wsgiws.gunicorn.post_worker_init`, where a
WebSocket leaves gunicorn's pool at the 101, ``max_connections`` defaults to the
worker's ``worker_connections`` (:func:`set_default_max_connections`).

A route's connection limit is compared with the worker's count over every route:
``max_connections=100`` on a route means "accept here while the worker has fewer
than 100 open WebSockets".
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

from ._runtime import Runtime, Timer, os_lock
from .connlog import label
from .exceptions import ConnectionClosed
from .handshake import Reject
from .metrics import metrics
from .protocol import CloseCode

if TYPE_CHECKING:
    from .middleware import WebSocketOptions
    from .websocket import WebSocket

__all__ = [
    "RETRY_AFTER",
    "Admission",
    "RateLimit",
    "Revalidation",
    "TokenBucket",
    "admit",
    "client_address",
    "close_quietly",
    "revalidate_every",
    "set_default_max_connections",
]

logger = logging.getLogger("wsgiws")

#: Seconds a client refused for load (503, 429) is told to wait (``Retry-After``).
RETRY_AFTER: Final = 5

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class RateLimit:
    """``rate`` per second on average, up to ``burst`` at once (a token bucket).

    For ``byte_rate`` make ``burst`` at least the largest message you accept:
    a message larger than the bucket passes only when the bucket is full.
    """

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst <= 0:
            raise ValueError("a RateLimit needs a positive rate and burst")


class TokenBucket:
    """Refills at ``limit.rate`` per second up to ``limit.burst``; starts full."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, limit: RateLimit) -> None:
        self.rate = limit.rate
        self.burst = limit.burst
        self.tokens = limit.burst
        self.stamp = time.monotonic()

    def take(self, amount: float, now: float) -> bool:
        """Spend ``amount`` tokens if there are enough (all of them for an oversized amount)."""
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens >= min(amount, self.burst):
            self.tokens = tokens - amount  # an oversized amount leaves a debt to refill
            return True
        self.tokens = tokens
        return False


# ------------------------------------------------------------------ admission


@lru_cache(maxsize=64)
def _networks(trusted: tuple[str, ...]) -> tuple[_Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted)


def _is_trusted(address: str, networks: tuple[_Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(environ: Mapping[str, Any], trusted_proxies: Sequence[str] = ()) -> str:
    """The address of the client that made this request.

    ``REMOTE_ADDR`` (the TCP peer), unless that peer is one of ``trusted_proxies``
    (addresses or networks such as ``"10.0.0.0/8"``): then ``X-Forwarded-For`` is
    read from the right, skipping trusted proxies, and the first other address is
    the client. Entries left of it were written by the client itself and are never
    believed. A proxy that does not send the header leaves its own address.
    """
    peer = str(environ.get("REMOTE_ADDR") or "")
    if not trusted_proxies:
        return peer
    networks = _networks(tuple(trusted_proxies))
    if not _is_trusted(peer, networks):
        return peer
    forwarded = str(environ.get("HTTP_X_FORWARDED_FOR", ""))
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, networks):
            return hop
    return hops[0] if hops else peer


_open_total = 0
_open_by_client: dict[str, int] = {}
_default_max_connections: int | None = None


def set_default_max_connections(limit: int | None) -> None:
    """The worker's ``max_connections`` for options that leave it None (None: no limit)."""
    global _default_max_connections
    _default_max_connections = limit


# Held only for a few integer updates, never across anything that blocks or switches: one
# OS lock serves greenlets and the gthread worker's OS threads alike (as in wsgiws.drain).
_lock = os_lock()


class Admission:
    """A place taken by one upgrade request, from before the handler until the end."""

    __slots__ = ("client", "released")

    def __init__(self, client: str) -> None:
        global _open_total
        self.client = client
        self.released = False
        _open_total += 1  # the caller holds _lock
        _open_by_client[client] = _open_by_client.get(client, 0) + 1

    def release(self) -> None:
        global _open_total
        # (acquire and release, not ``with``: half the cost, on every connection)
        _lock.acquire()
        try:
            if self.released:
                return
            self.released = True
            _open_total -= 1
            left = _open_by_client.get(self.client, 1) - 1
            if left > 0:
                _open_by_client[self.client] = left
            else:
                _open_by_client.pop(self.client, None)
        finally:
            _lock.release()


def admit(environ: Mapping[str, Any], client: str, options: WebSocketOptions) -> Admission:
    """Take a place for this upgrade request, or raise :class:`Reject` (431, 503 or 429)."""
    cap = options.max_request_headers
    if cap is not None:
        size = request_header_bytes(environ)
        if size > cap:
            metrics.limit("max_request_headers")
            raise Reject(431, f"upgrade request headers too large ({size} > {cap} bytes)")
    limit = options.max_connections
    if limit is None:
        limit = _default_max_connections
    _lock.acquire()
    try:
        total = _open_total
        if limit is None or total < limit:
            per_client = options.max_connections_per_client
            if per_client is None or _open_by_client.get(client, 0) < per_client:
                return Admission(client)
    finally:
        _lock.release()
    retry = [("Retry-After", str(RETRY_AFTER))]
    if limit is not None and total >= limit:
        metrics.limit("max_connections")
        cap_text = f"max_connections={limit}"
        raise Reject(503, f"worker has {total} WebSockets ({cap_text})", retry)
    metrics.limit("max_connections_per_client")
    raise Reject(429, f"{client} has {per_client} WebSockets (max_connections_per_client)", retry)


def _request_header_bytes_python(environ: Mapping[str, Any]) -> int:
    """Roughly the size of the request's header lines: each ``HTTP_*`` key and its value,
    and the query string."""
    size = len(str(environ.get("QUERY_STRING", "")))
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            size += len(key) + len(str(value))
    return size


request_header_bytes: Callable[[Mapping[str, Any]], int]
try:  # The C accelerator's version: the scan costs more than the rest of admit in Python.
    if os.environ.get("WSGIWS_NO_EXTENSIONS", "") not in ("", "0"):
        raise ImportError("C extensions disabled by WSGIWS_NO_EXTENSIONS")
    from ._speedups import (  # type: ignore[import-not-found,no-redef,unused-ignore]
        request_header_bytes,
    )
except ImportError:  # pragma: no cover - depends on the build
    request_header_bytes = _request_header_bytes_python


def _reset() -> None:
    """Forget every place (tests; a forked worker)."""
    global _open_total, _lock
    _lock = os_lock()  # another thread may have held the parent's at fork time
    _open_total = 0
    _open_by_client.clear()


# ----------------------------------------------------------- timers on a connection


def runtime_of(ws: WebSocket) -> Runtime:
    """The runtime (gevent or threads) that ``ws`` runs on; it must be open."""
    rt = ws._rt
    if rt is None:
        raise RuntimeError("the WebSocket is not open yet")
    return rt


class IdleTimer:
    """Closes ``ws`` with 1000 once no data message went either way for ``seconds``.

    One timer per connection, re-armed only when it fires: a message costs a
    timestamp (``touch``), not a timer.
    """

    __slots__ = ("last", "seconds", "timer", "ws")

    def __init__(self, ws: WebSocket, seconds: float) -> None:
        self.ws = ws
        self.seconds = seconds
        self.last = time.monotonic()
        self.timer: Timer | None = runtime_of(ws).call_later(seconds, self._check)

    def _check(self) -> None:
        ws = self.ws
        self.timer = None
        if ws.closed:
            return
        rt = runtime_of(ws)
        idle = time.monotonic() - self.last
        if idle < self.seconds:
            self.timer = rt.call_later(self.seconds - idle, self._check)
            return
        metrics.limit("idle_timeout")
        logger.info("%s closing: no message for %g s (idle_timeout)", label(ws), self.seconds)
        rt.spawn(lambda: close_quietly(ws, CloseCode.NORMAL, "idle timeout"))

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


# ------------------------------------------------------------ session checks


class Revalidation:
    """Returned by :func:`revalidate_every`; ``cancel()`` stops the checks."""

    __slots__ = ("is_valid", "reason", "seconds", "timer", "ws")

    def __init__(
        self, ws: WebSocket, seconds: float, is_valid: Callable[[], bool], reason: str
    ) -> None:
        self.ws = ws
        self.seconds = seconds
        self.is_valid = is_valid
        self.reason = reason
        self.timer: Timer | None = runtime_of(ws).call_later(seconds, self._due)
        ws.add_close_callback(lambda _ws: self.cancel())

    def _due(self) -> None:
        # Timers run in the event loop, where nothing may block: check in a greenlet
        # (the check may ask a database or Redis).
        self.timer = None
        if not self.ws.closed:
            runtime_of(self.ws).spawn(self._check)

    def _check(self) -> None:
        ws = self.ws
        try:
            valid = self.is_valid()
        except Exception:
            logger.exception("%s: session check %r raised; closing", label(ws), self.is_valid)
            valid = False
        if ws.closed:
            return
        if valid:
            self.timer = runtime_of(ws).call_later(self.seconds, self._due)
            return
        metrics.limit("session_check")
        logger.info("%s closing with 1008: %s (session check)", label(ws), self.reason)
        close_quietly(ws, CloseCode.POLICY_VIOLATION, self.reason)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def revalidate_every(
    ws: WebSocket,
    seconds: float,
    is_valid: Callable[[], bool],
    reason: str = "session expired",
) -> Revalidation:
    """Call ``is_valid()`` every ``seconds`` while ``ws`` is open; close with 1008 once False.

    ``is_valid`` runs in a greenlet (or thread) of its own, so it may block on a
    session store; an exception counts as invalid. Accepts ``ws`` if it is not yet.
    OWASP's WebSocket cheat sheet asks for this: a session that expired or was
    revoked must not keep a socket that outlives it.
    """
    ws.accept()
    return Revalidation(ws, seconds, is_valid, reason)


def close_quietly(ws: WebSocket, code: int, reason: str) -> None:
    """Close ``ws``; a connection already gone is no error here."""
    try:
        ws.close(code, reason)
    except (ConnectionClosed, OSError):
        pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset)
