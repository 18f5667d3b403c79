"""An app with every limit, the session check and metrics endpoints (tests/test_operating.py)."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from wsgiws import WebSocket, WebSocketMiddleware, metrics
from wsgiws.limits import RateLimit, revalidate_every

logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")


def http(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/metrics.json":
        numbers = metrics.snapshot()
        numbers["closes"] = {f"{c}/{who}": n for (c, who), n in numbers["closes"].items()}
        body = json.dumps(numbers).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if environ.get("PATH_INFO") == "/metrics" and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from wsgiws.prometheus import metrics_app

        return metrics_app(environ, start_response)
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]


app = WebSocketMiddleware(http)


def echo(ws: WebSocket) -> None:
    for message in ws:
        ws.send(message)


app.add_route("/echo", echo)
app.add_route("/pid", lambda ws: (ws.send(str(os.getpid())), echo(ws)))
app.add_route("/capped", echo, max_connections=2)
app.add_route("/per-client", echo, max_connections_per_client=1, trusted_proxies=["127.0.0.1"])
app.add_route("/per-peer", echo, max_connections_per_client=1)  # no proxy trusted
app.add_route("/small-headers", echo, max_request_headers=1000)
app.add_route("/message-rate", echo, message_rate=RateLimit(rate=0.01, burst=3))
app.add_route("/byte-rate", echo, byte_rate=RateLimit(rate=0.01, burst=10))
app.add_route("/drop", echo, message_rate=RateLimit(rate=0.01, burst=2), rate_limit_action="drop")
app.add_route("/idle", echo, idle_timeout=0.3)


@app.route("/close-4000")
def close_4000(ws: WebSocket) -> None:
    ws.receive()
    ws.close(4000, "server says bye")


@app.route("/latency")
def latency(ws: WebSocket) -> None:
    before = ws.latency
    answered = ws.ping(b"rtt").wait(5)
    ws.send(json.dumps({"before": before, "answered": answered, "after": ws.latency}))
    echo(ws)


@app.route("/session")
def session(ws: WebSocket) -> None:
    state = {"logged_in": True}
    revalidate_every(ws, 0.1, lambda: state["logged_in"])
    for message in ws:
        if message == "logout":
            state["logged_in"] = False  # the next check closes the socket with 1008
        ws.send(message)
