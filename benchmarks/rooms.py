"""Rooms that lose nothing, measured: the Redis Streams transport against pub/sub.

    python benchmarks/rooms.py                    # everything (a few minutes)
    python benchmarks/rooms.py --parts memory,egress

Parts:

- ``fanout``: publish-to-deliver latency p50/p99 and deliveries/s, 1,000
  subscribers over 4 gunicorn workers, Streams then pub/sub (the method and the
  Python clients defined below);
- ``memory``: Redis memory per 10,000 messages of history (100-byte payloads);
- ``recovery``: 100 clients reconnecting at once, each resuming 1,000 missed
  messages: time until the last one has caught up;
- ``egress``: what each of 8 worker processes receives from Redis with 1,000
  rooms, 10,000 messages spread over them, on one server and on a 3-primary
  cluster (Streams and sharded pub/sub: only its rooms; pub/sub on one server:
  everything).

Clients, servers and Redis share this machine's cores: the numbers are a floor.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import struct
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from gevent import monkey

monkey.patch_all()

import gevent  # noqa: E402
import gevent.pool  # noqa: E402
import redis as redis_py  # noqa: E402
from gevent import socket  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import redis_server  # noqa: E402
from tests.servers import serve  # noqa: E402
from wsgiws.backends.redis import RedisBackend, RedisStreamsBackend  # noqa: E402
from wsgiws.hub import Envelope, Hub  # noqa: E402


# Python subscribers (the earlier fan-out client): enough to compare the transports with
# each other; benchmarks/run.py --only fanout drives thousands with the C load generator.
class Subscriber:
    __slots__ = ("buf", "count", "latencies", "pid", "sock")

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("EOF in handshake")
            buf += chunk
        head, _, self.buf = buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.decode(errors="replace"))
        self.count = 0
        self.latencies: list[int] = []
        self.pid = json.loads(self.next_message())["pid"]

    def next_message(self) -> bytes:
        while True:
            buf = self.buf
            if len(buf) >= 2:
                n = buf[1] & 0x7F
                pos = 2
                if n == 126 and len(buf) >= 4:
                    (n,) = struct.unpack_from("!H", buf, 2)
                    pos = 4
                elif n == 127 and len(buf) >= 10:
                    (n,) = struct.unpack_from("!Q", buf, 2)
                    pos = 10
                if (n < 126 or pos > 2) and len(buf) >= pos + n:
                    self.buf = buf[pos + n :]
                    return buf[pos : pos + n]
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("EOF")
            self.buf += chunk

    def run(self) -> None:
        try:
            while True:
                message = self.next_message()
                now = time.monotonic_ns()
                sent = int(message.split(b":", 1)[1])
                if sent:
                    self.latencies.append(now - sent)
                self.count += 1
        except (ConnectionError, OSError):
            pass


def connect_all(port: int, n: int, workers: int) -> list[Subscriber]:
    """``n`` subscribers, an even share on each worker (reconnecting when one has enough)."""
    quota = -(-n // workers)
    per_pid: dict[int, int] = {}

    def one(_: int) -> Subscriber:
        for _attempt in range(200):
            sub = Subscriber(port, "/ws?rooms=bench")
            if per_pid.get(sub.pid, 0) < quota:
                per_pid[sub.pid] = per_pid.get(sub.pid, 0) + 1
                return sub
            sub.sock.close()
        raise RuntimeError("could not spread the subscribers over the workers")

    return list(gevent.pool.Pool(50).map(one, range(n)))


def run_setup(name: str, workers: int, subscribers: int, burst: int, env: dict[str, str]) -> dict:
    env = {**env, "HUB_MAX_QUEUE": "100000"}
    with serve("gunicorn-gevent", "tests.hub_app:app", ["-w", str(workers)], env=env) as server:
        subs = connect_all(server.port, subscribers, workers)
        spread: dict[int, int] = {}
        for s in subs:
            spread[s.pid] = spread.get(s.pid, 0) + 1
        readers = [gevent.spawn(s.run) for s in subs]
        publisher = Subscriber(server.port, "/ws")

        def publish(tag: int, stamped: bool) -> None:
            stamp = time.monotonic_ns() if stamped else 0
            text = f"{tag}:{stamp}"
            command = json.dumps({"op": "send", "room": "bench", "text": text}).encode()
            mask = os.urandom(4)
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(command))
            header = struct.pack("!BB", 0x81, 0x80 | 126) + struct.pack("!H", len(command))
            if len(command) < 126:
                header = struct.pack("!BB", 0x81, 0x80 | len(command))
            publisher.sock.sendall(header + mask + masked)

        def wait_all(total: int, timeout: float = 60.0) -> None:
            deadline = time.monotonic() + timeout
            while sum(s.count for s in subs) < total and time.monotonic() < deadline:
                gevent.sleep(0.002)

        # Warm up (Redis subscriptions, code paths).
        expected = 0
        for i in range(5):
            publish(i, False)
            expected += subscribers
            wait_all(expected)
        # Latency: one message at a time.
        for s in subs:
            s.latencies.clear()
        for i in range(60):
            publish(i, True)
            expected += subscribers
            wait_all(expected)
        latencies = sorted(x for s in subs for x in s.latencies)
        # Throughput: a burst.
        started = time.monotonic()
        for i in range(burst):
            publish(i, False)
            if i % 20 == 0:
                gevent.sleep(0)
        expected += burst * subscribers
        wait_all(expected)
        elapsed = time.monotonic() - started
        delivered = sum(s.count for s in subs)
        for g in readers:
            g.kill()
        for s in [*subs, publisher]:
            s.sock.close()
    return {
        "setup": name,
        "workers": workers,
        "subscribers": subscribers,
        "spread": sorted(spread.values()),
        "latency_p50_ms": latencies[len(latencies) // 2] / 1e6,
        "latency_p99_ms": latencies[int(len(latencies) * 0.99)] / 1e6,
        "latency_mean_ms": statistics.fmean(latencies) / 1e6,
        "burst": burst,
        "burst_seconds": elapsed,
        "deliveries_per_second": burst * subscribers / elapsed,
        "complete": delivered == expected,
    }


def fanout(subscribers: int) -> list[dict[str, object]]:
    results = []
    for transport in ("streams", "pubsub"):
        with redis_server.redis_server() as redis:
            env = {"WSGIWS_REDIS_URL": redis.url, "HUB_TRANSPORT": transport,
                   "HUB_PING_INTERVAL": "0"}  # fmt: skip
            result = run_setup(f"redis {transport}", 4, subscribers, 200, env)
        print(json.dumps(result), flush=True)
        results.append(result)
    return results


def memory() -> dict[str, object]:
    with redis_server.redis_server() as redis:
        hub = Hub.from_url(redis.url, history=20000, history_age=None)
        payload = json.dumps({"room": "r", "name": "someone", "text": "x" * 60})
        for _ in range(10_000):
            hub.send("r", payload)
        client = redis_py.Redis.from_url(redis.url)
        stream = client.memory_usage("wsgiws:{r}:s", samples=0)
        meta = client.memory_usage("wsgiws:{r}:m", samples=0)
        hub.close()
    return {"part": "memory", "payload_bytes": len(payload), "stream_bytes": stream,
            "meta_bytes": meta, "bytes_per_message": (stream or 0) / 10_000}  # fmt: skip


def recovery(clients: int = 100, missed: int = 1000) -> dict[str, object]:
    with redis_server.redis_server() as redis:
        env = {"WSGIWS_REDIS_URL": redis.url, "HUB_WIRE": "json", "HUB_HISTORY": "5000",
               "HUB_PING_INTERVAL": "0"}  # fmt: skip
        with serve("gunicorn-gevent", "tests.hub_app:app", ["-w", "2"], env=env) as server:
            hub = Hub.from_url(redis.url, history=5000)
            position = hub.position("rec")
            for i in range(missed):
                hub.send("rec", str(i))
            started = time.monotonic()

            def resume(_: int) -> float:
                sub = Subscriber(server.port, f"/feed?room=rec&after={position}")
                for _ in range(missed):
                    sub.next_message()
                sub.sock.close()
                return time.monotonic() - started

            times = sorted(gevent.pool.Pool(clients).map(resume, range(clients)))
            hub.close()
    return {"part": "recovery", "clients": clients, "missed_each": missed,
            "first_caught_up_s": times[0], "median_s": times[len(times) // 2],
            "all_caught_up_s": times[-1]}  # fmt: skip


def egress(workers: int = 8, rooms: int = 1000, messages: int = 10_000) -> dict[str, object]:
    """Worker process stand-ins: one backend each, as a worker's hub holds it; one
    server, then a cluster of 3 primaries (each with a replica)."""
    out: dict[str, object] = {"part": "egress", "workers": workers, "rooms": rooms,
                              "messages": messages}  # fmt: skip

    def run(make: Callable[[], Any], rooms_per_worker: int) -> tuple[list[int], float]:
        """Messages each worker's backend handed over, and the seconds until the last."""
        counts = [0] * workers
        backends = []
        for w in range(workers):
            backend = make()
            backend.start(lambda _e, w=w: counts.__setitem__(w, counts[w] + 1))
            for r in range(rooms):
                if (r - w) % workers < rooms_per_worker:
                    room = f"room{r}"
                    backend.watch(room, backend.head(room))
            backends.append(backend)
        while not all(b.subscribed for b in backends):
            gevent.sleep(0.05)
        gevent.sleep(0.5)
        publisher = make()
        started = time.monotonic()
        for i in range(messages):
            publisher.publish(Envelope(f"room{i % rooms}", "x" * 100, None, "p", i + 1))
        expected = messages * (rooms_per_worker if backends[0].history or backends[0].cluster
                               else workers)  # fmt: skip
        deadline = time.monotonic() + 60
        while sum(counts) < expected and time.monotonic() < deadline:
            gevent.sleep(0.01)
        elapsed = time.monotonic() - started
        for backend in [*backends, publisher]:
            backend.close()
        return counts, elapsed

    with redis_server.redis_server() as one, redis_server.redis_cluster() as cluster:
        for where, url in (("one server", one.url), ("cluster", cluster.url)):
            for layout, per_worker in (("each room in 1 worker", 1), ("in 2 workers", 2)):
                prefix = f"eg{per_worker}"
                counts, took = run(partial(RedisStreamsBackend, url, prefix=prefix), per_worker)
                out[f"streams, {where}, {layout}"] = {"per_worker": counts, "s": round(took, 2)}
            kind = "sharded pub/sub" if where == "cluster" else "pub/sub"
            counts, took = run(partial(RedisBackend, url, channel="eg"), 1)
            out[f"{kind}, {where}, each room in 1 worker"] = {"per_worker": counts,
                                                              "s": round(took, 2)}  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="memory,egress,recovery,fanout")
    parser.add_argument("--subscribers", type=int, default=1000)
    args = parser.parse_args()
    for part in args.parts.split(","):
        if part == "fanout":
            fanout(args.subscribers)
        else:
            result = {"memory": memory, "recovery": recovery, "egress": egress}[part]()
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
