"""Flask integration: WebSocket views that run in the app's own request context.

>>> from flask import Flask
>>> from wsgiws.flask import WebSockets
>>> app = Flask(__name__)
>>> sockets = WebSockets(app)
>>> @sockets.route("/echo")
... def echo(ws):
...     for message in ws:
...         ws.send(message)

The view runs like any Flask view: ``before_request`` hooks, ``session``,
``g``, ``request`` and auth decorators work, and until the view first uses
``ws`` (or calls ``ws.accept()``) it may refuse with ``abort(403)`` or by
returning a response.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, request

from .exceptions import HijackError
from .handshake import Reject
from .middleware import WebSocketMiddleware, WebSocketOptions, run_session

__all__ = ["WebSockets"]

F = TypeVar("F", bound=Callable[..., Any])


class WebSockets:
    """Adds WebSocket routes to a Flask app (wraps ``app.wsgi_app`` in the middleware)."""

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        self.options = WebSocketOptions().merge(**options)
        self.app: Flask | None = None
        self._deferred: list[tuple[str, str, Callable[..., Any], dict[str, Any]]] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        self.app = app
        if not isinstance(app.wsgi_app, WebSocketMiddleware):
            app.wsgi_app = WebSocketMiddleware(app.wsgi_app)  # type: ignore[method-assign]
        for rule, endpoint, view, flask_options in self._deferred:
            app.add_url_rule(rule, endpoint, view, methods=["GET"], websocket=True, **flask_options)
        self._deferred.clear()

    def route(self, rule: str, *, blueprint: Any = None, **options: Any) -> Callable[[F], F]:
        """Like ``app.route``: the view gets the WebSocket first, then the URL variables.

        Keyword arguments that are WebSocket options (``subprotocols``,
        ``max_message_size``, ...) configure this endpoint; the rest go to
        Flask's ``add_url_rule``. ``blueprint`` registers the view on a Blueprint.
        """
        # Werkzeug's router sends Upgrade: websocket requests only to websocket rules
        # (and answers a plain GET on one with 400).
        ws_fields = set(WebSocketOptions.__dataclass_fields__)
        ws_options = self.options.merge(**{k: v for k, v in options.items() if k in ws_fields})
        flask_options = {k: v for k, v in options.items() if k not in ws_fields}

        def decorator(handler: F) -> F:
            @functools.wraps(handler)
            def view(**kwargs: Any) -> Any:
                return _serve(handler, kwargs, ws_options)

            endpoint = flask_options.pop("endpoint", None) or handler.__name__
            if blueprint is not None:
                blueprint.add_url_rule(
                    rule, endpoint, view, methods=["GET"], websocket=True, **flask_options
                )
            elif self.app is not None:
                self.app.add_url_rule(
                    rule, endpoint, view, methods=["GET"], websocket=True, **flask_options
                )
            else:
                self._deferred.append((rule, endpoint, view, flask_options))
            return handler

        return decorator


def _serve(handler: Callable[..., Any], kwargs: dict[str, Any], options: WebSocketOptions) -> Any:
    environ = request.environ
    try:
        accepted, result = run_session(environ, handler, kwargs=kwargs, options=options)
    except Reject as reject:
        _, headers, body = reject.response()
        return Response(body, status=reject.status, headers=headers)
    except HijackError as exc:
        return Response(str(exc) + "\n", status=501, mimetype="text/plain")
    if accepted:
        return Response(status=101)  # never sent: the middleware discards it
    return result
