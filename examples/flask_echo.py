"""Flask quick start: WebSocket views next to ordinary routes, in the app's request context.

gunicorn -c gunicorn.conf.py examples.flask_echo:app
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Flask, abort, g, request, session

from wsgiws import WebSocket
from wsgiws.flask import WebSockets

app = Flask(__name__)
app.secret_key = "change me"
sockets = WebSockets(app)


@app.before_request
def load_user() -> None:
    g.user = session.get("user")


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if g.user is None:
            abort(403)  # still plain HTTP: the WebSocket is not accepted yet
        return view(*args, **kwargs)

    return wrapper


@app.route("/")
def index() -> str:
    return "an ordinary Flask route\n"


@app.route("/login/<name>")
def login(name: str) -> str:
    session["user"] = name
    return f"logged in as {name}\n"


@sockets.route("/echo")
def echo(ws: WebSocket) -> None:
    for message in ws:
        ws.send(message)


@sockets.route("/private/<room>")
@login_required
def private(ws: WebSocket, room: str) -> None:
    ws.send(f"{g.user} joined {room} ({request.args.get('mode', 'chat')})")
    for message in ws:
        ws.send(f"{g.user}: {message}")
