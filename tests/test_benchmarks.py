"""The fan-out benchmark's load generator counts what it claims (benchmarks/loadgen.c).

Its ``subscribe`` mode is what wsgiws's broadcast is judged by, so it is tested: against
the benchmark's real wsgiws fan-out app (every subscriber gets every message once, in
order), and against a relay that loses one message and repeats another (the load
generator must report both, per socket, and fail the run).
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.server import ServerConnection
from websockets.sync.server import serve as ws_serve

from tests.conftest import require_binary
from tests.servers import ROOT, free_port, serve

SUBSCRIBERS = 40
WARM, GENTLE, BURST = 2, 10, 25


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = require_binary("gcc")
    out = tmp_path_factory.mktemp("loadgen") / "loadgen"
    subprocess.run(
        [gcc, "-O2", "-Wall", "-Werror", "-o", str(out), str(ROOT / "benchmarks" / "loadgen.c")],
        check=True,
    )
    return out


def subscribe(loadgen: Path, port: int, *args: str) -> dict[str, object]:
    command = [str(loadgen), "subscribe", "--port", str(port), "--conns", str(SUBSCRIBERS)]
    command += ["--rate", "200", "--gentle", str(GENTLE), "--burst", str(BURST), *args]
    result = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
    )
    lines = result.stdout.strip().splitlines()
    assert lines and lines[0].startswith("READY"), result.stderr
    report: dict[str, object] = json.loads(lines[-1])
    return report


def test_every_subscriber_gets_every_hub_message_once_in_order(loadgen: Path) -> None:
    servers = str(ROOT / "benchmarks" / "servers")
    with serve("gunicorn-gevent", "fanout_wsgiws:app", ["--chdir", servers]) as server:
        report = subscribe(loadgen, server.port, "--warm", str(WARM))
    messages = WARM + GENTLE + BURST
    assert report["errors"] == 0, report["first_error"]
    assert report["joined"] == SUBSCRIBERS
    assert report["delivered"] == report["received"] == SUBSCRIBERS * messages
    assert report["per_socket_min"] == report["per_socket_max"] == messages
    assert report["gaps"] == report["duplicates"] == 0
    assert report["gentle_samples"] == SUBSCRIBERS * GENTLE
    assert report["burst_samples"] == SUBSCRIBERS * BURST
    assert report["closed_ok"] == SUBSCRIBERS + 1  # every subscriber and the publisher


@contextmanager
def relay(
    drop: int | None = None, repeat: int | None = None, ping_interval: float | None = None
) -> Iterator[int]:
    """A websockets fan-out server on a free port: it drops the published message number
    ``drop``, sends number ``repeat`` twice, and pings every ``ping_interval`` seconds
    (closing a connection whose pong does not come within a second)."""
    subscribers: list[ServerConnection] = []
    lock = threading.Lock()

    def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        if ws.request.path.startswith("/sub"):
            with lock:
                subscribers.append(ws)
            ws.send("ok")
            for _ in ws:
                pass
            return
        for index, message in enumerate(ws):
            copies = 0 if index == drop else 2 if index == repeat else 1
            with lock:
                targets = list(subscribers)
            for sub in targets:
                for _ in range(copies):
                    sub.send(message)

    port = free_port()
    options: dict[str, Any] = {"ping_interval": ping_interval, "ping_timeout": 1.0}
    with ws_serve(handler, "127.0.0.1", port, compression=None, **options) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield port
        server.shutdown()
    thread.join(10)


def test_gaps_and_duplicates_are_counted_per_socket_and_fail_the_run(loadgen: Path) -> None:
    with relay(drop=3, repeat=5) as port:
        report = subscribe(loadgen, port, "--warm", "0", "--drain", "1")
    assert report["errors"] != 0
    assert report["complete"] is False
    assert report["gaps"] == SUBSCRIBERS  # message 3, once per socket
    assert report["duplicates"] == SUBSCRIBERS  # message 5's second copy
    messages = GENTLE + BURST
    assert report["delivered"] == SUBSCRIBERS * (messages - 1)
    assert report["received"] == SUBSCRIBERS * messages  # one lost, one repeated


def test_pings_are_answered(loadgen: Path) -> None:
    # The gentle phase lasts 2 s at 5 messages/s: a server pinging every 0.1 s closes
    # (1011) any subscriber that does not answer.
    with relay(ping_interval=0.1) as port:
        report = subscribe(loadgen, port, "--warm", "1", "--rate", "5")
    assert report["errors"] == 0, report["first_error"]
    assert report["delivered"] == SUBSCRIBERS * (1 + GENTLE + BURST)


def _fanout_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_fanout", ROOT / "benchmarks" / "fanout.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_baseline_checkout_is_served_in_process_and_over_redis() -> None:
    fanout = _fanout_module()

    def gunicorn_cmd(*args: object, workers: int, path: str, config: str) -> list[str]:
        return ["gunicorn", str(workers), path]

    defs = fanout.fanout_servers(gunicorn_cmd, "python", "/tmp/old-checkout")
    _, workers, build = defs["wsgiws-baseline-redis-4"]
    # run.py starts a Redis for the names that end with "redis-4"
    assert [n for n in defs if n.endswith("redis-4")] == [
        "wsgiws-baseline-redis-4",
        "wsgiws-redis-4",
    ]
    assert workers == 4 and build(8000, "/repo") == ["gunicorn", "4", "/tmp/old-checkout"]
    assert defs["wsgiws-redis-4"][2](8000, "/repo") == ["gunicorn", "4", "/repo"]
    assert "wsgiws-baseline-redis-4" not in fanout.fanout_servers(gunicorn_cmd, "python")


def test_fanout_settings_take_the_subscribers_and_burst_given() -> None:
    fanout = _fanout_module()
    assert fanout.fanout_config(False)["burst"] == 200
    cfg = fanout.fanout_config(False, [1000], 1000)
    assert (cfg["subscribers"], cfg["burst"], cfg["gentle"]) == ([1000], 1000, 60)
    assert fanout.fanout_config(True, None, None)["subscribers"] == [500, 2000]


def test_the_latency_scenario_runs_in_rounds_interleaved_across_servers() -> None:
    fanout = _fanout_module()
    cfg = fanout.fanout_config(False, [1000, 5000], None)
    assert fanout.scenario_order(["a", "b"], cfg) == [
        ("a", 1000),
        ("b", 1000),
        ("b", 1000),
        ("a", 1000),
        ("a", 1000),
        ("b", 1000),
        ("a", 5000),
        ("b", 5000),
    ]
    # quick mode: one round, and server by server as before
    quick = fanout.fanout_config(True, [1000, 2000], None)
    assert fanout.scenario_order(["a", "b"], quick) == [
        ("a", 1000),
        ("a", 2000),
        ("b", 1000),
        ("b", 2000),
    ]


def _round(p99: float, errors: int = 0, **extra: Any) -> dict:
    r = {"errors": errors, "gentle_p50_ms": p99 / 2, "gentle_p99_ms": p99}
    r.update(burst_per_s=1000.0 * p99, gaps=0, duplicates=0, spread=[])
    r.update(extra)
    return r


def test_rounds_merge_into_medians_and_a_failed_round_fails_the_cell() -> None:
    fanout = _fanout_module()
    merged = fanout.merge_rounds([_round(30.0), _round(10.0, gaps=2), _round(12.0)])
    assert merged["gentle_p99_ms"] == 12.0 and merged["burst_per_s"] == 12000.0
    assert merged["gaps"] == 2  # summed: a gap in any round counts
    assert [r["gentle_p99_ms"] for r in merged["rounds"]] == [30.0, 10.0, 12.0]
    failed = fanout.merge_rounds([_round(10.0), _round(0.0, errors=1, first_error="boom")])
    assert failed["errors"] == 1 and failed["first_error"] == "boom"
    assert fanout.merge_rounds([_round(10.0)]) == _round(10.0)


def test_the_report_shows_the_median_and_the_range_of_the_rounds() -> None:
    fanout = _fanout_module()
    cfg = fanout.fanout_config(False, [1000], None)
    rounds = {"wsgiws": [30.0, 10.0, 12.0], "node-ws": [11.0, 15.0, 13.0]}
    data = {
        "fanout_servers": ["wsgiws", "node-ws"],
        "fanout": {
            f"{name}/1000": fanout.merge_rounds(
                [_round(p, mem_kib=10.0, burst_client_cpu=0.5, burst_server_cpu=1.0) for p in ps]
            )
            for name, ps in rounds.items()
        },
    }
    text = "\n".join(fanout.report(data, cfg))
    assert "median of 3 runs" in text
    assert "6.0 / 12.0 [10.0\u201330.0] ✅" in text  # 12.0 (median) <= node's 13.0
    assert "6.5 / 13.0 [11.0\u201315.0]" in text
