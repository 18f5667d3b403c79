"""A chat with rooms: Flask, wsgiws and the hub.

    gunicorn -c gunicorn.conf.py examples.chat.app:app                      # one worker
    WSGIWS_REDIS_URL=redis://127.0.0.1:6379/0 WSGIWS_WORKERS=2 \\
        gunicorn -c gunicorn.conf.py examples.chat.app:app                  # 2 workers + Redis

Without ``WSGIWS_REDIS_URL`` the hub is in-process: rooms are per worker, so
run one worker. ``GET /`` is the page; ``/ws?name=NAME`` the WebSocket. The
browser sends JSON: ``{"join": room}``, ``{"leave": room}``, ``{"say": text,
"room": room}``; it receives ``{"room", "name", "text"}`` (``name`` null for
notices). ``POST /rooms/<room>`` (form field ``text``) posts an announcement
from a plain HTTP request, to every worker's sockets in that room.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from flask import Flask, Response, request

from wsgiws import WebSocket
from wsgiws.flask import WebSockets
from wsgiws.hub import Hub

logger = logging.getLogger("chat")

app = Flask(__name__)
sockets = WebSockets(app)
hub = Hub.from_url(os.environ.get("WSGIWS_REDIS_URL"))
if not os.environ.get("WSGIWS_REDIS_URL"):
    logger.warning("chat: in-process hub (WSGIWS_REDIS_URL unset): rooms are per worker process")

PAGE = (Path(__file__).parent / "index.html").read_bytes()
MAX_TEXT = 2000


def event(room: str, name: str | None, text: str) -> str:
    return json.dumps({"room": room, "name": name, "text": text})


@app.get("/")
def index() -> Response:
    return Response(PAGE, mimetype="text/html")


@app.post("/rooms/<room>")
def announce(room: str) -> tuple[str, int]:
    text = request.form.get("text", "")[:MAX_TEXT]
    hub.send(room, event(room, None, text))
    return "", 204


@sockets.route("/ws")
def chat(ws: WebSocket) -> None:
    name = (request.args.get("name") or "anonymous")[:40]
    hub.join(ws)
    ws.send(json.dumps({"worker": os.getpid()}))
    for raw in ws:
        try:
            command: dict[str, Any] = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(command, dict):
            continue
        room = str(command.get("room") or command.get("join") or command.get("leave") or "")[:40]
        if not room:
            continue
        if "join" in command:
            hub.join(ws, room)
            hub.send(room, event(room, None, f"{name} joined"))
        elif "leave" in command:
            hub.send(room, event(room, None, f"{name} left"), exclude=ws)
            hub.leave(ws, room)
        elif "say" in command and room in hub.rooms_of(ws):
            hub.send(room, event(room, name, str(command["say"])[:MAX_TEXT]))
    for room in hub.rooms_of(ws):
        hub.send(room, event(room, None, f"{name} left"), exclude=ws)
