"""Rooms that lose nothing: subscribers cut at random (client-side, worker SIGKILL,
Redis restarted with persistence) resume from their last position and end with every
message exactly once, in order. Two gunicorn instances x two gevent workers, a real
Redis with an append-only file, the Redis Streams transport, wsgiws.resume.Follower."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis as redis_py
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests import redis_server
from tests.conftest import require_binary
from tests.servers import Server, serve
from wsgiws.hub import Hub
from wsgiws.resume import Follower, ResumeFailed

APP = "tests.hub_app:app"

pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager")


@pytest.fixture(scope="module")
def redis() -> Iterator[redis_server.RedisServer]:
    require_binary("redis-server")
    with redis_server.redis_server(persistent=True) as server:
        yield server


@pytest.fixture(scope="module")
def instances(redis: redis_server.RedisServer) -> Iterator[list[Server]]:
    env = {
        "WSGIWS_REDIS_URL": redis.url,
        "HUB_WIRE": "json",
        "HUB_HISTORY": "20000",
        "HUB_PRESENCE_TTL": "2",
    }
    with ExitStack() as stack:
        yield [
            stack.enter_context(serve("gunicorn-gevent", APP, ["-w", "2"], env=env))
            for _ in range(2)
        ]


def workers_of(server: Server) -> list[int]:
    """The gunicorn master's worker pids (its children)."""
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


class Subscriber:
    """A thread following ``room`` with a Follower, recording every number it gets."""

    def __init__(self, url: str, total: int) -> None:
        self.follower = Follower(url, max_delay=0.5)
        self.total = total
        self.got: list[int] = []
        self.failure: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        try:
            for message in self.follower:
                self.got.append(int(message.data))
                if len(self.got) >= self.total:
                    break
        except (ResumeFailed, ValueError) as exc:
            self.failure = exc
        finally:
            self.done.set()
            self.follower.stop()


def test_ten_thousand_messages_arrive_once_in_order_through_cuts(
    instances: list[Server], redis: redis_server.RedisServer
) -> None:
    total = 10_000
    chaos = random.Random(13)  # which cut, and whom: reproducible; when: the machine's
    subscribers = [Subscriber(f"{instances[n % 2].url}/feed?room=feed", total) for n in range(8)]
    publisher = Hub.from_url(redis.url, history=20000)  # the same bound as the servers
    try:
        deadline = time.monotonic() + 20
        while any(s.follower.position is None for s in subscribers):
            assert time.monotonic() < deadline, "subscribers never got their greeting"
            time.sleep(0.05)
        cuts: list[str] = []
        kinds = ["client", "sigkill", "redis", "client", "connections", "sigkill", "client"]
        restart = threading.Thread(target=redis.restart, kwargs={"down_for": 0.5})
        cut_at = sorted(chaos.sample(range(500, total - 500), len(kinds)))
        for i in range(total):
            publisher.send("feed", str(i))
            if cut_at and i == cut_at[0]:
                cut_at.pop(0)
                kind = kinds[len(cuts)]
                cuts.append(kind)
                if kind == "client":  # one that is connected, so that the cut cuts
                    connected = [s for s in subscribers if s.follower.connected]
                    chaos.choice(connected or subscribers).follower.cut()
                elif kind == "sigkill":
                    os.kill(chaos.choice(workers_of(chaos.choice(instances))), signal.SIGKILL)
                elif kind == "connections":  # every worker's stream reader (and publisher) cut
                    restart.join()  # (Redis must be up to be asked)
                    redis_py.Redis.from_url(redis.url).client_kill_filter(
                        _type="normal", skipme=True
                    )
                else:  # down for a while, the publisher buffering meanwhile; the
                    # append-only file (synced on every write) keeps everything
                    restart.start()
            if i % 100 == 99:
                time.sleep(0.02)  # a steady stream, so that the cuts fall in the middle of it
        restart.join()
        deadline = time.monotonic() + 60
        for subscriber in subscribers:
            subscriber.done.wait(max(0.0, deadline - time.monotonic()))
        state = [(len(s.got), s.follower.connections, s.follower.position) for s in subscribers]
        print("subscribers (messages, connections, position):", state)
        if any(len(s.got) < total for s in subscribers):
            entries = redis_py.Redis.from_url(redis.url).xrange("wsgiws:{feed}:s")
            numbers = [int(f[b"d"].split(b"\n", 1)[1]) for _, f in entries]
            print("stream", len(numbers), [k for k, v in enumerate(numbers) if v != k][:5])
            for sub in subscribers:
                missing = sorted(set(range(total)) - set(sub.got))
                print("missing", len(missing), missing[:5], missing[-5:])
        for n, subscriber in enumerate(subscribers):
            assert subscriber.failure is None, (n, subscriber.failure)
            got = subscriber.got
            assert len(got) == total, (n, len(got), subscriber.follower.connections)
            assert got == list(range(total)), next((k, v) for k, v in enumerate(got) if v != k)
        reconnects = sum(s.follower.connections - 1 for s in subscribers)
        print(f"cuts {cuts}: {reconnects} reconnections, every subscriber got all {total}")
        assert reconnects >= 3  # the client-side cuts did cut (the SIGKILLs may add more)
        assert getattr(publisher.backend, "waiting", 0) == 0
    finally:
        for subscriber in subscribers:
            subscriber.follower.stop()
        publisher.close()


