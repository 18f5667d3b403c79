"""Pyramid, which has no wsgiws adapter: the generic middleware and ``run_session``.

gunicorn -c gunicorn.conf.py examples.pyramid_echo:app

A Pyramid view hands the upgrade request to ``run_session``; the handler runs
inside the view, so ``request`` (matchdict, session, registry) is its own, and
until it uses ``ws`` it may refuse with Pyramid's own responses (``HTTPForbidden``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPForbidden
from pyramid.request import Request
from pyramid.response import Response
from pyramid.session import SignedCookieSessionFactory

from wsgiws import HijackError, Reject, WebSocket, WebSocketMiddleware, run_session


def websocket(handler: Callable[[Request, WebSocket], Any]) -> Callable[[Request], Response]:
    """A Pyramid view serving ``handler(request, ws)``."""

    def view(request: Request) -> Response:
        try:
            accepted, result = run_session(request.environ, lambda ws: handler(request, ws))
        except Reject as reject:  # a bad handshake (wrong origin, no Upgrade header, ...)
            status, headers, body = reject.response()
            return Response(body=body, status=status, headerlist=headers)
        except HijackError as exc:
            return Response(str(exc) + "\n", status=501, content_type="text/plain")
        return Response(status=101) if accepted else result  # the 101 is never sent

    return view


def index(request: Request) -> Response:
    return Response("an ordinary Pyramid view\n", content_type="text/plain")


def login(request: Request) -> Response:
    request.session["user"] = request.matchdict["name"]
    return Response(f"logged in as {request.matchdict['name']}\n", content_type="text/plain")


@websocket
def chat(request: Request, ws: WebSocket) -> None:
    user = request.session.get("user")
    if user is None:
        raise HTTPForbidden("log in first")  # still HTTP: Pyramid answers 403
    room = request.matchdict["room"]
    ws.send(f"{user} joined {room}")
    for message in ws:
        ws.send(f"{user}@{room}: {message}")


def make_app() -> Any:
    with Configurator(session_factory=SignedCookieSessionFactory("change me")) as config:
        config.add_route("index", "/")
        config.add_route("login", "/login/{name}")
        config.add_route("chat", "/chat/{room}")
        config.add_view(index, route_name="index")
        config.add_view(login, route_name="login")
        config.add_view(chat, route_name="chat", request_method="GET")
        return config.make_wsgi_app()


app = WebSocketMiddleware(make_app())
