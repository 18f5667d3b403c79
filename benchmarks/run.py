#!/usr/bin/env python3
"""One command for the wsgiws benchmarks: echo against the peers, then fan-out.

    python benchmarks/run.py            # full run, ~15-20 minutes on 2 cores
    python benchmarks/run.py --quick    # smoke run, ~3 minutes

Starts each echo server (1 worker/process, pinned to core 0), drives it with the
compiled epoll load generator (pinned to core 1), interleaves rounds across
servers, then runs the fan-out scenarios (benchmarks/fanout.py), and writes
docs/benchmarks.md, docs/benchmarks.png and docs/benchmarks.json.  Echo results
are reported as ratios to "the bound", the minimal hand-written echo on a bare
gevent StreamServer, measured in the same round, because this machine is shared
and noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

import fanout

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS_DIR = os.path.join(HERE, "servers")
BUILD_DIR = os.path.join(HERE, ".build")
PY = sys.executable

# ---------------------------------------------------------------- servers


#: The gunicorn config of the wsgiws servers (the recommended hook, no access log).
WSGIWS_GUNICORN_CONF = os.path.join(SERVERS_DIR, "wsgiws_gunicorn_conf.py")


def gunicorn_cmd(
    worker: str,
    chdir: str,
    app: str,
    port: int,
    workers: int = 1,
    path: str | None = None,
    config: str | None = None,
) -> list[str]:
    return [
        PY,
        "-m",
        "gunicorn",
        *(["-c", config] if config else []),
        "-k",
        worker,
        "-w",
        str(workers),
        *(["--pythonpath", path] if path else []),
        "-b",
        f"127.0.0.1:{port}",
        "--chdir",
        chdir,
        "--worker-connections",
        "20000",
        "--backlog",
        "2048",
        "--timeout",
        "120",
        "--graceful-timeout",
        "2",
        "--log-level",
        "warning",
        app,
    ]


def script_cmd(name: str, port: int, extra: list[str] | None = None) -> list[str]:
    return [PY, os.path.join(SERVERS_DIR, name), "--port", str(port), *(extra or [])]


# name -> (description, needs the wsgiws checkout, command builder(port, wsgiws_root))
SERVERS = {
    "bound": (
        "minimal hand-written echo, bare gevent StreamServer (servers/bound.py)",
        False,
        lambda port, root: script_cmd("bound.py", port),
    ),
    "wsgiws-gunicorn": (
        "wsgiws examples.echo:app, gunicorn -k gevent, 1 worker",
        True,
        lambda port, root: gunicorn_cmd(
            "gevent", root, "examples.echo:app", port, config=WSGIWS_GUNICORN_CONF
        ),
    ),
    "wsgiws-pywsgi": (
        "wsgiws examples.echo:app, gevent.pywsgi (servers/wsgiws_pywsgi.py)",
        True,
        lambda port, root: script_cmd("wsgiws_pywsgi.py", port, ["--wsgiws", root]),
    ),
    "gevent-websocket": (
        "gevent-websocket WebSocketServer on gevent.pywsgi",
        False,
        lambda port, root: script_cmd("gevent_websocket.py", port),
    ),
    "gevent-websocket-gunicorn": (
        "gevent-websocket app, gunicorn GeventWebSocketWorker, 1 worker",
        False,
        lambda port, root: gunicorn_cmd(
            "geventwebsocket.gunicorn.workers.GeventWebSocketWorker",
            SERVERS_DIR,
            "gevent_websocket:app",
            port,
        ),
    ),
    "floor-gunicorn": (
        "no library: a bare WSGI app doing the upgrade and the bound's frame loop in gunicorn -k "
        "gevent (servers/floor_gunicorn.py): what gunicorn itself costs",
        False,
        lambda port, root: gunicorn_cmd("gevent", SERVERS_DIR, "floor_gunicorn:app", port),
    ),
    "floor-gunicorn-detached": (
        "the floor, with the connection handed to a fresh greenlet on a duplicate socket "
        "once upgraded, so that gunicorn lets go of its per-request state (an experiment "
        "for the memory plan; gunicorn's connection limit no longer counts it)",
        False,
        lambda port, root: gunicorn_cmd("gevent", SERVERS_DIR, "floor_gunicorn:detached", port),
    ),
    "flask-sock": (
        "flask-sock (simple-websocket) on gevent.pywsgi",
        False,
        lambda port, root: script_cmd("flasksock_echo.py", port),
    ),
    "websockets": (
        "websockets asyncio server, default asyncio loop",
        False,
        lambda port, root: script_cmd("websockets_asyncio.py", port),
    ),
    "picows": (
        "picows (Cython) on the default asyncio loop (servers/picows_echo.py)",
        False,
        lambda port, root: script_cmd("picows_echo.py", port),
    ),
    "node-ws": (
        "Node ws (node/server.js)",
        False,
        lambda port, root: ["node", os.path.join(HERE, "node", "server.js"), "--port", str(port)],
    ),
}
DEFAULT_SERVERS = [
    "bound",
    "wsgiws-gunicorn",
    "wsgiws-pywsgi",
    "floor-gunicorn",
    "floor-gunicorn-detached",
    "gevent-websocket",
    "flask-sock",
    "websockets",
    "picows",
    "node-ws",
]

# ---------------------------------------------------------------- metrics

# key, label, unit, higher_is_better, target ratio (None: none), target is a max
METRICS = [
    ("lat_p50", "latency p50", "µs", False, 0.95),
    ("lat_p99", "latency p99", "µs", False, None),
    ("small", "32 B × 50 conns × 4 in flight", "msg/s", True, 0.9),
    ("kib4", "4 KiB × 10 conns", "MB/s", True, 2.0),
    ("mib1", "1 MiB × 1 conn", "MB/s", True, 5.0),
    ("hs", "handshakes", "/s", True, None),  # target: against the gunicorn floor (FLOOR_TARGETS)
    ("mem", "memory per idle conn", "KiB", False, None),
    ("jain", "fairness (Jain)", "", True, 0.95),
]
ABSOLUTE = {"jain"}  # judged on its own value, not as a ratio to the bound
# What no library inside gunicorn can beat is the floor, not the bound: these two are
# judged against floor-gunicorn in the same round (key, target, target is a maximum).
FLOOR = "floor-gunicorn"
FLOOR_TARGETS = [("hs", 0.9, False), ("mem", 1.1, True)]


def quick_or_full(quick: bool) -> dict:
    if quick:
        return dict(rounds=1, duration=1.0, warmup=0.3, lat_iters=1000, idle=1000)
    # 5 rounds: a fresh server's handshake rate moves by a third from one instance to the
    # next (the floor's too), and the ratios are per round; 3 let one odd round decide.
    return dict(rounds=5, duration=2.5, warmup=0.5, lat_iters=5000, idle=5000)


# ---------------------------------------------------------------- helpers


def log(msg: str) -> None:
    print(msg, flush=True)


def ensure_requirements(no_install: bool) -> None:
    mods = [
        "gevent",
        "gunicorn",
        "flask",
        "flask_sock",
        "simple_websocket",
        "geventwebsocket",
        "websockets",
        "picows",
        "redis",
        "matplotlib",
    ]
    missing = [m for m in mods if importlib.util.find_spec(m) is None]
    if not missing:
        return
    if no_install:
        sys.exit(f"missing Python packages: {missing}; pip install -r benchmarks/requirements.txt")
    log(f"installing missing packages {missing} from benchmarks/requirements.txt")
    subprocess.check_call(
        [PY, "-m", "pip", "install", "-q", "-r", os.path.join(HERE, "requirements.txt")]
    )


def build_loadgen() -> str:
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        sys.exit("no C compiler found (need gcc or cc) to build benchmarks/loadgen.c")
    os.makedirs(BUILD_DIR, exist_ok=True)
    out = os.path.join(BUILD_DIR, "loadgen")
    subprocess.check_call([cc, "-O2", "-Wall", "-o", out, os.path.join(HERE, "loadgen.c")])
    return out


def build_speedups(root: str, skip: bool) -> str:
    """Build wsgiws's optional C accelerator in place in the served checkout.

    Returns how the served wsgiws masks payloads: "C accelerator" or "pure Python (...)".
    """
    if not skip and os.path.exists(os.path.join(root, "setup.py")):
        r = subprocess.run(
            [PY, "setup.py", "-q", "build_ext", "--inplace"],
            cwd=root,
            capture_output=True,
            text=True,
        )
        if r.returncode:
            log(f"building wsgiws/_speedups failed (pure Python is used):\n{r.stderr[-800:]}")
    probe = (
        "import wsgiws.protocol as p; "
        "print('C accelerator' if p.apply_mask is not p._apply_mask_python "
        "else 'pure Python')"
    )
    r = subprocess.run([PY, "-c", probe], cwd=root, capture_output=True, text=True)
    return r.stdout.strip() or f"unknown ({r.stderr.strip()[-200:]})"


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def tree_pids(root: int) -> list[int]:
    """root and all its descendants (gunicorn: master + worker)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_kib(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class Server:
    def __init__(
        self,
        name: str,
        cmd: list[str],
        cores: tuple[str, str],
        logdir: str,
        env: dict[str, str] | None = None,
    ):
        self.name, self.cmd, self.extra_env = name, cmd, env or {}
        self.logpath = os.path.join(logdir, f"{name}.log")
        self.proc: subprocess.Popen | None = None
        self.pids: list[int] = []
        self.core = cores[0]

    def start(self, port: int, loadgen: str, timeout: float = 20.0) -> str | None:
        """Start and probe; returns None when ready, else a reason."""
        logf = open(self.logpath, "ab")
        logf.write(f"\n=== {datetime.datetime.now()} {' '.join(self.cmd)}\n".encode())
        logf.flush()
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.extra_env)
        self.proc = subprocess.Popen(
            ["taskset", "-c", self.core, *self.cmd],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd=HERE,
        )
        logf.close()
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"exited with code {self.proc.returncode}"
            try:
                r = subprocess.run(
                    [loadgen, "probe", "--port", str(port), "--max-seconds", "3"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                )
                res = json.loads(r.stdout or "{}")
                if res.get("ok"):
                    time.sleep(0.2)
                    self.pids = tree_pids(self.proc.pid)
                    return None
                last = res.get("first_error", r.stderr.strip())
                # not listening yet, or too slow to answer in 3 s (workers still booting on
                # a busy machine): try again until the deadline
                if "connect refused" not in last and "time limit" not in last:
                    return f"probe failed: {last}"
            except (subprocess.TimeoutExpired, json.JSONDecodeError) as e:
                last = str(e)
            time.sleep(0.25)
        return f"not ready after {timeout:.0f}s ({last})"

    def stop(self) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        except ProcessLookupError:
            pass

    def log_tail(self, n: int = 8) -> str:
        try:
            with open(self.logpath, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


def run_loadgen(loadgen: str, core: str, args: list[str], timeout: float) -> dict:
    cmd = ["taskset", "-c", core, loadgen, *args]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"errors": 1, "first_error": f"load generator timed out after {timeout:.0f}s"}
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"errors": 1, "first_error": f"load generator said: {r.stderr.strip()[:200]}"}