def who(server: Server, room: str) -> dict[str, dict[str, str]]:
    with urllib.request.urlopen(f"{server.http_url}/who?room={room}", timeout=10) as reply:
        return dict(json.load(reply))


def test_presence_spans_workers_and_a_killed_workers_members_expire(
    instances: list[Server],
) -> None:
    sockets: list[tuple[ClientConnection, int]] = []
    try:
        for n in range(8):
            ws = connect(f"{instances[n % 2].url}/ws?rooms=team&name=u{n}", open_timeout=10)
            sockets.append((ws, json.loads(ws.recv(timeout=10))["pid"]))
        pids = {pid for _, pid in sockets}
        # Over both instances at least (a second worker may still be booting under load).
        assert len(pids) >= 2
        names = {info["name"] for info in who(instances[1], "team").values()}
        assert names == {f"u{n}" for n in range(8)}
        victim = sockets[0][1]
        os.kill(victim, signal.SIGKILL)  # no leave ever said: its entries must expire
        killed_at = time.monotonic()
        alive = {f"u{n}" for n, (_, pid) in enumerate(sockets) if pid != victim}
        while {info["name"] for info in who(instances[0], "team").values()} != alive:
            assert time.monotonic() - killed_at < 2 + 3, "a dead worker's members stayed"
            time.sleep(0.1)
        # Log a user out everywhere: one call closes the room's sockets on every worker.
        survivors = [ws for ws, pid in sockets if pid != victim]
        survivors[0].send(json.dumps({"op": "close_room", "room": "team", "code": 4001,
                                      "reason": "logged out"}))  # fmt: skip
        for ws in survivors:
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=10)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "logged out")
        deadline = time.monotonic() + 10
        while who(instances[0], "team"):  # closed sockets leave the presence lists
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        for ws, _ in sockets:
            ws.close()


def test_a_position_the_history_does_not_have_is_reported_to_the_client(
    instances: list[Server], redis: redis_server.RedisServer
) -> None:
    publisher = Hub.from_url(redis.url, history=20000)
    try:
        publisher.send("elsewhere", "one")
        current = publisher.position("elsewhere")
        assert current is not None
        follower = Follower(f"{instances[0].url}/feed?room=elsewhere", position="0bad0bad:1-0")
        with pytest.raises(ResumeFailed) as failed:
            next(iter(follower))
        assert failed.value.reason == "epoch"
        assert follower.connections == 1  # told once; no reconnect loop
    finally:
        publisher.close()
