"""WSGI apps the integration tests serve with real servers."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import gevent

from wsgiws import ReceiveTimeout, Reject, WebSocket, WebSocketMiddleware

logging.basicConfig(stream=sys.stderr, level=logging.INFO)

app = WebSocketMiddleware(max_message_size=16 << 20)


@app.route("/echo")
def echo(ws: WebSocket) -> None:
    for message in ws:
        ws.send(message)


@app.route("/timeout")
def timeout(ws: WebSocket) -> None:
    try:
        ws.receive(timeout=0.2)
        ws.send("message")
    except ReceiveTimeout:
        ws.send("timeout")
    ws.send(ws.receive())  # the connection is still usable


@app.route("/raise")
def boom(ws: WebSocket) -> None:
    ws.receive()
    raise ValueError("boom in handler")


@app.route("/close")
def close(ws: WebSocket) -> None:
    ws.receive()
    ws.close(4000, "custom reason")


@app.route("/concurrent")
def concurrent(ws: WebSocket) -> None:
    def sender(n: int) -> None:
        for i in range(50):
            ws.send(f"{n}:{i}:" + "x" * 20000)

    gevent.joinall([gevent.spawn(sender, n) for n in range(8)], raise_error=True)
    ws.send("done")
    ws.receive()


@app.route("/stream")
def stream(ws: WebSocket) -> None:
    ws.send_stream(["chunk1-", "chunk2-", "chunk3"])
    ws.send_stream([b"\x00", b"\x01"])
    ws.receive()


@app.route("/ping")
def ping(ws: WebSocket) -> None:
    waiter = ws.ping(b"are you there")
    ws.send("pong ok" if waiter.wait(5) else "pong missing")
    ws.receive()


@app.route("/keepalive", ping_interval=0.2, ping_timeout=0.3)
def keepalive(ws: WebSocket) -> None:
    try:
        for message in ws:
            ws.send(message)
    finally:
        sys.stderr.write(f"keepalive handler ended with code {ws.close_code}\n")
        sys.stderr.flush()


@app.route("/info", subprotocols=["b", "a"])
def info(ws: WebSocket) -> None:
    ws.send(
        json.dumps(
            {
                "subprotocol": ws.subprotocol,
                "path": ws.path,
                "query": ws.environ.get("QUERY_STRING"),
                "cookie": ws.environ.get("HTTP_COOKIE"),
            }
        )
    )
    ws.receive()


@app.route("/reject")
def reject(ws: WebSocket) -> None:
    raise Reject(403, "members only")


@app.route("/noop")
def noop(ws: WebSocket) -> None:
    pass


@app.route("/choose")
def choose(ws: WebSocket) -> None:
    ws.accept(subprotocol="second")
    ws.send(str(ws.subprotocol))
    ws.receive()


@app.route("/badstream")
def badstream(ws: WebSocket) -> None:
    def chunks() -> Iterator[str | bytes]:
        yield "text first, "
        yield "then more text, "
        yield b"then bytes"  # the first fragment is on the wire by now

    try:
        ws.send_stream(chunks())
    except TypeError:
        sys.stderr.write(f"badstream: TypeError, close code {ws.close_code}\n")
        sys.stderr.flush()


@app.route("/closer", close_timeout=0.5)
def closer(ws: WebSocket) -> None:
    ws.send("closing")
    ws.close(1000, "bye")  # the peer below never answers: give up after close_timeout
    sys.stderr.write(f"closer: close returned, code {ws.close_code}\n")
    sys.stderr.flush()
