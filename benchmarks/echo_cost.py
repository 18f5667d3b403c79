"""What one pipelined echo costs the server: a deterministic run for callgrind.

    python benchmarks/echo_cost.py --size 32 --rounds 5000
    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \\
        python benchmarks/echo_cost.py --size 32 --rounds 5000

One gevent process, a socket pair: a server-side WebSocket (the observer the
middleware installs, at its defaults, as in production) echoes ``for message in
ws: ws.send(message)``; a peer greenlet writes ``--pipeline`` masked client frames
in one write, then reads all the replies, ``--rounds`` times. ``--server bound``
runs the bound's frame loop (benchmarks/servers/bound.py) on the same socket
instead. The peer does the same few calls per round whatever the server, so the
instructions per echo of a run with R rounds minus one with R/5, divided by the
echoes between them, is the server's own cost plus a small constant; the ratio of
two servers measured so is what the benchmark's wall-clock ratio tends to on an
unloaded machine. Prints wall time per echo (noisy; callgrind's count is not).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, "servers"))

import gevent  # noqa: E402
import gevent.socket  # noqa: E402

from wsgiws import connlog  # noqa: E402
from wsgiws.exceptions import ConnectionClosedError  # noqa: E402
from wsgiws.middleware import WebSocketOptions  # noqa: E402
from wsgiws.monitor import SessionObserver  # noqa: E402
from wsgiws.protocol import Protocol, Role  # noqa: E402
from wsgiws.websocket import WebSocket  # noqa: E402


def serve_wsgiws(sock: gevent.socket.socket) -> None:
    environ = {"PATH_INFO": "/echo", "REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": "GET"}
    connlog.new_id(environ)
    observer = SessionObserver(environ, WebSocketOptions(), "127.0.0.1")
    ws = WebSocket(
        environ=environ,
        sock=sock,
        ping_interval=None,
        observer=observer,
        max_message_size=16 << 20,
    )
    try:
        for message in ws:
            ws.send(message)
    except ConnectionClosedError:
        pass  # the peer's socket closed at the end of the run


def serve_bound(sock: gevent.socket.socket) -> None:
    from bound import echo_frames

    echo_frames(sock)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", choices=["wsgiws", "bound"], default="wsgiws")
    ap.add_argument("--size", type=int, default=32, help="payload bytes")
    ap.add_argument("--binary", action="store_true", help="binary messages (default: text)")
    ap.add_argument("--pipeline", type=int, default=4, help="frames per write")
    ap.add_argument("--rounds", type=int, default=5000)
    args = ap.parse_args()

    ours, peer = gevent.socket.socketpair()
    client = Protocol(Role.CLIENT)
    for _ in range(args.pipeline):
        client.send_message(b"x" * args.size if args.binary else "x" * args.size)
    burst = b"".join(client.data_to_send())
    reply_size = args.pipeline * (args.size + (2 if args.size < 126 else 4))
    server = gevent.spawn(serve_bound if args.server == "bound" else serve_wsgiws, ours)

    start = time.perf_counter()
    for _ in range(args.rounds):
        peer.sendall(burst)
        left = reply_size
        while left:
            left -= len(peer.recv(left))
    elapsed = time.perf_counter() - start
    peer.close()
    server.join()
    echoes = args.rounds * args.pipeline
    print(f"{args.server}: {echoes} echoes of {args.size} B, {elapsed / echoes * 1e6:.2f} µs each")


if __name__ == "__main__":
    main()
