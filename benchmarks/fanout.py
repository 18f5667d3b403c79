"""Fan-out through the hub: 1,000 subscribers in one room, one publisher.

    python benchmarks/fanout.py                  # both setups
    python benchmarks/fanout.py --subscribers 200 --setups local

Setups (the app is tests/hub_app.py under gunicorn's gevent worker):

- ``local``: one worker, in-process hub, every subscriber in that worker;
- ``redis``: four workers sharing a redis-server (started here on a free port),
  subscribers spread over them by the kernel's accept.

The subscribers are raw WebSocket clients (gevent, a minimal frame parser) in
this process; the publisher is one more WebSocket client that asks its worker
to ``hub.send`` a message carrying the monotonic clock (one clock for all
processes on Linux). Reported:

- added latency p50/p99: publisher send -> subscriber parse, at a gentle rate
  (every message reaches every subscriber before the next is sent);
- fan-out throughput: messages delivered per second to subscribers while the
  publisher sends a burst as fast as it can.

Clients and servers share this machine's cores: the numbers are a floor.
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
from pathlib import Path

from gevent import monkey

monkey.patch_all()

import gevent  # noqa: E402
import gevent.pool  # noqa: E402
from gevent import socket  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import redis_server  # noqa: E402
from tests.servers import serve  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--setups", default="local,redis")
    args = parser.parse_args()
    results = []
    for setup in args.setups.split(","):
        if setup == "local":
            results.append(run_setup("in-process", 1, args.subscribers, args.burst, {}))
        elif setup == "redis":
            with redis_server.redis_server() as redis:
                env = {"WSGIWS_REDIS_URL": redis.url}
                results.append(run_setup("redis", 4, args.subscribers, args.burst, env))
        print(json.dumps(results[-1]), flush=True)
    print()
    print("| setup | workers | subscribers (per worker) | p50 ms | p99 ms | deliveries/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['setup']} | {r['workers']} | {r['subscribers']} {r['spread']} | "
            f"{r['latency_p50_ms']:.1f} | {r['latency_p99_ms']:.1f} | "
            f"{r['deliveries_per_second']:,.0f} |"
        )


if __name__ == "__main__":
    main()
