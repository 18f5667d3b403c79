"""Measure zlib memory and speed for permessage-deflate defaults (not a test; run by hand).

Usage: python tests/measure_deflate.py

Prints, for several (window bits, memLevel) settings, the memory held by one compressor and one
decompressor after a message went through them (tracemalloc over N objects, so per-object figures
are averages), the compressed size of a few sample messages and the time per message.
"""

from __future__ import annotations

import json
import time
import tracemalloc
import zlib

N = 1000
_TRAILER = b"\x00\x00\xff\xff"


def sample_messages() -> list[bytes]:
    rows = [
        {
            "id": i,
            "user": f"user{i % 17}",
            "event": "update",
            "price": 1000 + i * 3,
            "ok": i % 2 == 0,
        }
        for i in range(200)
    ]
    big = json.dumps(rows).encode()
    return [
        b"hello",
        b'{"type":"ping","ts":1700000000}',
        json.dumps(rows[:1]).encode(),
        json.dumps(rows[:3]).encode(),
        json.dumps(rows[:10]).encode(),
        big,
    ]


def memory(wbits: int, mem_level: int) -> tuple[float, float]:
    msg = sample_messages()[-1]
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    comps = []
    for _ in range(N):
        c = zlib.compressobj(6, zlib.DEFLATED, -wbits, mem_level)
        c.compress(msg)
        c.flush(zlib.Z_SYNC_FLUSH)
        comps.append(c)
    comp = (tracemalloc.get_traced_memory()[0] - base) / N
    c = zlib.compressobj(6, zlib.DEFLATED, -wbits, mem_level)
    payload = c.compress(msg) + c.flush(zlib.Z_SYNC_FLUSH)
    base = tracemalloc.get_traced_memory()[0]
    decomps = []
    for _ in range(N):
        d = zlib.decompressobj(-max(wbits, 9))
        assert d.decompress(payload) == msg
        decomps.append(d)
    decomp = (tracemalloc.get_traced_memory()[0] - base) / N
    tracemalloc.stop()
    del comps, decomps
    return comp, decomp


def main() -> None:
    msgs = sample_messages()
    print(f"zlib {zlib.ZLIB_RUNTIME_VERSION}; memory averaged over {N} objects (tracemalloc)")
    print("wbits memLevel  compressor  decompressor  sizes (orig -> compressed)")
    for wbits, mem_level in [(15, 8), (15, 5), (13, 5), (12, 5), (12, 4), (11, 4), (10, 3), (9, 1)]:
        comp, decomp = memory(wbits, mem_level)
        sizes = []
        for m in msgs:
            c = zlib.compressobj(6, zlib.DEFLATED, -wbits, mem_level)
            out = c.compress(m) + c.flush(zlib.Z_SYNC_FLUSH)
            sizes.append(f"{len(m)}->{len(out) - 4}")
        print(
            f"{wbits:5} {mem_level:8} {comp / 1024:9.1f}K {decomp / 1024:11.1f}K  {' '.join(sizes)}"
        )

    print("\ntime per message (us), 12/5, context takeover, reused objects vs new compressor")
    for level in (1, 6, 9):
        for m in msgs:
            c = zlib.compressobj(level, zlib.DEFLATED, -12, 5)
            t = time.perf_counter()
            for _ in range(2000):
                c.compress(m)
                c.flush(zlib.Z_SYNC_FLUSH)
            reused = (time.perf_counter() - t) / 2000 * 1e6
            t = time.perf_counter()
            for _ in range(2000):
                c2 = zlib.compressobj(level, zlib.DEFLATED, -12, 5)
                c2.compress(m)
                c2.flush(zlib.Z_SYNC_FLUSH)
            fresh = (time.perf_counter() - t) / 2000 * 1e6
            c = zlib.compressobj(level, zlib.DEFLATED, -12, 5)
            t = time.perf_counter()
            for _ in range(2000):
                c.compress(m)
                c.flush(zlib.Z_FULL_FLUSH)
            full = (time.perf_counter() - t) / 2000 * 1e6
            c = zlib.compressobj(level, zlib.DEFLATED, -12, 5)
            size = len(c.compress(m) + c.flush(zlib.Z_FULL_FLUSH)) - 4
            print(
                f"level {level} len {len(m):6}: sync {reused:7.1f}  new-each {fresh:7.1f}"
                f"  full-flush {full:7.1f}  size(no takeover) {size}"
            )


if __name__ == "__main__":
    main()
