"""What the connection logs and metrics cost per message: server CPU time of an echo.

    python benchmarks/observer_cost.py

One server-side WebSocket on a socket pair echoes N 32-byte text messages that a
thread wrote in advance; another thread drains the replies. The server thread's
CPU time (``time.thread_time``: what other processes on a busy machine do not
inflate much) per message, with the observer the middleware installs at its
defaults (wsgiws.monitor.SessionObserver) and with none, alternating, 7 times each.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time

from wsgiws import connlog
from wsgiws.middleware import WebSocketOptions
from wsgiws.monitor import SessionObserver
from wsgiws.protocol import Protocol, Role
from wsgiws.websocket import WebSocket

N = 100_000
FRAMES = b"".join(Protocol(Role.CLIENT).send_message("x" * 32) for _ in range(N))
REPLY_SIZE = 2 + 32  # an unmasked 32-byte text frame


def cpu_per_message(with_observer: bool) -> float:
    ours, peer = socket.socketpair()
    environ = {"PATH_INFO": "/echo", "REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": "GET"}
    connlog.new_id(environ)
    observer = SessionObserver(environ, WebSocketOptions(), "127.0.0.1") if with_observer else None
    ws = WebSocket(environ=environ, sock=ours, ping_interval=None, observer=observer)

    def drain() -> None:
        left = N * REPLY_SIZE
        while left > 0:
            left -= len(peer.recv(1 << 20))

    threads = [
        threading.Thread(target=peer.sendall, args=(FRAMES,)),
        threading.Thread(target=drain),
    ]
    for thread in threads:
        thread.start()
    start = time.thread_time()
    for _ in range(N):
        ws.send(ws.receive())
    cpu = time.thread_time() - start
    for thread in threads:
        thread.join()
    ours.close()
    peer.close()
    return cpu / N * 1e6


def main() -> None:
    runs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(7):
        for with_observer in (False, True):
            runs[with_observer].append(cpu_per_message(with_observer))
    for with_observer, label in ((False, "no observer"), (True, "SessionObserver")):
        values = runs[with_observer]
        print(
            f"{label:16} min {min(values):.2f} µs/message, median {statistics.median(values):.2f}"
        )


if __name__ == "__main__":
    main()
