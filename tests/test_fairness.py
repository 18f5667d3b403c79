"""A peer that keeps the server's receive buffer full must not starve the worker's others."""

from __future__ import annotations

import threading
import time

import pytest
from websockets.sync.client import connect

from tests.conftest import SERVER_KINDS
from tests.servers import serve
from tests.wire import RawClient


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_a_flooding_peer_does_not_starve_a_polite_one(kind: str) -> None:
    with serve(kind, "examples.echo:app") as server:
        flooder = RawClient(server.port, "/echo")
        burst = RawClient.frame(2, b"f" * 16) * 20_000
        stop = threading.Event()

        def flood() -> None:
            try:
                while not stop.is_set():
                    flooder.sock.sendall(burst)
            except OSError:
                pass  # closed at the end of the test

        def drain() -> None:
            try:
                while not stop.is_set() and flooder.sock.recv(1 << 20):
                    pass
            except OSError:
                pass

        threads = [threading.Thread(target=f, daemon=True) for f in (flood, drain)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)  # the flood is under way
        round_trips = 0
        with connect(server.url + "/echo") as ws:
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                ws.send("ping")
                assert ws.recv() == "ping"
                round_trips += 1
        stop.set()
        flooder.close()
    # Without yielding to the hub's I/O the polite client gets ~100 round trips a second
    # (gevent.sleep(0) resumes the flooder before other sockets are polled); with it, thousands.
    print(f"{kind}: {round_trips} round trips in 1 s during the flood")
    assert round_trips >= 200, round_trips
