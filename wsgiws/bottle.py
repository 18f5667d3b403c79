"""Bottle integration: a WebSocket handler as a Bottle route.

>>> import bottle
>>> from wsgiws import WebSocketMiddleware
>>> from wsgiws.bottle import websocket
>>> app = bottle.Bottle()
>>> @app.route("/echo")
... @websocket
... def echo(ws):
...     for message in ws:
...         ws.send(message)
>>> application = WebSocketMiddleware(app)   # serve this

The handler runs inside Bottle's request handling (``bottle.request``, plugins,
hooks); before it first uses ``ws`` it may refuse with ``bottle.abort(403)``.
``@websocket(subprotocols=["chat"])`` sets options for one route.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar, overload

import bottle

from .exceptions import HijackError
from .handshake import Reject
from .middleware import ENVIRON_START_RESPONSE, WebSocketOptions, run_session

__all__ = ["websocket"]

logger = logging.getLogger("wsgiws")

NOT_WRAPPED = (
    "wsgiws: the Bottle app is served without WebSocketMiddleware, so WebSocket route {path} "
    "cannot take the connection; serve WebSocketMiddleware(bottle_app) instead of the Bottle app"
)

F = TypeVar("F", bound=Callable[..., Any])


@overload
def websocket(handler: F) -> F: ...
@overload
def websocket(handler: None = None, **options: Any) -> Callable[[F], F]: ...


def websocket(handler: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Make a Bottle route handler a WebSocket handler: it gets ``ws`` first."""
    ws_options = WebSocketOptions().merge(**options) if options else None

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def route(*args: Any, **kwargs: Any) -> Any:
            environ = bottle.request.environ
            if ENVIRON_START_RESPONSE not in environ and "HTTP_UPGRADE" in environ:
                message = NOT_WRAPPED.format(path=environ.get("PATH_INFO", "?"))
                logger.error("%s", message)
                return bottle.HTTPResponse(
                    message + "\n", status=500, headers={"Content-Type": "text/plain"}
                )
            try:
                accepted, result = run_session(environ, func, args, kwargs, ws_options)
            except Reject as reject:
                _, headers, body = reject.response()
                return bottle.HTTPResponse(body, status=reject.status, headers=dict(headers))
            except HijackError as exc:
                return bottle.HTTPResponse(str(exc) + "\n", status=501)
            if accepted:
                bottle.response.status = 101  # never sent: the middleware discards it
                return b""
            return result

        return route

    if handler is not None:
        return decorator(handler)
    return decorator
