"""Django integration: WebSocket views in the URLconf, behind Django's own middleware.

In the project's ``wsgi.py``::

    from django.core.wsgi import get_wsgi_application
    from wsgiws import WebSocketMiddleware

    application = WebSocketMiddleware(get_wsgi_application())

In a views module, and ``path("ws/chat/<slug:room>/", views.chat)`` in ``urls.py``::

    from django.contrib.auth.decorators import login_required
    from wsgiws.django import websocket

    @login_required
    @websocket
    def chat(request, ws, room):
        for message in ws:
            ws.send(f"{request.user.username}@{room}: {message}")

The view is an ordinary Django view: the request went through the project's
middleware (``request.user``, ``request.session``), decorators such as
``login_required`` and ``permission_required`` apply, and until the view first
uses ``ws`` (or calls ``ws.accept()``) it may refuse by returning any
``HttpResponse`` (403, 404, a redirect) or raising ``PermissionDenied`` or
``Http404``.

Origins follow Django's CSRF rule: a browser's ``Origin`` must be the request's
own ``scheme://host`` (the host being one of ``ALLOWED_HOSTS``) or be listed in
``CSRF_TRUSTED_ORIGINS`` (``https://*.example.com`` covers the subdomains);
``@websocket(origins=[...])`` replaces that rule with an explicit list.

Database connections: Django closes unusable or obsolete connections
(``close_old_connections``) when a request starts and when it ends. A WebSocket
view is one request that may last hours, so the view's WebSocket does the same
at the moments that separate its units of work: once the handshake is accepted,
and each time the handler asks for the next message (never inside an
``atomic()`` block). With ``CONN_MAX_AGE = 0``, Django's default, an idle socket
then holds no database connection; with persistent connections one is reused
until it is too old. Django's ``request_finished`` releases the last one when
the socket closes. ``ATOMIC_REQUESTS`` does not apply to WebSocket views: a
transaction must not stay open for a connection's lifetime.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar, overload
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connections, transaction
from django.http import HttpRequest, HttpResponse
from django.utils.http import is_same_domain

from .exceptions import HijackError
from .handshake import Reject, is_upgrade_request
from .middleware import ENVIRON_OPTIONS, ENVIRON_START_RESPONSE, WebSocketOptions, run_session
from .websocket import WebSocket

__all__ = ["DjangoWebSocket", "close_old_connections", "origin_allowed", "websocket"]

logger = logging.getLogger("wsgiws")

F = TypeVar("F", bound=Callable[..., Any])


def close_old_connections() -> None:
    """Django's ``close_old_connections``, except for connections inside ``atomic()``.

    Closing one of those would end (and roll back) a transaction the handler opened.
    """
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close_if_unusable_or_obsolete()


class DjangoWebSocket(WebSocket):
    """The WebSocket a Django view gets: it lets go of database connections while idle."""

    __slots__ = ()

    def accept(self, subprotocol: str | None = None) -> None:
        opening = not self.accepted
        super().accept(subprotocol)
        if opening:  # the HTTP part (sessions, auth) is over
            close_old_connections()

    def _next_message(self, timeout: float | None) -> str | bytes | None:
        # (under receive() and iteration alike)
        close_old_connections()  # the previous message's work is done
        return super()._next_message(timeout)


def origin_allowed(origin: str, scheme: str, host: str) -> bool:
    """Django's CSRF rule for ``Origin``: the request's own ``scheme://host``, or a
    ``CSRF_TRUSTED_ORIGINS`` entry (exact, or ``scheme://*.domain`` for subdomains)."""
    if origin == f"{scheme}://{host}":
        return True
    trusted: list[str] = list(settings.CSRF_TRUSTED_ORIGINS)
    if origin in trusted:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    for entry in trusted:
        if "*" in entry:
            pattern = urlsplit(entry)
            if pattern.scheme == parts.scheme and is_same_domain(
                parts.netloc, pattern.netloc.lstrip("*")
            ):
                return True
    return False


@overload
def websocket(handler: F) -> F: ...
@overload
def websocket(handler: None = None, **options: Any) -> Callable[[F], F]: ...


def websocket(handler: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Make ``handler(request, ws, *args, **kwargs)`` a Django view serving a WebSocket.

    Keyword arguments are :class:`~wsgiws.middleware.WebSocketOptions` for this
    view; without them it uses the middleware's.
    """
    view_options = WebSocketOptions().merge(**options) if options else None

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            environ: dict[str, Any] = request.environ
            if ENVIRON_START_RESPONSE not in environ and is_upgrade_request(environ):
                return _plain(
                    500, "wsgiws: serve the Django application wrapped in WebSocketMiddleware"
                )
            ws_options: WebSocketOptions = (
                view_options or environ.get(ENVIRON_OPTIONS) or WebSocketOptions()
            )
            if ws_options.origins is None:
                # get_host() enforces ALLOWED_HOSTS (DisallowedHost: Django answers 400).
                host = request.get_host()
                origin = request.META.get("HTTP_ORIGIN")
                if origin is not None and not origin_allowed(origin, request.scheme, host):
                    return _refuse(request, Reject(403, f"origin {origin!r} is not allowed"))
                ws_options = ws_options.merge(origins=["*"])  # checked above, Django's way

            def session(ws: WebSocket, *args: Any, **kwargs: Any) -> Any:
                return func(request, ws, *args, **kwargs)

            try:
                accepted, result = run_session(
                    environ, session, args, kwargs, ws_options, websocket_class=DjangoWebSocket
                )
            except Reject as reject:
                return _refuse(request, reject)
            except HijackError as exc:
                logger.error("%s", exc)
                return _plain(501, str(exc))
            if accepted:
                return HttpResponse(status=101)  # never sent: the middleware discards it
            return result

        for alias in connections:  # a transaction must not last as long as a socket
            view = transaction.non_atomic_requests(using=alias)(view)
        return view

    if handler is not None:
        return decorator(handler)
    return decorator


def _refuse(request: HttpRequest, reject: Reject) -> HttpResponse:
    logger.info(
        "WebSocket request for %s refused (%d): %s", request.path, reject.status, reject.reason
    )
    _, headers, body = reject.response()
    response = HttpResponse(body, status=reject.status)
    for name, value in headers:
        response[name] = value
    return response


def _plain(status: int, text: str) -> HttpResponse:
    return HttpResponse(text + "\n", status=status, content_type="text/plain; charset=utf-8")
