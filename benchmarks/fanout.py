"""Fan-out scenarios of benchmarks/run.py: one publisher, N subscribers, one room.

The subscribers and the publisher are the C load generator (``loadgen subscribe``) on
the client core, so no Python client shares the server's core or limits the numbers.
Every message carries its sequence number and the time it was written; the load
generator reports the added latency of each delivery (publisher write -> subscriber
read), deliveries per second, and per socket the count, gaps and duplicates.

Per (server, subscribers): a fresh server; the subscribers connect and each waits for
the server's ``ok`` (it is in the room); the server's RSS before and after gives the
memory per subscriber; then 5 warm-up messages one at a time, the *gentle* phase
(messages at a fixed rate, 20/s) and the *burst* (200 messages in one write). The
scenario of the latency target (1,000 subscribers) runs in 3 rounds: see fanout_config.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the repository: its tests' Redis launcher

from tests import redis_server  # noqa: E402

SERVERS_DIR = os.path.join(HERE, "servers")
NODE_DIR = os.path.join(HERE, "node")


def fanout_servers(
    gunicorn_cmd: Callable[..., list[str]], py: str, baseline: str | None = None
) -> dict[str, tuple[str, int, Callable[[int, str], list[str]]]]:
    """name -> (description, workers, command builder(port, wsgiws_root)).

    ``baseline``: another wsgiws checkout, served as ``wsgiws-baseline`` (the in-process
    hub of, say, the main branch, to compare a change against in the same run) and as
    ``wsgiws-baseline-redis-4`` (its hub over Redis, as ``wsgiws-redis-4``)."""

    def wsgiws(workers: int, checkout: str | None = None) -> Callable[[int, str], list[str]]:
        def cmd(port: int, root: str) -> list[str]:
            return gunicorn_cmd(
                "gevent",
                SERVERS_DIR,
                "fanout_wsgiws:app",
                port,
                workers=workers,
                path=checkout or root,
                config=os.path.join(SERVERS_DIR, "wsgiws_gunicorn_conf.py"),
            )

        return cmd

    baseline_server = {
        "wsgiws-baseline": (
            f"the wsgiws checkout {baseline}, otherwise as wsgiws",
            1,
            wsgiws(1, baseline),
        ),
        "wsgiws-baseline-redis-4": (
            f"the wsgiws checkout {baseline}, otherwise as wsgiws-redis-4",
            4,
            wsgiws(4, baseline),
        ),
    }
    return {
        **(baseline_server if baseline else {}),
        "wsgiws": (
            "wsgiws Hub, in-process, gunicorn -k gevent, 1 worker (servers/fanout_wsgiws.py)",
            1,
            wsgiws(1),
        ),
        "wsgiws-redis-4": (
            "wsgiws Hub over Redis, gunicorn -k gevent, 4 workers + redis-server, all on the "
            "server core",
            4,
            wsgiws(4),
        ),
        "node-ws": (
            "Node ws, a broadcast loop over a Set of sockets (node/server.js)",
            1,
            lambda port, root: ["node", os.path.join(NODE_DIR, "server.js"), "--port", str(port)],
        ),
        "websockets": (
            "websockets broadcast() on the default asyncio loop (servers/websockets_asyncio.py)",
            1,
            lambda port, root: [
                py,
                os.path.join(SERVERS_DIR, "websockets_asyncio.py"),
                "--port",
                str(port),
            ],
        ),
    }


DEFAULT_FANOUT = ["wsgiws", "node-ws", "websockets", "wsgiws-redis-4"]


#: The subscriber count of the latency target. Its scenario runs in rounds (see
#: fanout_config): one late message among the 60 of a gentle phase is its p99, and the
#: machine's hiccups are as long as a fan-out to 1,000 sockets, so one run decides little.
LATENCY_SUBSCRIBERS = 1000


def fanout_config(
    quick: bool, subscribers: list[int] | None = None, burst: int | None = None
) -> dict:
    """The fan-out settings, with --subscribers and --burst over the defaults.

    ``latency_rounds``: how many times the LATENCY_SUBSCRIBERS scenario runs, each
    against a fresh server, interleaved across servers; its cells are the medians."""
    if quick:
        cfg = dict(subscribers=[500, 2000], gentle=20, rate=20.0, burst=50, warm=3)
        cfg["latency_rounds"] = 1
    else:
        cfg = dict(subscribers=[1000, 5000, 10000], gentle=60, rate=20.0, burst=200, warm=5)
        cfg["latency_rounds"] = 3
    if subscribers:
        cfg["subscribers"] = subscribers
    if burst:
        cfg["burst"] = burst
    return cfg


def scenario_order(names: list[str], cfg: dict) -> list[tuple[str, int]]:
    """(server, subscribers) in the order they run: first the latency scenario's rounds,
    every server once per round (in reverse order every other round, so that no server
    always runs first), then the other counts, server by server."""
    order = []
    if cfg["latency_rounds"] > 1 and LATENCY_SUBSCRIBERS in cfg["subscribers"]:
        for i in range(cfg["latency_rounds"]):
            for name in names if i % 2 == 0 else names[::-1]:
                order.append((name, LATENCY_SUBSCRIBERS))
    for name in names:
        order.extend((name, n) for n in cfg["subscribers"] if (name, n) not in order)
    return order


def merge_rounds(rounds: list[dict]) -> dict:
    """One cell from a scenario's rounds: a failed round fails the cell (its error is the
    cell's); otherwise each number is the median over rounds. ``rounds`` keeps each
    round's latencies and rate (the report shows the p99's range)."""
    if len(rounds) == 1:
        return rounds[0]
    shown = ("gentle_p50_ms", "gentle_p99_ms", "burst_per_s", "errors")
    kept = [{k: r.get(k) for k in shown} for r in rounds]
    failed = [r for r in rounds if r.get("errors", 1)]
    if failed:
        return dict(failed[0], rounds=kept)
    merged: dict = {}
    for key, value in rounds[0].items():
        values = [r.get(key) for r in rounds]
        if isinstance(value, (int, float)) and all(isinstance(v, (int, float)) for v in values):
            merged[key] = statistics.median(values)  # type: ignore[type-var]
        else:
            merged[key] = value
    merged["gaps"] = sum(r["gaps"] for r in rounds)  # every round's, not a median
    merged["duplicates"] = sum(r["duplicates"] for r in rounds)
    merged["rounds"] = kept
    return merged


@contextmanager
def redis_on_core(core: str) -> Iterator[redis_server.RedisServer]:
    """A throw-away redis-server (the tests' launcher, tests/redis_server.py) pinned to
    the server core; RuntimeError when it is missing or does not start."""
    if not redis_server.available():
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    with redis_server.redis_server() as server:
        assert server.process is not None
        os.sched_setaffinity(server.process.pid, {int(core)})
        yield server


def socket_count(pid: int) -> int:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    n = 0
    for fd in fds:
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n


def run_subscribe(
    loadgen: str,
    core: str,
    port: int,
    n: int,
    cfg: dict,
    pids: list[int],
    workers: list[int],
    rss_kib: Callable[[list[int]], int],
) -> dict:
    """One fan-out scenario against a running server; returns the load generator's JSON
    plus the memory per subscriber and the subscribers per worker."""
    import json

    time.sleep(0.3)
    before = rss_kib(pids)
    sockets_before = {w: socket_count(w) for w in workers}
    drain = 30 + n * cfg["burst"] / 20000  # time-out only: a slow server must still finish
    cmd = ["taskset", "-c", core, loadgen, "subscribe", "--port", str(port)]
    cmd += ["--conns", str(n), "--size", "64", "--warm", str(cfg["warm"])]
    cmd += ["--gentle", str(cfg["gentle"]), "--rate", str(cfg["rate"])]
    cmd += ["--burst", str(cfg["burst"]), "--drain", f"{drain:.0f}"]
    cmd += ["--pids", ",".join(map(str, pids)), "--max-seconds", "120"]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdin is not None
        line = p.stdout.readline().split()
        joined = int(line[1]) if len(line) >= 2 and line[0] == "READY" else 0
        time.sleep(1.0)  # let the server settle before reading its memory
        after = rss_kib(pids)
        spread = sorted(socket_count(w) - sockets_before[w] for w in workers)
        p.stdin.write("\n")
        p.stdin.flush()
        out, _ = p.communicate(timeout=120 + 3 * drain)
    except (subprocess.TimeoutExpired, ValueError, OSError) as e:
        p.kill()
        p.wait()
        return {"errors": 1, "first_error": f"subscribe run failed: {e}"}
    try:
        res = json.loads(out.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"errors": 1, "first_error": "no result from the load generator"}
    res["mem_kib"] = (after - before) / joined if joined else None
    deliveries = res.get("joined", 0) * cfg["gentle"]
    # Server CPU time, not wall time: it stays put when other work shares the machine.
    res["cpu_ms_per_1000"] = (
        res["gentle_server_cpu"] * res["gentle_seconds"] * 1e6 / deliveries
        if deliveries and "gentle_server_cpu" in res
        else None
    )
    res["rss_before_kib"], res["rss_after_kib"] = before, after
    res["spread"] = spread
    return res


def ensure_node(names: list[str]) -> None:
    """Install the Node peer's ``ws`` (benchmarks/node/node_modules) or say why not."""
    if not any(s.startswith("node") for s in names):
        return
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise SystemExit(
            "the Node peers (node-ws) need node and npm on PATH: install Node.js 18+ "
            "(apt-get install nodejs npm), or leave them out with --servers / "
            "--fanout-servers"
        )
    if not os.path.exists(os.path.join(NODE_DIR, "node_modules", "ws", "package.json")):
        print("installing the Node peer's ws into benchmarks/node/ (npm ci)", flush=True)
        subprocess.check_call([npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=NODE_DIR)


def report(data: dict, cfg: dict) -> list[str]:
    """The fan-out section of docs/benchmarks.md."""
    res = data.get("fanout", {})
    L = ["## Fan-out: one publisher, one room\n"]
    L.append(
        f"64-byte text messages from one publisher socket to every subscriber in one room; "
        f"the subscribers and the publisher are the C load generator on the client core. "
        f"**Added latency** is from the publisher's write to the subscriber's read, over "
        f"every delivery of the gentle phase ({cfg['gentle']} messages at "
        f"{cfg['rate']:.0f}/s). **Deliveries/s** is subscribers × {cfg['burst']} ÷ the time "
        f"from writing a burst of {cfg['burst']} messages (one write) to the last delivery. "
        f"**Memory** is the server's RSS growth ÷ subscribers, with every subscriber "
        f"connected and in the room. Every delivery is checked: each socket must get every "
        f"message once, in order (gaps and duplicates are counted). CPU is a fraction of "
        f"one core during the burst (client / server; the server figure sums all its "
        f"processes, Redis included). **Server CPU / 1,000** is the server's CPU time, in ms, "
        f"per 1,000 deliveries of the gentle phase (CPU time, not wall time: it holds when "
        f"other work shares the machine). "
        + (
            f"At {LATENCY_SUBSCRIBERS:,} subscribers (the latency target's count) each cell "
            f"is the median of {cfg['latency_rounds']} runs, interleaved across servers, "
            f"with the p99's range across them in brackets: one late message among the "
            f"{cfg['gentle']} is the p99 of a run. Elsewhere one run per cell.\n"
            if cfg.get("latency_rounds", 1) > 1
            else "One run per cell.\n"
        )
    )
    L.append(
        "| subscribers | server | added latency p50 / p99 (ms) | deliveries/s | "
        "vs node ws | memory / subscriber (KiB) | CPU client / server | "
        "server CPU / 1,000 (ms) | per worker | gaps / dups |"
    )
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for n in cfg["subscribers"]:
        node = res.get(f"node-ws/{n}", {})
        node_rate = node.get("burst_per_s") if node.get("errors") == 0 else None
        for name in data.get("fanout_servers", []):
            r = res.get(f"{name}/{n}")
            if r is None:
                continue
            if r.get("errors", 1):
                mark = " ❌" if name == "wsgiws" and n == 10000 else ""
                L.append(
                    f"| {n:,} | `{name}` | failed{mark}: {r.get('first_error', '?')} | | | | | | | "
                    f"{r.get('gaps', '—')} / {r.get('duplicates', '—')} |"
                )
                continue
            vs = f"{r['burst_per_s'] / node_rate:.2f}×" if node_rate else "—"
            lat = f"{r['gentle_p50_ms']:.1f} / {r['gentle_p99_ms']:.1f}"
            if len(r.get("rounds", [])) > 1:
                p99s = [x["gentle_p99_ms"] for x in r["rounds"]]
                lat += f" [{min(p99s):.1f}–{max(p99s):.1f}]"
            if name == "wsgiws":  # the targets are for the in-process hub
                if node_rate and n in (1000, 5000):
                    vs += " ✅" if r["burst_per_s"] >= node_rate else " ❌"
                if n == LATENCY_SUBSCRIBERS and node.get("errors") == 0:
                    lat += " ✅" if r["gentle_p99_ms"] <= node["gentle_p99_ms"] else " ❌"
            mem = f"{r['mem_kib']:.1f}" if r.get("mem_kib") is not None else "—"
            spread = "/".join(map(str, r.get("spread", []))) if len(r.get("spread", [])) > 1 else ""
            if name == "wsgiws" and n == 10000:
                lat += " ✅ (all held and served)"
            per_1000 = r.get("cpu_ms_per_1000")
            cpu_per_1000 = f"{per_1000:.1f}" if per_1000 is not None else "—"
            L.append(
                f"| {n:,} | `{name}` | {lat} | "
                f"{r['burst_per_s']:,.0f} | {vs} | {mem} | "
                f"{r['burst_client_cpu']:.2f} / {r['burst_server_cpu']:.2f} | {cpu_per_1000} | "
                f"{spread} | "
                f"{r['gaps']} / {r['duplicates']} |"
            )
    L.append("")
    L.append(
        "Targets for wsgiws (in-process hub, one worker): deliveries/s ≥ 1.0× node ws at "
        "1,000 and 5,000 subscribers; added latency p99 at 1,000 subscribers (gentle) ≤ "
        "node ws's; 10,000 subscribers held and served in one worker.\n"
    )
    for name, reason in data.get("fanout_skipped", {}).items():
        L.append(f"- `{name}` skipped: {reason}")
    L.append("")
    return L


COLORS = {"wsgiws": "#1f77b4", "wsgiws-redis-4": "#9ecae1", "node-ws": "#ff7f0e"}
COLORS["wsgiws-baseline"] = "#aec7e8"
COLORS["websockets"] = "#2ca02c"


def plot(axes, data: dict) -> None:
    """One chart row: deliveries/s, gentle p99 latency, memory per subscriber."""
    res, cfg = data["fanout"], data["fanout_config"]
    names = data["fanout_servers"]
    counts = cfg["subscribers"]
    panels = [
        ("burst_per_s", "fan-out deliveries/s (burst), higher is better"),
        ("gentle_p99_ms", "fan-out added latency p99, ms (gentle), lower is better"),
        ("mem_kib", "memory per subscriber, KiB, lower is better"),
    ]
    width = 0.8 / max(1, len(names))
    for ax, (key, title) in zip(axes, panels, strict=False):
        for j, name in enumerate(names):
            vals = []
            for n in counts:
                r = res.get(f"{name}/{n}", {})
                vals.append(r.get(key) or 0 if r.get("errors") == 0 else 0)
            color = COLORS.get(name, "#7f7f7f")
            ax.bar(
                [i + j * width for i in range(len(counts))], vals, width, label=name, color=color
            )
        ax.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(counts))])
        ax.set_xticklabels([f"{n:,} subs" for n in counts], fontsize=8)
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7)
    axes[-1].axis("off")
    axes[-1].text(
        0,
        0.5,
        "Fan-out targets for wsgiws (1 worker):\n"
        "- deliveries/s >= node ws\n  at 1,000 and 5,000\n"
        "- p99 latency at 1,000 <= node ws's\n"
        "- 10,000 subscribers held and served\n"
        "(a missing bar: the run failed)",
        fontsize=8,
        va="center",
    )
