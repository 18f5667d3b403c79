"""Bottle quick start: a WebSocket handler as a Bottle route.

gunicorn -c gunicorn.conf.py examples.bottle_echo:app
"""

from __future__ import annotations

import bottle

from wsgiws import WebSocket, WebSocketMiddleware
from wsgiws.bottle import websocket

bottle_app = bottle.Bottle()


@bottle_app.route("/")
def index() -> str:
    return "an ordinary Bottle route\n"


@bottle_app.route("/echo")
@websocket
def echo(ws: WebSocket) -> None:
    for message in ws:
        ws.send(message)


@bottle_app.route("/private/<room>")
@websocket(subprotocols=["chat"])
def private(ws: WebSocket, room: str) -> None:
    if bottle.request.get_cookie("user") is None:
        bottle.abort(403, "log in first")
    ws.send(f"{bottle.request.get_cookie('user')} joined {room} via {ws.subprotocol}")
    for message in ws:
        ws.send(message)


app = WebSocketMiddleware(bottle_app)
