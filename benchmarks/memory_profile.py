"""Where the memory of an idle WebSocket goes, inside gunicorn's gevent worker.

    python benchmarks/memory_profile.py                    # wsgiws examples.echo:app
    python benchmarks/memory_profile.py --target floor     # the gunicorn floor
    python benchmarks/memory_profile.py --conns 2000 --json out.json

Starts ``gunicorn -k gevent -w 1`` on this module's ``app`` (the target app wrapped
with a small reporter), opens N idle connections with the load generator (each
upgraded and echoed once), and asks the worker, on a plain HTTP path, for:

- the Python heap it grew by (tracemalloc, 30 frames), per connection, by the
  innermost source line that allocated it and by package;
- the C stacks of the connections' greenlets that greenlet keeps on the heap while
  they wait (``greenlet._stack_saved``), and how deep their Python stacks are;
- the objects each connection keeps alive: the environ, gunicorn's Request /
  Response / parser, wsgiws's objects (shallow sizes of the instances found by gc).

tracemalloc's own overhead is not in its figures; the RSS it prints is with
tracemalloc on, so it is higher than the benchmark's. This measures, it changes
nothing in the library.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REPORT_PATH = "/_memory"

# ------------------------------------------------------------ inside the worker

if os.environ.get("MEMORY_PROFILE_TARGET"):
    import gc
    import tracemalloc
    from collections import Counter

    import greenlet

    tracemalloc.start(30)
    _baseline: list = []

    if os.environ["MEMORY_PROFILE_TARGET"] == "floor":
        sys.path.insert(0, os.path.join(HERE, "servers"))
        from floor_gunicorn import app as _target
    elif os.environ["MEMORY_PROFILE_TARGET"] == "floor-detached":
        sys.path.insert(0, os.path.join(HERE, "servers"))
        from floor_gunicorn import detached as _target
    else:
        sys.path.insert(0, ROOT)
        from examples.echo import app as _target

    def _package(filename: str) -> str:
        for name in ("wsgiws", "gunicorn", "gevent", "greenlet", "benchmarks"):
            if f"/{name}/" in filename:
                return name
        return "stdlib / other"

    def _greenlets() -> list:
        return [o for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead]

    def _stack_depth(g) -> int:
        depth, frame = 0, g.gr_frame
        while frame is not None:
            depth += 1
            frame = frame.f_back
        return depth

    def _frames(g) -> list[tuple[str, int]]:
        """(function, bytes) innermost first; CPython 3.11+ frame: locals + cells + free
        variables + value stack + ~9 header words, 8 bytes each, in the data stack."""
        out, frame = [], g.gr_frame
        while frame is not None:
            code = frame.f_code
            slots = code.co_nlocals + len(code.co_cellvars) + len(code.co_freevars)
            out.append(
                (
                    f"{os.path.basename(code.co_filename)}:{code.co_name}",
                    8 * (slots + code.co_stacksize + 9),
                )
            )
            frame = frame.f_back
        return out

    def _instances() -> dict[str, tuple[int, int]]:
        """class -> (count, shallow bytes incl. __dict__) for the classes of interest."""
        found: dict[str, list[int]] = {}
        for o in gc.get_objects():
            mod = type(o).__dict__.get("__module__", "")
            if not isinstance(mod, str):
                continue
            if not mod.startswith(("wsgiws", "gunicorn.http", "gevent._socket", "gevent.")):
                continue
            key = f"{mod}.{type(o).__qualname__}"
            size = sys.getsizeof(o)
            try:
                d = getattr(o, "__dict__", None)
            except OSError:  # a gevent socket whose descriptor was detached or closed
                d = None
            if isinstance(d, dict):
                size += sys.getsizeof(d)
            entry = found.setdefault(key, [0, 0])
            entry[0] += 1
            entry[1] += size
        return {k: (v[0], v[1]) for k, v in found.items()}

    def _environ_size(environ: dict) -> int:
        return sys.getsizeof(environ) + sum(
            sys.getsizeof(k) + sys.getsizeof(v)
            for k, v in environ.items()
            if isinstance(v, (str, bytes, int, tuple))
        )

    _environ_sizes: list[int] = []

    def _report(conns: int) -> dict:
        gc.collect()
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        stats = snap.compare_to(_baseline[0], "lineno")
        by_package: Counter = Counter()
        for st in stats:
            by_package[_package(st.traceback[0].filename)] += st.size_diff
        top = [
            {
                "where": f"{os.path.relpath(st.traceback[0].filename, ROOT)}:"
                f"{st.traceback[0].lineno}",
                "bytes_per_conn": st.size_diff / conns,
                "blocks_per_conn": st.count_diff / conns,
            }
            for st in stats[:30]
        ]
        glets = _greenlets()
        depths = Counter(_stack_depth(g) for g in glets)
        typical = next(g for g in glets if _stack_depth(g) == depths.most_common(1)[0][0])
        base_instances = _baseline[1]
        inst = []
        for key, (count, size) in sorted(_instances().items(), key=lambda kv: -kv[1][1]):
            bcount, bsize = base_instances.get(key, (0, 0))
            if count - bcount >= conns * 0.9:
                inst.append(
                    {
                        "class": key,
                        "per_conn": (count - bcount) / conns,
                        "bytes_per_conn": (size - bsize) / conns,
                    }
                )
        return {
            "conns": conns,
            "traced_bytes_per_conn": sum(st.size_diff for st in stats) / conns,
            "by_package_bytes_per_conn": {k: v / conns for k, v in by_package.most_common()},
            "top_lines": top,
            "greenlets": len(glets),
            "greenlet_stack_saved_bytes_per_conn": sum(g._stack_saved for g in glets) / conns,
            "greenlet_python_stack_depth": dict(depths),
            "connection_frames": _frames(typical),
            "environ_bytes": statistics_median(_environ_sizes),
            "instances": inst,
        }

    def statistics_median(values: list[int]) -> float:
        values = sorted(values)
        return float(values[len(values) // 2]) if values else 0.0

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == REPORT_PATH + "/baseline":
            gc.collect()
            _baseline[:] = [tracemalloc.take_snapshot(), _instances()]
            body = b"ok"
        elif path == REPORT_PATH + "/report":
            conns = int(environ.get("QUERY_STRING", "n=1").split("=")[1])
            body = json.dumps(_report(conns)).encode()
        else:
            if len(_environ_sizes) < 1000:
                _environ_sizes.append(_environ_size(environ))
            return _target(environ, start_response)
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]


# ------------------------------------------------------------ the harness


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def anon_mappings(pid: int) -> dict[int, list[int]]:
    """Anonymous mappings of the process by size in KiB -> [count, RSS KiB]. CPython
    gives each greenlet's Python frames a 16 KiB data-stack chunk of its own (3.11+),
    mapped on its own: those show here, not in tracemalloc."""
    out: dict[int, list[int]] = {}
    size = 0
    anon = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(maxsplit=6)
            if "-" in first[0] and len(first) >= 5 and ":" in first[3]:
                anon = len(first) < 6  # no path: anonymous
            elif first[0] == "Size:":
                size = int(first[1])
            elif first[0] == "Rss:" and anon:
                entry = out.setdefault(size, [0, 0])
                entry[0] += 1
                entry[1] += int(first[1])
    return out


def main() -> int:
    sys.path.insert(0, HERE)
    import run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", choices=["wsgiws", "floor", "floor-detached"], default="wsgiws")
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--json", help="write the worker's report here too")
    args = ap.parse_args()
    loadgen = run.build_loadgen()
    port = run.free_port()
    config = run.WSGIWS_GUNICORN_CONF if args.target == "wsgiws" else None
    cmd = run.gunicorn_cmd("gevent", HERE, "memory_profile:app", port, path=ROOT, config=config)
    env = dict(os.environ, MEMORY_PROFILE_TARGET=args.target)
    os.makedirs(os.path.join(run.BUILD_DIR, "logs"), exist_ok=True)
    logpath = os.path.join(run.BUILD_DIR, "logs", "memory_profile.log")
    with open(logpath, "ab") as log:
        proc = subprocess.Popen(
            cmd, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}{REPORT_PATH}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/baseline", timeout=2).read()
                break
            except OSError:
                time.sleep(0.2)
        worker = run.tree_pids(proc.pid)[-1]
        time.sleep(0.5)
        urllib.request.urlopen(base + "/baseline", timeout=10).read()
        before = rss_kib(worker)
        maps_before = anon_mappings(worker)
        idle = subprocess.Popen(
            [loadgen, "idle", "--port", str(port), "--conns", str(args.conns)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert idle.stdout is not None and idle.stdin is not None
        ready = idle.stdout.readline().split()
        opened = int(ready[1])
        time.sleep(1.0)
        after = rss_kib(worker)
        maps_after = anon_mappings(worker)
        report = json.loads(urllib.request.urlopen(f"{base}/report?n={opened}", timeout=120).read())
        idle.stdin.write("\n")
        idle.stdin.flush()
        idle.communicate(timeout=60)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(10)
    report["rss_kib_per_conn_with_tracemalloc"] = (after - before) / opened
    grown = {}
    for size, (count, rss) in maps_after.items():
        bcount, brss = maps_before.get(size, (0, 0))
        if count - bcount >= opened * 0.9:
            grown[size] = {"per_conn": (count - bcount) / opened, "rss_kib": (rss - brss) / opened}
    report["anonymous_mappings_per_conn"] = grown
    print(f"{args.target}: {opened} idle connections")
    print(f"  RSS growth (tracemalloc on): {report['rss_kib_per_conn_with_tracemalloc']:.1f} KiB")
    print(f"  Python heap traced: {report['traced_bytes_per_conn'] / 1024:.2f} KiB per conn")
    for pkg, size in report["by_package_bytes_per_conn"].items():
        print(f"    {pkg:<16} {size:8.0f} B")
    print(
        f"  greenlets: {report['greenlets']}; C stack saved on the heap: "
        f"{report['greenlet_stack_saved_bytes_per_conn']:.0f} B per conn; Python stack "
        f"depth (frames: greenlets) {report['greenlet_python_stack_depth']}"
    )
    frames = report["connection_frames"]
    print(
        f"  a connection's Python frames (data stack, not traced): {len(frames)} frames, "
        f"~{sum(b for _f, b in frames)} B: " + ", ".join(f"{f} {b}" for f, b in frames)
    )
    print(f"  environ (shallow, str values): {report['environ_bytes']:.0f} B")
    for size, g in grown.items():
        print(
            f"  anonymous {size} KiB mappings: {g['per_conn']:.2f} per conn, "
            f"RSS {g['rss_kib']:.2f} KiB per conn (not traced by tracemalloc)"
        )
    print("  objects per connection (shallow size incl. __dict__):")
    for i in report["instances"][:25]:
        print(f"    {i['class']:<60} {i['per_conn']:4.1f} × {i['bytes_per_conn']:6.0f} B")
    print("  top allocation sites (innermost line), bytes per connection:")
    for t in report["top_lines"][:25]:
        print(f"    {t['bytes_per_conn']:8.0f} B  {t['blocks_per_conn']:5.1f} blocks  {t['where']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
