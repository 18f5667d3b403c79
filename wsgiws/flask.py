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

With an app factory, create ``WebSockets()`` without an app, declare routes on
it (or on a Blueprint, with ``blueprint=bp``) and call ``sockets.init_app(app)``
in the factory: every app it is given gets the routes. Options come from, in
rising order: the defaults, ``app.config["WSGIWS_<OPTION>"]`` (e.g.
``WSGIWS_MAX_MESSAGE_SIZE``), the keyword arguments of ``WebSockets(...)`` and
of ``init_app(...)``, and a route's own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from flask import Flask, Response, current_app, request

from .exceptions import HijackError
from .handshake import Reject
from .middleware import WebSocketMiddleware, WebSocketOptions, run_session

__all__ = ["CONFIG_PREFIX", "WebSockets", "options_from_config"]

F = TypeVar("F", bound=Callable[..., Any])

#: ``app.config`` keys ``WSGIWS_<OPTION>`` set :class:`~wsgiws.WebSocketOptions` fields.
CONFIG_PREFIX = "WSGIWS_"
_EXTENSION = "wsgiws"
_FIELDS = frozenset(WebSocketOptions.__dataclass_fields__)


def options_from_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The WebSocket options an app's config sets (``WSGIWS_PING_INTERVAL``: ``ping_interval``)."""
    options = {}
    for key, value in config.items():
        if key.startswith(CONFIG_PREFIX):
            name = key[len(CONFIG_PREFIX) :].lower()
            if name not in _FIELDS:
                raise TypeError(f"app.config[{key!r}]: unknown WebSocket option {name!r}")
            options[name] = value
    return options


class WebSockets:
    """Adds WebSocket routes to Flask apps (wraps each ``app.wsgi_app`` in the middleware)."""

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        WebSocketOptions().merge(**options)  # unknown names fail here, not at the first request
        self.options = options
        self.app: Flask | None = None  # the last app given to init_app
        self._apps: list[Flask] = []
        self._rules: list[tuple[str, str, Callable[..., Any], dict[str, Any]]] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, **options: Any) -> None:
        """Give ``app`` this object's routes and options (call it from an app factory)."""
        settings = {**options_from_config(app.config), **self.options, **options}
        app.extensions[_EXTENSION] = WebSocketOptions().merge(**settings)
        if not isinstance(app.wsgi_app, WebSocketMiddleware):
            app.wsgi_app = WebSocketMiddleware(app.wsgi_app)  # type: ignore[method-assign]
        for rule, endpoint, view, flask_options in self._rules:
            _add_rule(app, rule, endpoint, view, flask_options)
        self.app = app
        self._apps.append(app)

    def route(self, rule: str, *, blueprint: Any = None, **options: Any) -> Callable[[F], F]:
        """Like ``app.route``: the view gets the WebSocket first, then the URL variables.

        Keyword arguments that are WebSocket options (``subprotocols``,
        ``max_message_size``, ...) configure this endpoint; the rest go to
        Flask's ``add_url_rule``. ``blueprint`` registers the view on a Blueprint
        (whose app must be given to ``init_app``).
        """
        overrides = {k: v for k, v in options.items() if k in _FIELDS}
        WebSocketOptions().merge(**overrides)
        flask_options = {k: v for k, v in options.items() if k not in _FIELDS}

        def decorator(handler: F) -> F:
            @functools.wraps(handler)
            def view(**kwargs: Any) -> Any:
                return _serve(handler, kwargs, overrides)

            endpoint = flask_options.pop("endpoint", None) or handler.__name__
            if blueprint is not None:
                _add_rule(blueprint, rule, endpoint, view, flask_options)
                return handler
            self._rules.append((rule, endpoint, view, flask_options))
            for app in self._apps:
                _add_rule(app, rule, endpoint, view, flask_options)
            return handler

        return decorator


def _add_rule(
    target: Any, rule: str, endpoint: str, view: Callable[..., Any], options: dict[str, Any]
) -> None:
    # Werkzeug's router sends Upgrade: websocket requests only to websocket rules
    # (and answers a plain GET on one with 400).
    target.add_url_rule(rule, endpoint, view, methods=["GET"], websocket=True, **options)


def _serve(handler: Callable[..., Any], kwargs: dict[str, Any], overrides: dict[str, Any]) -> Any:
    app_options = current_app.extensions.get(_EXTENSION)
    if app_options is None:
        raise RuntimeError(
            "wsgiws: a WebSocket view of an app that was not given to WebSockets.init_app(app)"
        )
    options = app_options.merge(**overrides) if overrides else app_options
    try:
        accepted, result = run_session(request.environ, handler, kwargs=kwargs, options=options)
    except Reject as reject:
        _, headers, body = reject.response()
        return Response(body, status=reject.status, headers=headers)
    except HijackError as exc:
        return Response(str(exc) + "\n", status=501, mimetype="text/plain")
    if accepted:
        return Response(status=101)  # never sent: the middleware discards it
    return result
