"""What one hub delivery costs in process: CPU time per message per member.

    python benchmarks/hub_delivery.py [--members 1000] [--messages 200] [--rounds 5]

An in-process :class:`wsgiws.hub.Hub` with one room of ``--members`` server-side
WebSockets on gevent socket pairs; the test sends ``--messages`` 64-byte text
messages to the room, then reads every peer socket empty (outside the measured
time), ``--rounds`` times. Prints the CPU time (``time.process_time``: what other
processes on a busy machine do not inflate much) per delivery, the median over
rounds. Deterministic enough to run under ``valgrind --tool=callgrind`` for an
instruction count (use ``--rounds 1``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import gevent
import gevent.socket

from wsgiws.hub import Hub
from wsgiws.protocol import Role
from wsgiws.websocket import WebSocket


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=int, default=1000)
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    hub = Hub(max_queue=100_000)
    peers = []
    for _ in range(args.members):
        a, b = gevent.socket.socketpair()
        hub.join(WebSocket(role=Role.SERVER, sock=a, ping_interval=None), "room")
        peers.append(b)
    message = "m" * 64
    per_delivery = []
    target = 0
    for _ in range(args.rounds):
        start = time.process_time()
        for _ in range(args.messages):
            hub.send("room", message)
        target += args.members * args.messages
        while hub.stats.delivered < target:
            gevent.sleep(0)  # senders of the sockets that would have blocked, if any
        per_delivery.append((time.process_time() - start) / (args.members * args.messages))
        expected = args.messages * (2 + len(message))
        for peer in peers:
            got = 0
            while got < expected:
                got += len(peer.recv(1 << 20))
    print(
        f"{args.members} members × {args.messages} messages: "
        f"{statistics.median(per_delivery) * 1e6:.2f} µs CPU per delivery "
        f"(rounds: {', '.join(f'{x * 1e6:.2f}' for x in per_delivery)}); "
        f"delivered {hub.stats.delivered}"
    )


if __name__ == "__main__":
    main()