def run_idle(loadgen: str, core: str, port: int, n: int, server: Server) -> dict:
    """Memory per idle connection: server RSS delta / open connections."""
    time.sleep(0.3)
    before = rss_kib(server.pids)
    p = subprocess.Popen(
        [
            "taskset",
            "-c",
            core,
            loadgen,
            "idle",
            "--port",
            str(port),
            "--conns",
            str(n),
            "--max-seconds",
            "60",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = p.stdout.readline().split()
        opened = int(line[1]) if len(line) >= 2 and line[0] == "READY" else 0
        time.sleep(1.0)  # let the server settle
        after = rss_kib(server.pids)
        p.stdin.write("\n")
        p.stdin.flush()
        out, _ = p.communicate(timeout=30)
    except (subprocess.TimeoutExpired, ValueError, OSError) as e:
        p.kill()
        p.wait()
        return {"errors": 1, "first_error": f"idle run failed: {e}"}
    try:
        res = json.loads(out.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        res = {"errors": 1, "first_error": "no result from the idle run"}
    res.update(rss_before_kib=before, rss_after_kib=after, opened=opened)
    if opened < n:
        res["errors"] = max(1, res.get("errors", 0))
        res.setdefault("first_error", "")
        res["first_error"] = f"only {opened}/{n} connections opened; " + res["first_error"]
    res["mem_kib"] = (after - before) / opened if opened else None
    return res


def run_session(server: Server, port: int, loadgen: str, cfg: dict, core: str) -> dict:
    """All scenarios against one freshly started server."""
    d, w = str(cfg["duration"]), str(cfg["warmup"])
    pids = ",".join(map(str, server.pids))
    tmo = cfg["duration"] + cfg["warmup"] + 40
    out: dict[str, dict] = {}
    out["mem"] = run_idle(loadgen, core, port, cfg["idle"], server)
    out["lat"] = run_loadgen(
        loadgen,
        core,
        [
            "latency",
            "--port",
            str(port),
            "--iterations",
            str(cfg["lat_iters"]),
            "--max-seconds",
            "30",
        ],
        40,
    )
    base = ["--port", str(port), "--duration", d, "--warmup", w, "--pids", pids]
    out["small"] = run_loadgen(
        loadgen, core, ["throughput", *base, "--conns", "50", "--depth", "4", "--size", "32"], tmo
    )
    out["kib4"] = run_loadgen(
        loadgen,
        core,
        ["throughput", *base, "--conns", "10", "--depth", "4", "--size", "4096", "--binary"],
        tmo,
    )
    out["mib1"] = run_loadgen(
        loadgen,
        core,
        ["throughput", *base, "--conns", "1", "--depth", "2", "--size", str(1 << 20), "--binary"],
        tmo,
    )
    out["hs"] = run_loadgen(loadgen, core, ["handshake", *base, "--conns", "20"], tmo)
    return out


def extract(session: dict) -> dict:
    """scenario results -> metric values (None where the scenario failed)."""

    def ok(r: dict) -> bool:
        return r.get("errors", 1) == 0

    m, s = {}, session
    m["lat_p50"] = s["lat"]["p50_us"] if ok(s["lat"]) else None
    m["lat_p99"] = s["lat"]["p99_us"] if ok(s["lat"]) else None
    m["small"] = s["small"]["per_s"] if ok(s["small"]) else None
    m["jain"] = s["small"]["jain"] if ok(s["small"]) else None
    m["kib4"] = s["kib4"]["mb_per_s"] if ok(s["kib4"]) else None
    m["mib1"] = s["mib1"]["mb_per_s"] if ok(s["mib1"]) else None
    m["hs"] = s["hs"]["per_s"] if ok(s["hs"]) else None
    m["mem"] = s["mem"].get("mem_kib") if ok(s["mem"]) else None
    return m


# ---------------------------------------------------------------- report


def med_range(vals: list[float]) -> tuple[float, float, float] | None:
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals)


def ratio(metric: str, value: float | None, bound: float | None) -> float | None:
    if value is None or bound is None or value <= 0 or bound <= 0:
        return None
    key = next(m for m in METRICS if m[0] == metric)
    higher, _target = key[3], key[4]
    if metric == "mem":
        return value / bound  # memory: ratio of cost, target is a maximum
    return value / bound if higher else bound / value  # latency: speed ratio


def fmt(v: float, unit: str = "") -> str:
    if abs(v) >= 1000:
        s = f"{v:,.0f}"
    elif abs(v) >= 100:
        s = f"{v:.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.2f}"
    return s + unit


def passes(metric: str, r: float) -> bool:
    target = next(m for m in METRICS if m[0] == metric)[4]
    if target is None:
        return True
    return r <= target if metric == "mem" else r >= target


def floor_table(servers: list[str], rounds: dict) -> list[str]:
    """Handshakes and idle memory as ratios to the gunicorn floor of the same round."""
    L = ["## Against the gunicorn floor\n"]
    L.append(
        f"`{FLOOR}` is gunicorn's gevent worker with no library: a bare WSGI app that "
        "writes the 101 by hand on `gunicorn.socket` and runs the bound's frame loop. "
        "Handshakes and idle memory are what gunicorn itself costs most, so a library "
        "running inside gunicorn is judged against this floor (median over rounds of "
        "server ÷ floor in the same round).\n"
    )
    L.append("| server | handshakes | memory per idle conn |")
    L.append("|---|---|---|")
    targets = ["≥ 0.9×", "≤ 1.1×"]
    L.append("| **target** | " + " | ".join(targets) + " |")
    floor = rounds[FLOOR]
    for s in servers:
        row = [f"`{s}`"]
        for key, target, is_max in FLOOR_TARGETS:
            vals = []
            for i, sess in enumerate(rounds[s]):
                v = sess["metrics"][key]
                f = floor[i]["metrics"][key] if i < len(floor) else None
                vals.append(v / f if v and f else None)
            mr = med_range(vals)
            if mr is None:
                row.append("—")
                continue
            cell = f"{mr[0]:.2f}×"
            if len([v for v in vals if v is not None]) > 1:
                cell += f" ({mr[1]:.2f}–{mr[2]:.2f})"
            if s.startswith("wsgiws"):
                cell += " ✅" if (mr[0] <= target if is_max else mr[0] >= target) else " ❌"
            row.append(cell)
        L.append("| " + " | ".join(row) + " |")
    L.append("")
    return L


def build_report(data: dict, cfg: dict, args, elapsed: float, versions: dict) -> tuple[str, dict]:
    servers = [s for s in data["servers"] if data["rounds"].get(s)]
    rounds = data["rounds"]
    # per-round ratios to the bound of the same round
    ratios: dict[str, dict[str, list]] = {}
    for s in servers:
        ratios[s] = {}
        for key, *_ in METRICS:
            vals = []
            for i, sess in enumerate(rounds[s]):
                v = sess["metrics"][key]
                if key in ABSOLUTE:
                    vals.append(v)
                    continue
                b_sessions = rounds.get("bound", [])
                b = b_sessions[i]["metrics"][key] if i < len(b_sessions) else None
                vals.append(ratio(key, v, b))
            ratios[s][key] = vals

    L = []
    L.append("# wsgiws benchmarks\n")
    L.append(
        f"Generated by `python benchmarks/run.py{' --quick' if args.quick else ''}` on "
        f"{args.generated} "
        f"({'quick' if args.quick else 'full'} mode, {cfg['rounds']} round(s) interleaved "
        f"across servers, {cfg['duration']} s per throughput scenario, run took "
        f"{elapsed / 60:.1f} min).\n"
    )
    L.append(
        f"Machine: {os.cpu_count()} cores, Linux {platform.release()}, Python "
        f"{platform.python_version()}; " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ". "
        f"Each server runs as 1 process/worker pinned to core {args.server_core}; the "
        f"C epoll load generator is pinned to core {args.client_core}; 127.0.0.1 only. "
        f"wsgiws masks payloads with: {data.get('wsgiws_masking', 'unknown')}.\n"
    )
    if data.get("run", {}).get("note"):
        L.append(data["run"]["note"] + "\n")
    load = data.get("run", {}).get("loadavg")
    if load:
        busy = max(load) > (os.cpu_count() or 2) + 0.5  # the run itself keeps ~2 busy
        L.append(
            f"Load average (1 min) at the start and the end of the echo rounds: {load[0]:.1f} / "
            f"{load[1]:.1f}"
            + (
                ": **other work was running on the machine**, so the absolute numbers "
                "are low and noisy; the ratios measured in the same round hold better.\n"
                if busy
                else ".\n"
            )
        )
    L.append("## Ratio to the bound\n")
    L.append(
        "The bound is `benchmarks/servers/bound.py`, a minimal echo on a bare gevent "
        "StreamServer. Each cell is the median over rounds of (server ÷ bound in the same "
        "round), with the min–max across rounds in brackets. Higher is better except "
        "memory. Latency is shown as a speed ratio (bound latency ÷ server latency). "
        "Jain is the absolute index from the 32 B pipelined run. ✅/❌ compare the "
        "median with wsgiws's targets (the first row; the peers are marked against the "
        "same targets for comparison). `—` means the scenario failed or the server was "
        "skipped.\n"
    )
    hdr = ["server"] + [m[1] for m in METRICS]
    L.append("| " + " | ".join(hdr) + " |")
    L.append("|" + "---|" * len(hdr))
    trow = ["**target**"]
    for key, _l, _u, _h, target in METRICS:
        if target is None:
            trow.append("")
        elif key == "mem":
            trow.append(f"≤ {target}×")
        elif key in ABSOLUTE:
            trow.append(f"≥ {target}")
        else:
            trow.append(f"≥ {target}×")
    L.append("| " + " | ".join(trow) + " |")
    for s in servers:
        row = [f"`{s}`"]
        for key, *_ in METRICS:
            mr = med_range(ratios[s][key])
            if mr is None:
                row.append("—")
                continue
            med, lo, hi = mr
            suffix = "" if key in ABSOLUTE else "×"
            cell = f"{med:.2f}{suffix}"
            if len([v for v in ratios[s][key] if v is not None]) > 1:
                cell += f" ({lo:.2f}–{hi:.2f})"
            has_target = next(m for m in METRICS if m[0] == key)[4] is not None
            if has_target and (s != "bound" or key in ABSOLUTE):
                cell += " ✅" if passes(key, med) else " ❌"
            row.append(cell)
        L.append("| " + " | ".join(row) + " |")
    L.append("")
    L.append("## Absolute numbers\n")
    L.append("Median over rounds, [min–max] when there is more than one round.\n")
    hdr = ["server"] + [f"{m[1]} ({m[2]})" if m[2] else m[1] for m in METRICS]
    L.append("| " + " | ".join(hdr) + " |")
    L.append("|" + "---|" * len(hdr))
    for s in servers:
        row = [f"`{s}`"]
        for key, *_ in METRICS:
            vals = [sess["metrics"][key] for sess in rounds[s]]
            mr = med_range(vals)
            if mr is None:
                row.append("—")
                continue
            med, lo, hi = mr
            cell = fmt(med) if key != "jain" else f"{med:.3f}"
            if len([v for v in vals if v is not None]) > 1:
                cell += f" [{fmt(lo)}–{fmt(hi)}]" if key != "jain" else f" [{lo:.3f}–{hi:.3f}]"
            row.append(cell)
        L.append("| " + " | ".join(row) + " |")
    L.append("")
    L.append("## Is the load generator the bottleneck?\n")
    L.append(
        "CPU use over each measurement window as a fraction of one core (median over "
        "rounds): the load generator's own (getrusage) and the server's (all its processes, "
        "from /proc). A server near 1.0 with the client well below 1.0 means the server is "
        "the limit.\n"
    )
    scen = [("small", "32 B"), ("kib4", "4 KiB"), ("mib1", "1 MiB"), ("hs", "handshakes")]
    hdr = ["server"] + [f"{lab}: client / server" for _k, lab in scen]
    L.append("| " + " | ".join(hdr) + " |")
    L.append("|" + "---|" * len(hdr))
    for s in servers:
        row = [f"`{s}`"]
        for k, _lab in scen:
            c = med_range(
                [
                    sess["raw"][k].get("client_cpu")
                    for sess in rounds[s]
                    if sess["raw"][k].get("errors") == 0
                ]
            )
            v = med_range(
                [
                    sess["raw"][k].get("server_cpu")
                    for sess in rounds[s]
                    if sess["raw"][k].get("errors") == 0
                ]
            )
            row.append(f"{c[0]:.2f} / {v[0]:.2f}" if c and v else "—")
        L.append("| " + " | ".join(row) + " |")
    L.append("")
    if rounds.get(FLOOR):
        L.extend(floor_table(servers, rounds))
    if data.get("fanout"):
        L.extend(fanout.report(data, data["fanout_config"]))
    notes = []
    for s, reason in data["skipped"].items():
        notes.append(f"- `{s}` skipped: {reason}")
    for s in servers:
        seen = set()
        for sess in rounds[s]:
            for k, r in sess["raw"].items():
                if r.get("errors", 0) and (k, r.get("first_error")) not in seen:
                    seen.add((k, r.get("first_error")))
                    notes.append(
                        f"- `{s}` failed `{k}` in round {sess['round'] + 1}: "
                        f"{r.get('errors')} error(s), first: {r.get('first_error')}"
                    )
    L.append("## Failures and skipped servers\n")
    L.extend(notes or ["None."])
    L.append("")
    L.append("## Scenarios\n")
    L.append(
        f"- **latency**: one connection, 32 B text, one message in flight, "
        f"{cfg['lat_iters']} round trips after 200 warm-up ones; p50 and p99.\n"
        f"- **32 B**: 50 connections each keeping 4 text messages in flight; echoes/s. "
        f"The Jain index is over the per-connection echo counts of this run.\n"
        f"- **4 KiB**: 10 connections × 4 binary messages in flight; MB/s of echoed payload.\n"
        f"- **1 MiB**: 1 connection × 2 binary messages in flight; MB/s of echoed payload.\n"
        f"- **handshakes**: 20 parallel loops of connect, upgrade, one 32 B message, "
        f"close handshake, then an abortive TCP close (no TIME_WAIT pile-up); per second.\n"
        f"- **memory**: {cfg['idle']} idle connections (each upgraded and echoed once); "
        f"server RSS after − before, divided by the connections, in KiB.\n"
        f"- Each echo is checked byte for byte; a scenario with any error counts as failed.\n"
        f"\nChart: `benchmarks.png`; raw numbers: `benchmarks.json`.\n"
    )
    return "\n".join(L), ratios


def plot(ratios: dict, path: str, title: str, data: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    servers = list(ratios)
    rows = (2 if servers else 0) + (1 if data.get("fanout") else 0)
    if not rows:
        return
    fig, axes = plt.subplots(rows, 4, figsize=(17, 3.75 * rows), squeeze=False)
    if data.get("fanout"):
        fanout.plot(axes[-1], data)
    for ax, (key, label, _u, _h, target) in zip(
        axes.flat if servers else [], METRICS, strict=False
    ):
        meds, los, his, names = [], [], [], []
        for s in servers:
            mr = med_range(ratios[s][key])
            names.append(s)
            if mr is None:
                meds.append(0)
                los.append(0)
                his.append(0)
            else:
                meds.append(mr[0])
                los.append(mr[0] - mr[1])
                his.append(mr[2] - mr[0])
        colors = [
            "#888888" if s == "bound" else "#1f77b4" if s.startswith("wsgiws") else "#ff7f0e"
            for s in servers
        ]
        y = range(len(servers))
        ax.barh(y, meds, xerr=[los, his], color=colors, capsize=3)
        ax.set_yticks(list(y))
        ax.set_yticklabels(names, fontsize=8)
        ax.invert_yaxis()
        for i, m in enumerate(meds):
            ax.text(m, i, " —" if m == 0 else f" {m:.2f}", va="center", fontsize=8)
        if key not in ABSOLUTE:
            ax.axvline(1.0, color="black", lw=0.8)
        if target is not None:
            ax.axvline(target, color="green", ls="--", lw=1)
        unit = (
            ""
            if key in ABSOLUTE
            else (" (× bound, lower is better)" if key == "mem" else " (× bound)")
        )
        ax.set_title(label + unit, fontsize=9)
    fig.suptitle(title + " — green dashed line: wsgiws's target", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- main


def run_fanout(
    data: dict, defs: dict, fcfg: dict, loadgen: str, root: str, logdir: str, args
) -> None:
    """Every fan-out (server, subscribers) scenario, each run against a fresh server, in
    fanout.scenario_order; a scenario run in rounds is reported as their medians."""
    results: dict[str, list[dict]] = {}
    for name, n in fanout.scenario_order(data["fanout_servers"], fcfg):
        if name in data["fanout_skipped"]:
            continue
        _desc, workers, build = defs[name]
        with contextlib.ExitStack() as stack:
            redis = None
            env = {}
            if name.endswith("redis-4"):
                try:
                    redis = stack.enter_context(fanout.redis_on_core(args.server_core))
                except RuntimeError as e:
                    data["fanout_skipped"][name] = str(e)
                    log(f"SKIP {name}: {e}")
                    continue
                env["WSGIWS_REDIS_URL"] = redis.url
            port = free_port()
            cores = (args.server_core, args.client_core)
            srv = Server(f"fanout-{name}", build(port, root), cores, logdir, env)
            stack.callback(srv.stop)
            t0 = time.monotonic()
            reason = srv.start(port, loadgen)
            if reason:
                data["fanout_skipped"][name] = f"could not start ({reason}); see {srv.logpath}"
                log(f"SKIP {name}: {reason}\n{srv.log_tail()}")
                continue
            pids = srv.pids + ([redis.process.pid] if redis and redis.process else [])
            worker_pids = [p for p in srv.pids if p != srv.proc.pid] if workers > 1 else []
            r = fanout.run_subscribe(
                loadgen, args.client_core, port, n, fcfg, pids, worker_pids, rss_kib
            )
        results.setdefault(f"{name}/{n}", []).append(r)
        if r.get("errors"):
            log(f"fanout {name:<15} {n:>6} subscribers  FAILED: {r.get('first_error')}")
        else:
            log(
                f"fanout {name:<15} {n:>6} subscribers  {time.monotonic() - t0:5.1f}s  "
                f"gentle p50/p99 {r['gentle_p50_ms']:.1f}/{r['gentle_p99_ms']:.1f} ms  "
                f"burst {r['burst_per_s']:,.0f}/s  mem {fmt(r['mem_kib'] or 0)} KiB  "
                f"cpu {r['burst_client_cpu']:.2f}/{r['burst_server_cpu']:.2f}  "
                f"server cpu/1000 {fmt(r.get('cpu_ms_per_1000') or 0)} ms  "
                f"spread {r.get('spread')}"
            )
    for key, rounds in results.items():
        data["fanout"][key] = fanout.merge_rounds(rounds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 round, short scenarios")
    ap.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma-separated, from: {', '.join(SERVERS)}",
    )
    ap.add_argument(
        "--wsgiws",
        default=os.path.dirname(HERE),
        help="wsgiws checkout serving examples/echo.py (default: repo root)",
    )
    ap.add_argument(
        "--fanout-servers",
        default=",".join(fanout.DEFAULT_FANOUT),
        help="comma-separated fan-out servers (empty: no fan-out), from: "
        + ", ".join(fanout.fanout_servers(gunicorn_cmd, PY)),
    )
    ap.add_argument(
        "--fanout-baseline",
        metavar="PATH",
        help="also serve the fan-out with the wsgiws checkout at PATH, as wsgiws-baseline "
        "(and, when named in --fanout-servers, wsgiws-baseline-redis-4; e.g. the main "
        "branch, to compare a change against in the same run)",
    )
    ap.add_argument(
        "--subscribers", help="comma-separated subscriber counts for fan-out (e.g. 1000,5000)"
    )
    ap.add_argument(
        "--burst",
        type=int,
        help="messages in the fan-out's burst (default 200; more gives steadier A/B numbers)",
    )
    ap.add_argument(
        "--only", choices=["echo", "fanout"], help="run only the echo or only the fan-out part"
    )
    ap.add_argument("--rounds", type=int, help="override the number of rounds")
    ap.add_argument("--duration", type=float, help="override seconds per throughput scenario")
    ap.add_argument("--idle-conns", type=int, help="override the idle connections count")
    ap.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(HERE), "docs"),
        help="output directory (default: docs/ of the repo)",
    )
    ap.add_argument("--server-core", default="0")
    ap.add_argument("--client-core", default="1")
    ap.add_argument(
        "--no-install", action="store_true", help="do not pip install missing requirements"
    )
    ap.add_argument(
        "--no-speedups",
        action="store_true",
        help="do not build wsgiws's C accelerator in the checkout (a built one is "
        "still used; set WSGIWS_NO_EXTENSIONS=1 to measure pure Python)",
    )
    ap.add_argument(
        "--from-json",
        metavar="PATH",
        help="run nothing: rewrite the report and chart from a benchmarks.json",
    )
    args = ap.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            write_outputs(json.load(f), args.out)
        return 0

    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in names if s not in SERVERS]
    if unknown:
        ap.error(f"unknown server(s) {unknown}; known: {list(SERVERS)}")
    baseline = os.path.abspath(args.fanout_baseline) if args.fanout_baseline else None
    fan_defs = fanout.fanout_servers(gunicorn_cmd, PY, baseline)
    fan_names = [s.strip() for s in args.fanout_servers.split(",") if s.strip()]
    if baseline and not any(n.startswith("wsgiws-baseline") for n in fan_names):
        fan_names.insert(0, "wsgiws-baseline")
    unknown = [s for s in fan_names if s not in fan_defs]
    if unknown:
        ap.error(f"unknown fan-out server(s) {unknown}; known: {list(fan_defs)}")
    subscribers = [int(n) for n in args.subscribers.split(",")] if args.subscribers else None
    fcfg = fanout.fanout_config(args.quick, subscribers, args.burst)
    if args.only == "fanout":
        names = ["bound"]
        cfg_rounds = 0
    else:
        cfg_rounds = None
    if args.only == "echo":
        fan_names = []
    if "bound" not in names:
        names.insert(0, "bound")
        log("adding 'bound': every ratio is relative to it")
    cfg = quick_or_full(args.quick)
    if args.rounds:
        cfg["rounds"] = args.rounds
    if args.duration:
        cfg["duration"] = args.duration
    if args.idle_conns:
        cfg["idle"] = args.idle_conns
    if cfg_rounds is not None:
        cfg["rounds"] = cfg_rounds

    ensure_requirements(args.no_install)
    fanout.ensure_node(names + fan_names)
    # every child inherits the limit: the load generator and the servers each hold one
    # descriptor per connection (10,000 subscribers: 10,000 in each)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(cfg["idle"], *fcfg["subscribers"]) * 2 + 1000
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, want)), hard))
    except (ValueError, OSError):
        pass
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < cfg["idle"] + 200:
        cfg["idle"] = max(100, soft - 200)
        log(f"ulimit -n is {soft}: idle connections reduced to {cfg['idle']}")
    too_many = [n for n in fcfg["subscribers"] if n + 200 > soft]
    if too_many:
        fcfg["subscribers"] = [n for n in fcfg["subscribers"] if n not in too_many]
        log(f"ulimit -n is {soft} (hard limit {hard}): no fan-out run with {too_many} subscribers")
    try:
        os.sched_setaffinity(0, {int(args.client_core)})  # keep the harness off the server core
    except (OSError, ValueError):
        pass
    loadgen = build_loadgen()
    logdir = os.path.join(BUILD_DIR, "logs")
    os.makedirs(logdir, exist_ok=True)
    wsgiws_root = os.path.abspath(args.wsgiws)
    masking = build_speedups(wsgiws_root, args.no_speedups)
    if baseline and any(n.startswith("wsgiws-baseline") for n in fan_names):
        log(f"wsgiws-baseline masking: {build_speedups(baseline, args.no_speedups)}")
    log(f"wsgiws masking: {masking}")
    versions = {}
    for mod, dist in [
        ("gevent", "gevent"),
        ("gunicorn", "gunicorn"),
        ("websockets", "websockets"),
        ("gevent-websocket", "gevent-websocket"),
        ("flask-sock", "flask-sock"),
        ("simple-websocket", "simple-websocket"),
        ("picows", "picows"),
        ("redis-py", "redis"),
    ]:
        try:
            from importlib.metadata import version

            versions[mod] = version(dist)
        except Exception:
            pass

    data: dict = {
        "servers": names,
        "rounds": {s: [] for s in names},
        "skipped": {},
        "config": cfg,
        "fanout_config": fcfg,
        "fanout_servers": fan_names,
        "fanout": {},
        "fanout_skipped": {},
        "wsgiws_masking": masking,
    }
    node_version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout
    if node_version:
        versions["node"] = node_version.strip().lstrip("v")
    ws_package = os.path.join(HERE, "node", "node_modules", "ws", "package.json")
    if os.path.exists(ws_package):  # installed only when a Node server is in the run
        with open(ws_package) as f:
            versions["ws"] = json.load(f)["version"]
    for s in names:
        if SERVERS[s][1] and not os.path.exists(os.path.join(wsgiws_root, "examples", "echo.py")):
            data["skipped"][s] = f"no examples/echo.py in the wsgiws checkout {wsgiws_root}"
            log(f"SKIP {s}: {data['skipped'][s]}")
    t_start = time.monotonic()
    load_start = os.getloadavg()[0]
    for rnd in range(cfg["rounds"]):
        # rotate the order each round so no server always runs first or last
        order = [s for s in names if s not in data["skipped"]]
        order = order[rnd % len(order) :] + order[: rnd % len(order)] if order else []
        for s in order:
            if s in data["skipped"]:
                continue
            port = free_port()
            srv = Server(
                s, SERVERS[s][2](port, wsgiws_root), (args.server_core, args.client_core), logdir
            )
            t0 = time.monotonic()
            reason = srv.start(port, loadgen)
            if reason:
                srv.stop()
                tail = srv.log_tail()
                data["skipped"][s] = f"could not start ({reason}); see {srv.logpath}"
                log(
                    f"SKIP {s}: could not start: {reason}\n  last log lines:\n"
                    + "".join("    " + line + "\n" for line in tail.splitlines())
                )
                continue
            try:
                raw = run_session(srv, port, loadgen, cfg, args.client_core)
            finally:
                srv.stop()
            m = extract(raw)
            data["rounds"][s].append({"round": rnd, "metrics": m, "raw": raw})
            errs = [f"{k}: {r.get('first_error')}" for k, r in raw.items() if r.get("errors")]
            log(
                f"round {rnd + 1}/{cfg['rounds']} {s:<26} {time.monotonic() - t0:5.1f}s  "
                + "  ".join(f"{k}={fmt(v)}" if v is not None else f"{k}=FAIL" for k, v in m.items())
                + (f"\n    errors: {'; '.join(errs)}" if errs else "")
            )
    # Read before the fan-out, whose four workers, Redis and subscribers keep more than the
    # two cores busy themselves: the reading is for other work sharing the machine.
    load_end = os.getloadavg()[0]
    run_fanout(data, fan_defs, fcfg, loadgen, wsgiws_root, logdir, args)
    elapsed = time.monotonic() - t_start
    if not data["rounds"].get("bound") and args.only != "fanout":
        log("the bound did not run: no ratios can be computed")
        return 1
    data["run"] = {
        "elapsed": elapsed,
        "versions": versions,
        "quick": args.quick,
        "generated": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        # 1-minute load average before and after the echo rounds: above ~2 on 2 cores,
        # other work shared the machine with the run and the absolute numbers are low
        # (ratios hold better)
        "loadavg": [load_start, load_end],
        "server_core": args.server_core,
        "client_core": args.client_core,
    }
    write_outputs(data, args.out)
    return 0


def write_outputs(data: dict, out: str) -> None:
    """docs/benchmarks.md, .json and .png from one run's data."""
    run = data["run"]
    args = argparse.Namespace(**{k: run[k] for k in ("quick", "server_core", "client_core")})
    args.generated = run["generated"]
    os.makedirs(out, exist_ok=True)
    md, ratios = build_report(data, data["config"], args, run["elapsed"], run["versions"])
    with open(os.path.join(out, "benchmarks.md"), "w") as f:
        f.write(md)
    with open(os.path.join(out, "benchmarks.json"), "w") as f:
        json.dump(data, f, indent=1)
    plot(
        ratios,
        os.path.join(out, "benchmarks.png"),
        f"wsgiws benchmarks ({'quick' if args.quick else 'full'}), echo as ratio to the bound",
        data,
    )
    log(
        f"\nwrote {out}/benchmarks.md, benchmarks.png, benchmarks.json "
        f"({run['elapsed'] / 60:.1f} min run)\n"
    )
    log(md.split("## Absolute numbers")[0])


if __name__ == "__main__":
    sys.exit(main())
