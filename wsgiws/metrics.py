"""Counters and gauges of this process's WebSockets, cheap enough to leave on.

Every server-side WebSocket that :func:`wsgiws.middleware.run_session` opens
counts here (through its :class:`~wsgiws.monitor.SessionObserver`); read them
with :func:`snapshot`::

    from wsgiws import metrics
    metrics.snapshot()["open_connections"]

The numbers are per process (one gunicorn worker): plain integers bumped in the
greenlet that moves each message, with no lock (a lost increment between two
OS threads of the gthread worker is possible and harmless for a graph). For a
Prometheus endpoint that sums every worker see :mod:`wsgiws.prometheus`.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from . import drain

if TYPE_CHECKING:
    from .hub import Hub

__all__ = ["RTT_BUCKETS", "Metrics", "metrics", "reset", "snapshot", "track_hub"]

#: Upper bounds (seconds) of the keepalive round-trip histogram's buckets.
RTT_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Traffic(Protocol):
    """One open connection's counters: the engine's own (``WebSocket.traffic``), which
    count every data message; what a limit kept from the application is taken off the
    totals (:meth:`Metrics.not_delivered`)."""

    @property
    def messages_in(self) -> int: ...
    @property
    def bytes_in(self) -> int: ...
    @property
    def messages_out(self) -> int: ...
    @property
    def bytes_out(self) -> int: ...


class Metrics:
    """The process's numbers. Counters only grow; gauges go up and down."""

    def __init__(self) -> None:
        self.open_connections = 0  #: gauge: WebSockets open now
        #: handshakes by HTTP status answered: 101 accepted, 403/429/503/... refused
        self.handshakes: dict[int, int] = {}
        # Traffic of connections that ended, less what limits kept from the application;
        # open ones count their own (see ``live``).
        self.messages_in = 0
        self.messages_out = 0
        self.bytes_in = 0  #: payload bytes received (after inflation)
        self.bytes_out = 0  #: payload bytes sent (before deflate)
        #: The open connections' counters: a message bumps only its connection's two
        #: integers, and :func:`snapshot` adds them up.
        self.live: set[Traffic] = set()
        #: closes by (code, initiator): initiator is "local", "remote" or "abnormal"
        self.closes: dict[tuple[int, str], int] = {}
        #: times a limit acted, by limit name (see docs/operating.md)
        self.limited: dict[str, int] = {}
        self.rtt_count = 0  #: pongs answered to our pings
        self.rtt_sum = 0.0  #: their round trips added up (seconds)
        #: pongs per histogram bucket (``RTT_BUCKETS``, then +Inf), not cumulative
        self.rtt_buckets = [0] * (len(RTT_BUCKETS) + 1)
        self.hub_backend_reconnects = 0
        self.drain_started: float | None = None  #: monotonic time the running drain began
        self.drain_seconds: float | None = None  #: how long the last drain took to empty

    def handshake(self, status: int) -> None:
        self.handshakes[status] = self.handshakes.get(status, 0) + 1

    def limit(self, name: str) -> None:
        self.limited[name] = self.limited.get(name, 0) + 1

    def rtt(self, seconds: float) -> None:
        if rtt_hook is not None:
            rtt_hook(seconds)
        self.rtt_count += 1
        self.rtt_sum += seconds
        index = 0
        for bound in RTT_BUCKETS:
            if seconds <= bound:
                break
            index += 1
        self.rtt_buckets[index] += 1

    def opened(self, traffic: Traffic) -> None:
        self.open_connections += 1
        self.live.add(traffic)
        handshakes = self.handshakes  # (handshake(101), inlined: once per connection)
        handshakes[101] = handshakes.get(101, 0) + 1

    def not_delivered(self, size: int) -> None:
        """A limit kept a received message (``size`` bytes) from the application: the
        engine counted it in, the totals must not."""
        self.messages_in -= 1
        self.bytes_in -= size

    def closed(self, traffic: Traffic, code: int, initiator: str) -> None:
        self.open_connections -= 1
        self.live.discard(traffic)
        self.messages_in += traffic.messages_in
        self.bytes_in += traffic.bytes_in
        self.messages_out += traffic.messages_out
        self.bytes_out += traffic.bytes_out
        key = (code, initiator)
        self.closes[key] = self.closes.get(key, 0) + 1
        if self.open_connections == 0 and self.drain_started is not None:
            self.drain_seconds = time.monotonic() - self.drain_started
            self.drain_started = None


metrics = Metrics()
#: Called with every round trip (the Prometheus exporter's histogram in multiprocess mode).
rtt_hook: Callable[[float], object] | None = None
_hubs: weakref.WeakSet[Hub] = weakref.WeakSet()


def track_hub(hub: Hub) -> None:
    """Count ``hub``'s deliveries and overflows in :func:`snapshot` (every Hub calls this)."""
    _hubs.add(hub)


def snapshot() -> dict[str, Any]:
    """A copy of every number, with the hubs' counters added up."""
    m = metrics
    hubs = list(_hubs)
    live = list(m.live)  # one C-level copy: safe against another thread's open or close
    return {
        "open_connections": m.open_connections,
        "handshakes": dict(m.handshakes),
        "messages_in": m.messages_in + sum(t.messages_in for t in live),
        "messages_out": m.messages_out + sum(t.messages_out for t in live),
        "bytes_in": m.bytes_in + sum(t.bytes_in for t in live),
        "bytes_out": m.bytes_out + sum(t.bytes_out for t in live),
        "closes": dict(m.closes),
        "limited": dict(m.limited),
        "rtt_count": m.rtt_count,
        "rtt_sum": m.rtt_sum,
        "rtt_buckets": list(m.rtt_buckets),
        "hub_deliveries": sum(h.stats.delivered for h in hubs),
        "hub_overflows": sum(h.stats.overflows for h in hubs),
        "hub_backend_reconnects": m.hub_backend_reconnects,
        "drain_seconds": m.drain_seconds,
    }


def reset() -> None:
    """Start from zero (tests; a forked worker must not inherit its parent's numbers)."""
    metrics.__init__()  # type: ignore[misc]  # in place: importers hold this object
    _hubs.clear()


@drain.on_drain
def _drain_started() -> None:
    metrics.drain_started = time.monotonic()
    if metrics.open_connections == 0:
        metrics.drain_seconds = 0.0
        metrics.drain_started = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=reset)
