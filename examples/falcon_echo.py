"""Falcon (WSGI), which has no wsgiws adapter: the generic middleware and ``run_session``.

gunicorn -c gunicorn.conf.py examples.falcon_echo:app

A responder hands the upgrade request to ``run_session``; the handler runs
inside it, so ``req.context`` (filled by Falcon middleware) and the URL's
fields are at hand, and until it uses ``ws`` it may refuse with Falcon's own
errors (``falcon.HTTPForbidden``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import falcon

from wsgiws import HijackError, Reject, WebSocket, WebSocketMiddleware, run_session


def serve_websocket(
    req: falcon.Request, resp: falcon.Response, handler: Callable[[WebSocket], Any]
) -> None:
    """Answer the responder's request with the WebSocket ``handler(ws)`` serves."""
    try:
        accepted, _ = run_session(req.env, handler)
    except Reject as reject:  # a bad handshake (wrong origin, no Upgrade header, ...)
        status, headers, body = reject.response()
        resp.status, resp.data = status, body
        resp.set_headers(headers)
        return
    except HijackError as exc:
        raise falcon.HTTPError(falcon.HTTP_501, description=str(exc)) from exc
    resp.status = falcon.HTTP_101 if accepted else falcon.HTTP_500  # the 101 is never sent


class LoadUser:
    """Falcon middleware: who is asking, for every responder (``req.context.user``)."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.user = req.cookies.get("user")


class Index:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "an ordinary Falcon responder\n"


class Chat:
    def on_get(self, req: falcon.Request, resp: falcon.Response, room: str) -> None:
        user = req.context.user
        if user is None:
            raise falcon.HTTPForbidden(description="log in first")  # still HTTP: a 403

        def chat(ws: WebSocket) -> None:
            ws.send(f"{user} joined {room}")
            for message in ws:
                ws.send(f"{user}@{room}: {message}")

        serve_websocket(req, resp, chat)


falcon_app = falcon.App(middleware=[LoadUser()])
falcon_app.add_route("/", Index())
falcon_app.add_route("/chat/{room}", Chat())

app = WebSocketMiddleware(falcon_app)
