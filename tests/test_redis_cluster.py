"""Rooms on a real Redis Cluster (3 primaries, 3 replicas, on 127.0.0.1 free ports):
rooms on different nodes reach every member once in order across worker processes,
each process reads only its rooms, a primary killed and its replica promoted loses
nothing that was replicated, a slot moved to another node (MOVED) is followed;
presence and close_room across processes. The Streams transport and sharded pub/sub."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from websockets.exceptions import ConnectionClosed

from tests import redis_server
from tests.servers import Server, serve
from tests.test_redis import Client, check_once_in_order
from wsgiws.backends.redis import RedisBackend, RedisStreamsBackend
from wsgiws.hub import Envelope, Hub

pytestmark = [
    pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager"),
]

Backend = RedisStreamsBackend | RedisBackend


@pytest.fixture(scope="module", params=redis_server.SERVERS)
def cluster(request: pytest.FixtureRequest) -> Iterator[redis_server.RedisCluster]:
    """Redis Cluster, and a Valkey cluster through the same client library."""
    binary = redis_server.server_binary(request.param)
    with redis_server.redis_cluster(masters=3, replicas=1, binary=binary) as running:
        yield running


def wait_for(condition: Callable[[], object], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.01)


def rooms_on_every_primary(
    cluster: redis_server.RedisCluster, key: Callable[[str], str]
) -> list[str]:
    """One room per primary: ``key(room)`` (its stream or channel) is served there."""
    by_port: dict[int, str] = {}
    for n in range(1000):
        room = f"room{n}"
        by_port.setdefault(cluster.primary_of(key(room)).port, room)
        if len(by_port) == 3:
            return list(by_port.values())
    raise AssertionError("the slots are not spread over three primaries")


def make(transport: str, cluster: redis_server.RedisCluster, name: str) -> Backend:
    if transport == "streams":
        return RedisStreamsBackend(cluster.url, prefix=name, history=10_000, history_age=None)
    return RedisBackend(cluster.url, channel=name)


def key_of(transport: str, name: str) -> Callable[[str], str]:
    url = "redis+cluster://127.0.0.1:1/0"  # naming keys connects to nothing
    probe = (
        RedisStreamsBackend(url, prefix=name)
        if transport == "streams"
        else RedisBackend(url, channel=name)
    )
    if isinstance(probe, RedisStreamsBackend):
        return probe.stream_key
    return probe.channel_of


class Reader:
    """A stand-in for a worker process: one backend, what it was handed, per room."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.got: list[Envelope] = []
        backend.start(self.got.append)

    def join(self, *rooms: str) -> None:
        for room in rooms:
            self.backend.watch(room, self.backend.head(room))
        wait_for(lambda: self.backend.subscribed, what="reading")

    def payloads(self, room: str) -> list[str]:
        return [str(e.payload) for e in self.got if e.room == room]


@pytest.mark.parametrize("transport", ["streams", "pubsub"])
def test_each_process_reads_only_its_rooms(
    cluster: redis_server.RedisCluster, transport: str
) -> None:
    name = f"only-{transport}"
    rooms = rooms_on_every_primary(cluster, key_of(transport, name))
    a, b = Reader(make(transport, cluster, name)), Reader(make(transport, cluster, name))
    publisher = make(transport, cluster, name)
    try:
        a.join(rooms[0], rooms[1])
        b.join(rooms[1], rooms[2])
        for i in range(50):
            for room in rooms:
                publisher.publish(Envelope(room, f"{room}/{i}", None, "pub", len(rooms) * i + 1))
        wait_for(lambda: len(a.got) >= 100 and len(b.got) >= 100, what="100 each")
        time.sleep(0.3)  # anything extra would have come by now
        for reader, mine in ((a, rooms[:2]), (b, rooms[1:])):
            assert len(reader.got) == 100  # everything it read was for its own rooms
            for room in mine:
                assert reader.payloads(room) == [f"{room}/{i}" for i in range(50)]
    finally:
        for backend in (a.backend, b.backend, publisher):
            backend.close()


