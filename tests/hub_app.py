"""A small WSGI app over the hub for the multi-process tests (tests/test_redis.py).

``/ws?rooms=a,b`` joins the rooms and says hello with its socket id and the worker's
pid (once this worker's Redis subscription is live). Then each text message is a
JSON command: ``{"op": "send", "room": r, "text": t, "exclude_me": bool}``,
``{"op": "all", ...}``, ``{"op": "join"|"leave", "room": r}``, ``{"op":
"close_room", "room": r, "code": c, "reason": why}``; with ``&name=N`` the socket
is in the rooms' presence as ``{"name": N}`` (``GET /who?room=r`` lists it). ``POST
/publish?room=r`` publishes the body from a plain HTTP request.

Environment: ``WSGIWS_REDIS_URL`` (else in-process), ``HUB_MAX_QUEUE``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from wsgiws import WebSocket, WebSocketMiddleware
from wsgiws.hub import HistoryGap, Hub, json_wire_format
from wsgiws.resume import GAP_CODE

logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(process)d] %(name)s: %(message)s")
hub = Hub.from_url(
    os.environ.get("WSGIWS_REDIS_URL"),
    max_queue=int(os.environ.get("HUB_MAX_QUEUE", "256")),
    transport=os.environ.get("HUB_TRANSPORT", "streams"),
    history=int(os.environ.get("HUB_HISTORY", "1000")),
    **(
        {"presence_ttl": int(os.environ["HUB_PRESENCE_TTL"])}
        if "HUB_PRESENCE_TTL" in os.environ
        else {}
    ),
    wire_format=json_wire_format if os.environ.get("HUB_WIRE") == "json" else None,
)


def http(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/who":
        room = parse_qs(environ.get("QUERY_STRING", ""))["room"][0]
        body = json.dumps(hub.presence(room)).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if environ.get("PATH_INFO") == "/publish" and environ["REQUEST_METHOD"] == "POST":
        room = parse_qs(environ.get("QUERY_STRING", ""))["room"][0]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        hub.send(room, environ["wsgi.input"].read(length).decode())
        start_response("204 No Content", [])
        return []
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]


# HUB_PING_INTERVAL=0 turns keepalive pings off (the benchmarks' raw clients read data frames only).
ping_interval = float(os.environ.get("HUB_PING_INTERVAL", "20")) or None
app = WebSocketMiddleware(
    http, close_timeout=2.0, max_message_size=4 << 20, ping_interval=ping_interval
)


@app.route("/ws")
def handler(ws: WebSocket) -> None:
    query = parse_qs(ws.environ.get("QUERY_STRING", ""))
    rooms = [r for r in query.get("rooms", [""])[0].split(",") if r]
    name = query.get("name", [None])[0]
    my_id = hub.join(ws, *rooms, info=None if name is None else {"name": name})
    wait_until_reading()
    ws.send(json.dumps({"id": my_id, "pid": os.getpid()}))
    for raw in ws:
        command = json.loads(raw)
        op = command["op"]
        exclude = ws if command.get("exclude_me") else None
        if op == "send":
            hub.send(command["room"], command["text"], exclude=exclude)
        elif op == "all":
            hub.broadcast(command["text"], exclude=exclude)
        elif op == "join":
            hub.join(ws, command["room"])
        elif op == "leave":
            hub.leave(ws, command["room"])
        elif op == "close_room":
            hub.close_room(command["room"], code=command["code"], reason=command["reason"])


def wait_until_reading() -> None:
    deadline = time.monotonic() + 5
    backend = hub.backend
    while not getattr(backend, "subscribed", True) and time.monotonic() < deadline:
        time.sleep(0.01)


@app.route("/feed")
def feed(ws: WebSocket) -> None:
    query = parse_qs(ws.environ.get("QUERY_STRING", ""))
    room = query["room"][0]
    position = query.get("after", [None])[0] or hub.position(room)
    hub.join(ws)
    wait_until_reading()
    ws.send(json.dumps({"pos": position, "pid": os.getpid()}))
    try:
        hub.join(ws, room, after=position)
    except HistoryGap as gap:
        ws.close(GAP_CODE, gap.reason)
        return
    for _ in ws:
        pass
