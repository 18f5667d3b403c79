"""A chat with rooms that lose nothing: Flask, wsgiws, the hub and its browser client.

    gunicorn -c gunicorn.conf.py examples.chat.app:app                      # one worker
    WSGIWS_REDIS_URL=redis://127.0.0.1:6379/0 WSGIWS_WORKERS=2 \\
        gunicorn -c gunicorn.conf.py examples.chat.app:app                  # 2 workers + Redis

Without ``WSGIWS_REDIS_URL`` the hub is in-process: rooms are per worker, so
run one worker. ``GET /`` is the page; ``/ws?name=NAME&room=ROOM`` the WebSocket
(one room per connection). The page follows the room with
``/static/wsgiws-rooms.js``: after any cut (network, worker killed, deploy, Redis
restart) it reconnects with ``after=<last position>`` and gets what it missed,
once, in order. The server sends a greeting ``{"pos", "worker"}`` then the hub's
JSON frames ``{"room", "pos", "data"}`` where ``data`` is the chat event
``{"room", "name", "text"}`` (``name`` null for notices) as JSON text. The page
sends ``{"say": text}``. ``GET /rooms/<room>`` lists who is in the room on every
worker; ``POST /rooms/<room>`` (form field ``text``) posts an announcement from a
plain HTTP request.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request, send_file

from wsgiws import WebSocket
from wsgiws.flask import WebSockets
from wsgiws.hub import HistoryGap, Hub, json_wire_format
from wsgiws.resume import BROWSER_CLIENT, GAP_CODE

logger = logging.getLogger("chat")

app = Flask(__name__)
sockets = WebSockets(app)
hub = Hub.from_url(os.environ.get("WSGIWS_REDIS_URL"), wire_format=json_wire_format)
if not os.environ.get("WSGIWS_REDIS_URL"):
    logger.warning("chat: in-process hub (WSGIWS_REDIS_URL unset): rooms are per worker process")

PAGE = (Path(__file__).parent / "index.html").read_bytes()
MAX_TEXT = 2000


def event(room: str, name: str | None, text: str) -> str:
    return json.dumps({"room": room, "name": name, "text": text})


@app.get("/")
def index() -> Response:
    return Response(PAGE, mimetype="text/html")


@app.get("/static/wsgiws-rooms.js")
def browser_client() -> Response:
    return send_file(BROWSER_CLIENT, mimetype="text/javascript")


@app.post("/rooms/<room>")
def announce(room: str) -> tuple[str, int]:
    text = request.form.get("text", "")[:MAX_TEXT]
    hub.send(room, event(room, None, text))
    return "", 204


@app.get("/rooms/<room>")
def who(room: str) -> Response:
    return jsonify(hub.presence(room))


@sockets.route("/ws")
def chat(ws: WebSocket) -> None:
    name = (request.args.get("name") or "anonymous")[:40]
    room = (request.args.get("room") or "lobby")[:40]
    after = request.args.get("after")
    position = after or hub.position(room)
    hub.join(ws)
    ws.send(json.dumps({"pos": position, "worker": os.getpid()}))
    try:
        hub.join(ws, room, after=position, info={"name": name})
    except HistoryGap as gap:  # the page reloads: a fresh start, and it says so
        ws.close(GAP_CODE, gap.reason)
        return
    if not after:
        hub.send(room, event(room, None, f"{name} joined"))
    for raw in ws:
        try:
            command: dict[str, Any] = json.loads(raw)
        except ValueError:
            continue
        if isinstance(command, dict) and "say" in command:
            hub.send(room, event(room, name, str(command["say"])[:MAX_TEXT]))
    if ws.close_code in (1000, 1001):  # the page left (not a cut: that one comes back)
        hub.send(room, event(room, None, f"{name} left"), exclude=ws)
