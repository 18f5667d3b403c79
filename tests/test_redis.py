"""The Redis backend for real: a redis-server, two gunicorn instances of two gevent
workers each, clients on all four workers, plain publishers, a Redis restart and a
slow client."""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests import redis_server
from tests.servers import Server, serve
from tests.wire import RawClient
from wsgiws.hub import Hub

pytestmark = [
    pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager"),
]

APP = "tests.hub_app:app"


@pytest.fixture(scope="module", params=redis_server.SERVERS)
def redis(request: pytest.FixtureRequest) -> Iterator[redis_server.RedisServer]:
    """Redis, and Valkey through the same client library."""
    with redis_server.redis_server(binary=redis_server.server_binary(request.param)) as server:
        yield server


@pytest.fixture(scope="module", params=["streams", "pubsub"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def instances(redis: redis_server.RedisServer, transport: str) -> Iterator[list[Server]]:
    """Two gunicorn instances (as if on two hosts), two gevent workers each."""
    env = {"WSGIWS_REDIS_URL": redis.url, "HUB_MAX_QUEUE": "64", "HUB_TRANSPORT": transport}
    with ExitStack() as stack:
        yield [
            stack.enter_context(serve("gunicorn-gevent", APP, ["-w", "2"], env=env))
            for _ in range(2)
        ]


class Client:
    def __init__(self, server: Server, rooms: str) -> None:
        self.ws: ClientConnection = connect(
            f"{server.url}/ws?rooms={rooms}", open_timeout=10, max_size=None, max_queue=None
        )
        hello = json.loads(self.ws.recv(timeout=10))
        self.id: str = hello["id"]
        self.pid: int = hello["pid"]

    def command(self, **command: object) -> None:
        self.ws.send(json.dumps(command))

    def take(self, count: int, timeout: float = 15.0) -> list[str]:
        """Up to ``count`` messages (fewer if ``timeout`` passes first)."""
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                out.append(str(self.ws.recv(timeout=remaining)))
            except TimeoutError:
                break
        return out

    def collect(self, count: int, timeout: float = 15.0) -> list[str]:
        """``count`` messages, then anything more that arrives within 0.3 s."""
        out = self.take(count, timeout)
        try:
            while True:
                out.append(str(self.ws.recv(timeout=0.3)))
        except TimeoutError:
            pass
        return out

    def close(self) -> None:
        self.ws.close()


def spread_clients(servers: list[Server], rooms: str, per_worker: int = 2) -> list[Client]:
    """Connect until every worker of every server holds ``per_worker`` clients."""
    clients: list[Client] = []
    for server in servers:
        per_pid: dict[int, list[Client]] = defaultdict(list)
        deadline = time.monotonic() + 30  # a worker still booting on a loaded machine
        while time.monotonic() < deadline:
            client = Client(server, rooms)
            if len(per_pid[client.pid]) < per_worker:
                per_pid[client.pid].append(client)
            else:
                client.close()
                time.sleep(0.05)  # give the other worker a turn at accept()
            if len(per_pid) == 2 and all(len(c) == per_worker for c in per_pid.values()):
                break
        assert len(per_pid) == 2, "the connections never reached both workers"
        clients += [c for cs in per_pid.values() for c in cs]
    assert len({c.pid for c in clients}) == 4
    return clients


def check_once_in_order(messages: list[str], expected: set[str]) -> None:
    counts = Counter(messages)
    assert set(counts) == expected, (
        f"missing {sorted(expected - set(counts))[:5]} extra {sorted(set(counts) - expected)[:5]}"
    )
    assert max(counts.values()) == 1, [m for m, n in counts.items() if n > 1][:5]
    last: dict[str, int] = {}
    for message in messages:  # "publisher/k": k grows per publisher
        publisher, _, k = message.rpartition("/")
        assert int(k) > last.get(publisher, -1), f"{message} out of order"
        last[publisher] = int(k)


def test_every_client_gets_every_room_message_once(
    instances: list[Server], redis: redis_server.RedisServer, transport: str
) -> None:
    clients = spread_clients(instances, "lobby")
    outsider = Client(instances[1], "elsewhere")
    k = 15
    # a process without WebSockets (think: a cron job)
    plain = Hub.from_url(redis.url, transport=transport)
    received: dict[Client, list[str]] = {client: [] for client in clients}
    try:
        # Rounds of one message per publisher (9 in all), each round read by every
        # client before the next: the burst per socket stays far below max_queue (64),
        # so a loaded machine cannot turn a reading client into a "slow consumer".
        for i in range(k):
            for n, client in enumerate(clients):
                client.command(op="send", room="lobby", text=f"c{n}/{i}")
            plain.send("lobby", f"plain/{i}")
            for client in clients:
                received[client] += client.take(len(clients) + 1)
        for i in range(3):  # a plain HTTP route publishing, on whichever worker gets it
            request = urllib.request.Request(
                f"{instances[0].http_url}/publish?room=lobby",
                data=f"http{i}/0".encode(),  # each may land on another worker
            )
            with urllib.request.urlopen(request) as response:
                assert response.status == 204
        expected = {f"c{n}/{i}" for n in range(len(clients)) for i in range(k)}
        expected |= {f"plain/{i}" for i in range(k)} | {f"http{i}/0" for i in range(3)}
        for client in clients:
            check_once_in_order(received[client] + client.collect(3), expected)
        assert outsider.collect(0) == []  # other rooms hear nothing
        assert getattr(plain.backend, "dropped", 0) == 0
    finally:
        plain.close()
        for client in [*clients, outsider]:
            client.close()


def test_everyone_but_the_sender_across_workers(instances: list[Server]) -> None:
    clients = spread_clients(instances, "r1")
    try:
        for n, client in enumerate(clients):
            client.command(op="send", room="r1", text=f"x{n}/0", exclude_me=True)
            client.command(op="all", text=f"b{n}/0", exclude_me=True)
        for n, client in enumerate(clients):
            expected = {f"{kind}{m}/0" for m in range(len(clients)) if m != n for kind in "xb"}
            check_once_in_order(client.collect(len(expected)), expected)
    finally:
        for client in clients:
            client.close()


def test_redis_restart_keeps_rooms_and_resumes(
    instances: list[Server], redis: redis_server.RedisServer, transport: str
) -> None:
    """Redis restarted without persistence. Pub/sub: what was published meanwhile is
    lost, the rooms carry on. Streams: the message waits, and when it reaches the new
    (empty) Redis its room's history is seen to have been reset: the sockets are closed
    with 1012 so that their clients resynchronise (tests/test_recovery.py resumes)."""
    if transport == "streams":
        check_a_reset_history_closes_the_rooms_sockets(instances, redis)
        return
    clients = spread_clients(instances, "room", per_worker=1)
    by_pid = {c.pid: c for c in clients}
    try:
        redis.stop()
        time.sleep(0.5)
        # While Redis is down a message reaches its own worker's sockets only.
        sender = clients[0]
        sender.command(op="send", room="room", text="down/0")
        assert sender.collect(1, timeout=3) == ["down/0"]
        for client in clients[1:]:
            assert client.collect(0) == []
        redis.start()
        # The subscribers come back by themselves (backoff below 5 s); probe until
        # every worker hears a plain publisher again.
        plain = Hub.from_url(redis.url, transport="pubsub")
        heard: set[int] = set()
        deadline = time.monotonic() + 20
        i = 0
        while heard != set(by_pid) and time.monotonic() < deadline:
            plain.send("room", f"probe/{i}")
            i += 1
            for pid, client in by_pid.items():
                try:
                    while True:
                        if str(client.ws.recv(timeout=0.05)).startswith("probe/"):
                            heard.add(pid)
                except TimeoutError:
                    pass
        assert heard == set(by_pid), "some workers never resubscribed"
        plain.close()
        for client in clients:
            client.collect(0)  # the remaining probes
        # Nobody rejoined: the memberships survived; delivery is exactly once again.
        for n, client in enumerate(clients):
            for j in range(5):
                client.command(op="send", room="room", text=f"after{n}/{j}")
        expected = {f"after{n}/{j}" for n in range(len(clients)) for j in range(5)}
        for client in clients:
            check_once_in_order(client.collect(len(expected)), expected)
    finally:
        for client in clients:
            client.close()


def test_a_slow_client_is_cut_off_and_delays_nobody(instances: list[Server]) -> None:
    fast = spread_clients(instances, "feed", per_worker=1)
    # The slow client reads nothing for a while.
    slow = RawClient(instances[0].port, path="/ws?rooms=feed")
    assert slow.status == 101
    time.sleep(0.3)
    payload = "z" * 32768
    count = 400
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(len(fast)) as pool:  # the fast clients read all the time
            results = [pool.submit(client.collect, count, 30) for client in fast]
            for i in range(count):
                fast[i % len(fast)].command(op="send", room="feed", text=f"{i}:{payload}")
                time.sleep(0.004)  # ~8 MB/s per client: what these Python clients keep up with
            for result in results:
                got = result.result()
                # messages from different senders may interleave; each arrives once
                assert sorted(int(m.partition(":")[0]) for m in got) == list(range(count))
        elapsed = time.monotonic() - started
        assert elapsed < 20
        # The slow client fell behind by more than max_queue (64): it was closed.
        slow.sock.settimeout(10)
        frames = 0
        close_code = None
        try:
            while True:
                opcode, _, data = slow.read_frame()
                if opcode == 8:
                    close_code = int.from_bytes(data[:2], "big")
                    break
                frames += 1
        except (OSError, EOFError):
            pass  # the server gave up on a clean close and ended TCP
        assert frames < count - 64
        assert close_code in (None, 1013)
    finally:
        slow.close()
        for client in fast:
            try:
                client.close()
            except ConnectionClosed:
                pass


def check_a_reset_history_closes_the_rooms_sockets(
    instances: list[Server], redis: redis_server.RedisServer
) -> None:
    clients = spread_clients(instances, "room", per_worker=1)
    try:
        redis.stop()
        clients[0].command(op="send", room="room", text="down/0")
        for client in clients:  # nobody, not even the sender's worker: it waits for Redis
            assert client.collect(0) == []
        redis.start()
        for client in clients:
            with pytest.raises(ConnectionClosed) as closed:
                client.ws.recv(timeout=20)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    finally:
        for client in clients:
            client.close()