@pytest.fixture(scope="module", params=["streams", "pubsub"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def workers(cluster: redis_server.RedisCluster, transport: str) -> Iterator[Server]:
    env = {"WSGIWS_REDIS_URL": cluster.url, "HUB_TRANSPORT": transport, "HUB_MAX_QUEUE": "256"}
    with serve("gunicorn-gevent", "tests.hub_app:app", ["-w", "2"], env=env) as server:
        yield server


def test_rooms_on_every_node_reach_every_member_once_in_order(
    cluster: redis_server.RedisCluster, workers: Server, transport: str
) -> None:
    name = "wsgiws" if transport == "streams" else "wsgiws:hub"
    rooms = rooms_on_every_primary(cluster, key_of(transport, name))
    clients: dict[int, list[Client]] = {}
    deadline = time.monotonic() + 30
    while sum(len(c) for c in clients.values()) < 4:  # two on each worker
        assert time.monotonic() < deadline, "the connections never reached both workers"
        client = Client(workers, ",".join(rooms))
        if len(clients.setdefault(client.pid, [])) < 2:
            clients[client.pid].append(client)
        else:
            client.close()
            time.sleep(0.05)
    everyone = [c for cs in clients.values() for c in cs]
    plain = Hub.from_url(cluster.url, transport=transport)  # a process without sockets
    received: dict[Client, list[str]] = {c: [] for c in everyone}
    try:
        for i in range(10):  # rounds, each read before the next: no client lags
            for n, client in enumerate(everyone):
                client.command(op="send", room=rooms[n % 3], text=f"c{n}/{i}")
            for room in rooms:
                plain.send(room, f"plain-{room}/{i}")
            for client in everyone:
                received[client] += client.take(len(everyone) + 3)
        expected = {f"c{n}/{i}" for n in range(len(everyone)) for i in range(10)}
        expected |= {f"plain-{room}/{i}" for room in rooms for i in range(10)}
        for client in everyone:
            check_once_in_order(received[client] + client.collect(0), expected)
    finally:
        plain.close()
        for client in everyone:
            client.close()


def test_presence_across_processes(cluster: redis_server.RedisCluster) -> None:
    rooms = rooms_on_every_primary(cluster, key_of("streams", "who"))
    a = RedisStreamsBackend(cluster.url, prefix="who")
    b = RedisStreamsBackend(cluster.url, prefix="who")
    try:
        for n, room in enumerate(rooms):
            a.present(room, f"aaaa.{n}", {"name": f"alice{n}"})
            b.present(room, f"bbbb.{n}", {"name": f"bob{n}"})
        for n, room in enumerate(rooms):
            members, gone = a.presence(room)
            assert members == {f"aaaa.{n}": {"name": f"alice{n}"}, f"bbbb.{n}": {"name": f"bob{n}"}}
            assert gone == []
        b.absent(rooms[0], "bbbb.0")
        assert set(a.presence(rooms[0])[0]) == {"aaaa.0"}
    finally:
        a.close()
        b.close()


def replicated(primary: redis_server.RedisServer, replica: redis_server.RedisServer) -> bool:
    """The replica has everything the primary acknowledged so far."""

    replica_has = replica.call("INFO", "replication")["slave_repl_offset"]
    return int(replica_has) >= int(primary.call("INFO", "replication")["master_repl_offset"])


def test_streams_lose_nothing_replicated_when_a_primary_dies(
    cluster: redis_server.RedisCluster,
) -> None:
    room = rooms_on_every_primary(cluster, key_of("streams", "failover"))[0]
    reader = Reader(make("streams", cluster, "failover"))
    publisher = make("streams", cluster, "failover")
    assert isinstance(publisher, RedisStreamsBackend)
    primary = cluster.primary_of(publisher.stream_key(room))
    (replica,) = cluster.replicas_of(primary)
    try:
        reader.join(room)
        for i in range(50):
            publisher.publish(Envelope(room, f"m{i}", None, "pub", i + 1))
        wait_for(lambda: len(reader.got) == 50, what="the first 50")
        wait_for(lambda: replicated(primary, replica), what="the replica to catch up")
        cluster.kill(primary)
        for i in range(50, 100):  # while the replica takes over: they wait in the outbox
            publisher.publish(Envelope(room, f"m{i}", None, "pub", i + 1))
        wait_for(lambda: publisher.waiting == 0, timeout=30, what="the outbox to drain")
        assert cluster.primary_of(publisher.stream_key(room)) is replica
        wait_for(lambda: len(reader.got) >= 100, what="all 100")
        time.sleep(0.3)
        assert reader.payloads(room) == [f"m{i}" for i in range(100)]
        ids = [e.position.offset for e in reader.got if e.position is not None]
        assert len(set(ids)) == 100
    finally:
        reader.backend.close()
        publisher.close()
        primary.start()  # it comes back as the new primary's replica
        cluster.wait_healthy()


@pytest.mark.parametrize("transport", ["streams", "pubsub"])
def test_a_moved_slot_is_followed(cluster: redis_server.RedisCluster, transport: str) -> None:
    name = f"moved-{transport}"
    key = key_of(transport, name)
    room = rooms_on_every_primary(cluster, key)[0]
    reader = Reader(make(transport, cluster, name))
    publisher = make(transport, cluster, name)
    try:
        reader.join(room)
        for i in range(20):
            publisher.publish(Envelope(room, f"m{i}", None, "pub", i + 1))
        wait_for(lambda: len(reader.got) == 20, what="the first 20")
        before = reader.backend.subscriptions
        source = cluster.primary_of(key(room))
        target = next(n for n in cluster.live_nodes() if n is not source and cluster.is_primary(n))
        cluster.move_slot(int(source.call("CLUSTER", "KEYSLOT", key(room))), source, target)
        assert cluster.primary_of(key(room)) is target
        if transport == "pubsub":  # at most once: what is said while it resubscribes is gone
            wait_for(lambda: reader.backend.subscriptions > before, what="a new subscription")
            wait_for(lambda: reader.backend.subscribed, what="subscribed")
        for i in range(20, 40):
            publisher.publish(Envelope(room, f"m{i}", None, "pub", i + 1))
        wait_for(lambda: len(reader.got) >= 40, what="all 40")
        time.sleep(0.3)
        assert reader.payloads(room) == [f"m{i}" for i in range(40)]
    finally:
        reader.backend.close()
        publisher.close()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+cluster://127.0.0.1:7000/3", "database 0 only"),
        ("redis+cluster://127.0.0.1/0", "expected host:port"),
        ("redis+cluster://127.0.0.1:7000,:7001/0", "expected host:port"),
    ],
)
def test_a_bad_cluster_url_says_what_is_wrong(url: str, why: str) -> None:
    hub = Hub.from_url(url)  # connects to nothing until used
    with pytest.raises(ValueError, match=why):
        hub.position("r")


def test_close_room_closes_it_on_every_worker(
    cluster: redis_server.RedisCluster, workers: Server, transport: str
) -> None:
    name = "wsgiws" if transport == "streams" else "wsgiws:hub"
    room, elsewhere, _ = rooms_on_every_primary(cluster, key_of(transport, name))
    members: dict[int, Client] = {}
    deadline = time.monotonic() + 30
    while len(members) < 2:  # one on each worker
        assert time.monotonic() < deadline, "the connections never reached both workers"
        client = Client(workers, room)
        if client.pid in members:
            client.close()
            time.sleep(0.05)
        else:
            members[client.pid] = client
    outsider = Client(workers, elsewhere)
    try:
        first, second = members.values()
        first.command(op="close_room", room=room, code=4001, reason="logged out")
        for client in (first, second):
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    client.ws.recv(timeout=10)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "logged out")
        outsider.command(op="send", room=elsewhere, text="still/0")
        assert outsider.take(1) == ["still/0"]  # another room's socket stays open
    finally:
        for client in (*members.values(), outsider):
            client.close()
