"""A Prometheus endpoint for :mod:`wsgiws.metrics` (``pip install wsgiws[prometheus]``).

Serve :func:`metrics_app` on a path of your app (or mount it anywhere WSGI goes)::

    from wsgiws.prometheus import metrics_app

    def http_app(environ, start_response):
        if environ["PATH_INFO"] == "/metrics":
            return metrics_app(environ, start_response)
        ...

One process: the numbers are read from :func:`wsgiws.metrics.snapshot` when
Prometheus scrapes, next to the default registry's (your app's own metrics,
process and GC); nothing runs between scrapes.

Several worker processes (gunicorn ``-w N``): a scrape reaches one worker, which
must answer for all. Set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory
before gunicorn starts (prometheus_client's multiprocess mode) and add
``from wsgiws.prometheus import child_exit`` to gunicorn.conf.py. Each worker
then copies its numbers into prometheus_client's per-process files every
:data:`SYNC_INTERVAL` seconds (and at exit), and a scrape adds up the files of
every worker: counters of workers that died are kept, the open-connections gauge
counts live workers only. We use prometheus_client's mode rather than an
aggregation of our own because a gunicorn app that exports its own metrics
already runs in it: one directory, one endpoint, one set of rules for dead
workers. The hot path still only bumps plain integers; the copy costs one
snapshot per second per worker, whatever the traffic.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from . import metrics as _metrics
from .metrics import RTT_BUCKETS, snapshot

__all__ = ["SYNC_INTERVAL", "WebSocketCollector", "child_exit", "metrics_app"]

#: Seconds between copies of a worker's numbers in multiprocess mode.
SYNC_INTERVAL: Final = 1.0

#: (name, help, labels) of every counter; the label values come from the snapshot.
_COUNTERS: Final = {
    "handshakes": ("wsgiws_handshakes", "Upgrade requests by HTTP status answered.", ["status"]),
    "messages": ("wsgiws_messages", "Data messages by direction.", ["direction"]),
    "bytes": ("wsgiws_payload_bytes", "Message payload bytes by direction.", ["direction"]),
    "closes": ("wsgiws_closes", "Ends by close code and initiator.", ["code", "initiator"]),
    "limited": ("wsgiws_limited", "Times a limit refused, closed or dropped.", ["limit"]),
    "hub_deliveries": ("wsgiws_hub_deliveries", "Messages the hub wrote to sockets.", []),
    "hub_overflows": ("wsgiws_hub_overflows", "Hub queue overflows.", []),
    "hub_backend_reconnects": ("wsgiws_hub_backend_reconnects", "Hub re-subscriptions.", []),
}
_OPEN = ("wsgiws_open_connections", "WebSockets open now.")
_DRAIN = ("wsgiws_drain_seconds", "How long the last drain took to close every WebSocket.")
_RTT = ("wsgiws_keepalive_rtt_seconds", "Round trip of pings answered by pongs.")


def _counter_values(numbers: dict[str, Any]) -> dict[str, dict[tuple[str, ...], float]]:
    """Every counter's value per label values, from a snapshot."""
    return {
        "handshakes": {(str(k),): v for k, v in numbers["handshakes"].items()},
        "messages": {("in",): numbers["messages_in"], ("out",): numbers["messages_out"]},
        "bytes": {("in",): numbers["bytes_in"], ("out",): numbers["bytes_out"]},
        "closes": {(str(c), who): v for (c, who), v in numbers["closes"].items()},
        "limited": {(k,): v for k, v in numbers["limited"].items()},
        "hub_deliveries": {(): numbers["hub_deliveries"]},
        "hub_overflows": {(): numbers["hub_overflows"]},
        "hub_backend_reconnects": {(): numbers["hub_backend_reconnects"]},
    }


class WebSocketCollector(Collector):
    """Reads this process's numbers at scrape time (one process, no multiprocess dir)."""

    def collect(self) -> Iterator[Metric]:
        numbers = snapshot()
        for key, values in _counter_values(numbers).items():
            name, doc, labels = _COUNTERS[key]
            family = CounterMetricFamily(name, doc, labels=labels)
            for label_values, value in values.items():
                family.add_metric(list(label_values), value)
            yield family
        yield GaugeMetricFamily(*_OPEN, value=numbers["open_connections"])
        if numbers["drain_seconds"] is not None:
            yield GaugeMetricFamily(*_DRAIN, value=numbers["drain_seconds"])
        cumulative, buckets = 0, []
        for bound, count in zip([*RTT_BUCKETS, float("inf")], numbers["rtt_buckets"], strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
        yield HistogramMetricFamily(*_RTT, buckets=buckets, sum_value=numbers["rtt_sum"])


class _Mirror:
    """Copies this worker's numbers into prometheus_client's multiprocess files."""

    def __init__(self) -> None:
        registry = CollectorRegistry()  # the files are the registry; keep these out of REGISTRY
        self.counters = {
            key: Counter(name, doc, labels, registry=registry)
            for key, (name, doc, labels) in _COUNTERS.items()
        }
        self.open = Gauge(*_OPEN, registry=registry, multiprocess_mode="livesum")
        self.drain = Gauge(*_DRAIN, registry=registry, multiprocess_mode="mostrecent")
        self.rtt = Histogram(*_RTT, registry=registry, buckets=RTT_BUCKETS)
        self.copied: dict[str, dict[tuple[str, ...], float]] = {}
        self.pid = os.getpid()
        self.lock = threading.Lock()

    def sync(self) -> None:
        with self.lock:
            if self.pid != os.getpid():  # forked: the child's numbers start from zero
                self.pid, self.copied = os.getpid(), {}
            numbers = snapshot()
            for key, values in _counter_values(numbers).items():
                counter, before = self.counters[key], self.copied.get(key, {})
                for label_values, value in values.items():
                    delta = value - before.get(label_values, 0)
                    if delta > 0:
                        (counter.labels(*label_values) if label_values else counter).inc(delta)
                self.copied[key] = values
            self.open.set(numbers["open_connections"])
            if numbers["drain_seconds"] is not None:
                self.drain.set(numbers["drain_seconds"])

    def run(self) -> None:
        while True:
            time.sleep(SYNC_INTERVAL)
            self.sync()


_mirror: _Mirror | None = None


def _start_mirror() -> None:
    assert _mirror is not None
    threading.Thread(target=_mirror.run, name="wsgiws-prometheus", daemon=True).start()


if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _mirror = _Mirror()
    _metrics.rtt_hook = _mirror.rtt.observe  # pongs are rare (one per connection per ping)
    _start_mirror()
    atexit.register(_mirror.sync)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_start_mirror)  # threads do not survive a fork
else:
    REGISTRY.register(WebSocketCollector())


def metrics_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """A WSGI app answering with the metrics in Prometheus' text format."""
    if _mirror is not None:
        _mirror.sync()  # this worker's numbers up to date; the others' within SYNC_INTERVAL
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    body = generate_latest(registry)
    start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
    return [body]


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn server hook: a dead worker's open connections leave the gauge."""
    _multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
