"""Autobahn|Testsuite client-mode driver for wsgiws.client.

    .ci/autobahn/run-client.sh 'python tests/autobahn_client.py {url} {agent}' OUT

Reads the case count, runs every case (echoing each message with its type
until the fuzzing server closes), then asks the server to write its report.
``--gevent`` runs the client in a greenlet (gevent sockets) instead of the
calling thread.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from wsgiws.client import connect
from wsgiws.exceptions import ConnectionClosed, WebSocketError


def run_case(url: str, number: int, agent: str) -> int | None:
    try:
        ws = connect(
            f"{url}/runCase?case={number}&agent={agent}",
            max_message_size=None,
            ping_interval=None,
            close_timeout=5,
        )
    except (OSError, WebSocketError) as exc:
        print(f"case {number}: could not connect: {exc}", flush=True)
        return None
    try:
        for message in ws:
            ws.send(message)
    except ConnectionClosed:
        pass
    return ws.close_code


def main() -> int:
    parser = argparse.ArgumentParser(description="Autobahn client-mode driver")
    parser.add_argument("url", help="fuzzing server, e.g. ws://127.0.0.1:9001")
    parser.add_argument("agent", nargs="?", default="wsgiws")
    parser.add_argument("--gevent", action="store_true", help="run in a greenlet")
    args = parser.parse_args()
    url = args.url.rstrip("/")

    def run() -> int:
        with connect(f"{url}/getCaseCount") as ws:
            count = int(ws.receive())
        print(f"{count} cases", flush=True)
        started = time.monotonic()
        for number in range(1, count + 1):
            code = run_case(url, number, args.agent)
            if number % 50 == 0 or number == count:
                print(f"case {number}/{count} (last close {code})", flush=True)
        with connect(f"{url}/updateReports?agent={args.agent}") as ws:
            for _ in ws:
                pass
        print(f"done in {time.monotonic() - started:.1f} s", flush=True)
        return 0

    if args.gevent:
        import gevent

        return int(gevent.spawn(run).get())
    return run()


if __name__ == "__main__":
    sys.exit(main())
