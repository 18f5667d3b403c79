"""The WSGI middleware: plain requests pass through, upgrade requests become WebSockets.

:func:`run_session` is the one place a handler meets a WebSocket; the
middleware's routes and the Flask and Bottle adapters all go through it.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal, TypeVar

from . import connlog, drain
from .deflate import DeflateOptions, server_negotiate
from .exceptions import ConnectionClosed, HijackError
from .handshake import Accept, Reject, header_tokens, is_upgrade_request, validate_request
from .limits import RateLimit, admit, client_address, close_quietly
from .monitor import SessionObserver, refused
from .protocol import CloseCode
from .servers import ENVIRON_START_RESPONSE as ENVIRON_START_RESPONSE  # (re-exported)
from .servers import Hijack, detacher, find_socket
from .websocket import WebSocket

__all__ = ["WebSocketMiddleware", "WebSocketOptions", "run_session"]

logger = logging.getLogger("wsgiws")

StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
Handler = Callable[..., Any]
H = TypeVar("H", bound=Handler)

#: environ keys this package sets on upgrade requests.
ENVIRON_OPTIONS = "wsgiws.options"
ENVIRON_ACCEPTED = "wsgiws.accepted"
ENVIRON_HIJACK = "wsgiws.hijack"

_NORMAL = CloseCode.NORMAL  # (bound once: slow to look up on its class on Python 3.11)


@dataclass(frozen=True)
class WebSocketOptions:
    """Settings for WebSocket endpoints; the middleware's are the defaults of its routes.

    ``origins``: None allows only same-origin browser requests (Origin host equals
    Host); a list allows those origins (``"*"`` allows any). Requests without
    Origin (non-browser clients) always pass.

    ``compression``: permessage-deflate settings, or None to decline it. On by
    default (every browser offers it); a connection that negotiates it holds
    about 49 KB of zlib state with the default window bits (12) and memLevel
    (5); ask for ``DeflateOptions(server_no_context_takeover=True,
    client_no_context_takeover=True)`` to hold none between messages.

    Limits (see :mod:`wsgiws.limits` and docs/operating.md): ``max_connections``
    per worker (503), ``max_connections_per_client`` (429) with the client found
    through ``trusted_proxies``, ``max_request_headers`` (431), ``message_rate``
    and ``byte_rate`` (close 1008, or drop with ``rate_limit_action="drop"``),
    ``idle_timeout`` (close 1000). Logs (see :mod:`wsgiws.connlog`) leave the
    query string out unless ``log_query_string``.
    """

    subprotocols: Sequence[str] = ()
    require_subprotocol: bool = False
    origins: Sequence[str] | None = None
    max_message_size: int | None = 1 << 20
    max_fragments: int | None = None
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    close_timeout: float = 10.0
    compression: DeflateOptions | None = field(default_factory=DeflateOptions)
    max_connections: int | None = None
    max_connections_per_client: int | None = None
    trusted_proxies: Sequence[str] = ()
    max_request_headers: int | None = 32768
    message_rate: RateLimit | None = None
    byte_rate: RateLimit | None = None
    rate_limit_action: Literal["close", "drop"] = "close"
    idle_timeout: float | None = None
    log_query_string: bool = False

    def merge(self, **overrides: Any) -> WebSocketOptions:
        unknown = set(overrides) - set(self.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown WebSocket option(s): {', '.join(sorted(unknown))}")
        return replace(self, **overrides)


class _Opener:
    """Sends the 101 through the server's own start_response, then takes the socket."""

    __slots__ = ("accept", "environ", "hijack")

    def __init__(self, environ: dict[str, Any], accept: Accept, hijack: Hijack) -> None:
        self.environ = environ
        self.accept = accept
        self.hijack = hijack

    def __call__(self, ws: WebSocket) -> tuple[socket.socket, bytes, bytes]:
        start_response = self.environ.get(ENVIRON_START_RESPONSE)
        if start_response is None:
            raise RuntimeError("wsgiws: the app is not wrapped in WebSocketMiddleware")
        if drain.draining():  # the server is stopping: send the client elsewhere
            raise Reject(503, "server is restarting; reconnect", [("Retry-After", "1")])
        self.accept.subprotocol = ws.subprotocol
        status, headers = "101 Switching Protocols", self.accept.response_headers()
        hijack = self.hijack
        # Each used once: the environ keeps no closure (over the server's request) for life.
        send_head, hijack.send_head = hijack.send_head, None
        if send_head is not None:
            head = send_head(status, headers)  # written by the connection, first
        else:
            write = start_response(status, headers)
            write(b"")  # flush the status line and headers now
            head = b""
        self.environ[ENVIRON_ACCEPTED] = True
        self.environ[ENVIRON_HIJACK] = hijack
        leftover = hijack.take_buffered()
        hijack.take_buffered = bytes
        if hijack.detach is not None:  # the connection leaves the server's request here
            hijack.sock, hijack.detach = hijack.detach(), None
        sock = hijack.sock
        sock.settimeout(None)
        return sock, leftover, head


def run_session(
    environ: dict[str, Any],
    handler: Handler,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    options: WebSocketOptions | None = None,
    websocket_class: type[WebSocket] = WebSocket,
) -> tuple[bool, Any]:
    """Run ``handler(ws, *args, **kwargs)`` for an upgrade request.

    Returns ``(True, None)`` once a WebSocket was accepted and has closed; or
    ``(False, value)`` when the handler returned ``value`` (not None) without
    accepting, for a framework to send as an HTTP response. Raises
    :class:`Reject` for a bad handshake or a refusing handler,
    :class:`HijackError` when the server cannot hand over its socket, and
    whatever the handler raised before accepting. ``websocket_class`` lets a
    framework adapter hand out a :class:`WebSocket` subclass (wsgiws.django's
    releases database connections whenever the handler waits for a message).
    """
    if options is None:
        options = environ.get(ENVIRON_OPTIONS) or WebSocketOptions()
    connlog.new_id(environ)
    client = client_address(environ, options.trusted_proxies)
    try:
        accept = validate_request(
            environ,
            subprotocols=options.subprotocols,
            require_subprotocol=options.require_subprotocol,
            origins=options.origins,
            negotiate_extension=(
                None
                if options.compression is None
                else partial(server_negotiate, options=options.compression)
            ),
        )
        admission = admit(environ, client, options)
    except Reject as reject:
        refused(environ, client, reject, options.log_query_string)
        raise
    try:
        try:
            ws = _new_websocket(environ, options, accept, client, websocket_class)
        except HijackError as exc:
            refused(environ, client, Reject(501, str(exc)), options.log_query_string)
            raise
        del accept  # the opener holds it until the 101 is out; nothing after that
        return _run(environ, handler, args, kwargs, options, ws, client)
    finally:
        admission.release()


def _new_websocket(
    environ: dict[str, Any],
    options: WebSocketOptions,
    accept: Accept,
    client: str,
    websocket_class: type[WebSocket],
) -> WebSocket:
    return websocket_class(
        environ=environ,
        subprotocol=accept.subprotocol,
        offered_subprotocols=header_tokens(environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL")),
        extension=accept.extension,
        max_message_size=options.max_message_size,
        max_fragments=options.max_fragments,
        ping_interval=options.ping_interval,
        ping_timeout=options.ping_timeout,
        close_timeout=options.close_timeout,
        opener=_Opener(environ, accept, find_socket(environ)),
        observer=SessionObserver(
            environ, options, client, dict(accept.headers).get("Sec-WebSocket-Extensions")
        ),
    )


def _run(
    environ: dict[str, Any],
    handler: Handler,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    options: WebSocketOptions,
    ws: WebSocket,
    client: str,
) -> tuple[bool, Any]:
    try:
        result = handler(ws, *args, **(kwargs or {}))
    except ConnectionClosed:
        pass  # the peer went away or the connection failed: nothing to report
    except Exception:
        if not ws.accepted:
            # still HTTP: let the framework answer (an abort(403), a 500 page)
            refused(environ, client, sys.exc_info()[1] or Exception(), options.log_query_string)
            raise
        logger.exception(
            "ws %s: handler for %s raised",
            environ[connlog.ENVIRON_CONNECTION_ID],
            environ.get("PATH_INFO", "?"),
        )
        close_quietly(ws, CloseCode.INTERNAL_ERROR, "internal error")
    except BaseException:
        # The greenlet is being killed (worker shutdown): say goodbye without waiting.
        if ws.accepted:
            ws.close_timeout = min(ws.close_timeout, 1.0)
            close_quietly(ws, CloseCode.GOING_AWAY, "")
        raise
    else:
        if not ws.accepted and result is not None:
            # An HTTP answer instead of a 101 (a framework's response: its status when it
            # says; the generic middleware answers any other value with a 500).
            status = getattr(result, "status_code", 500)
            answer = Reject(status if isinstance(status, int) else 500, "answered with HTTP")
            refused(environ, client, answer, options.log_query_string)
            return False, result
        close_quietly(ws, _NORMAL, "")
    if not ws.accepted:  # the handler raised ConnectionClosed before accepting: odd, but done
        return False, None
    return True, None


def _respond(start_response: StartResponse, reject: Reject) -> list[bytes]:
    status, headers, body = reject.response()
    start_response(status, headers)
    return [body]


class WebSocketMiddleware:
    """Wrap a WSGI app to give it WebSocket endpoints.

    >>> mw = WebSocketMiddleware(app)
    >>> @mw.route("/echo")
    ... def echo(ws):
    ...     for message in ws:
    ...         ws.send(message)

    Requests for the routes become WebSockets; every other request goes to
    ``app`` untouched (with ``app=None`` they get 404). Keyword arguments are
    :class:`WebSocketOptions`, the defaults for every route and for the Flask
    and Bottle handlers running inside ``app``.
    """

    def __init__(
        self,
        app: WSGIApp | None = None,
        routes: Mapping[str, Handler] | None = None,
        **options: Any,
    ) -> None:
        self.app = app
        self.options = WebSocketOptions().merge(**options)
        self.routes: dict[str, tuple[Handler, WebSocketOptions]] = {}
        for path, handler in (routes or {}).items():
            self.add_route(path, handler)

    def add_route(self, path: str, handler: Handler, **options: Any) -> None:
        self.routes[path] = (handler, self.options.merge(**options))

    def route(self, path: str, **options: Any) -> Callable[[H], H]:
        """Decorator: ``handler(ws)`` serves WebSocket requests for ``path`` (exact match)."""

        def decorator(handler: H) -> H:
            self.add_route(path, handler, **options)
            return handler

        return decorator

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        route = self.routes.get(environ.get("PATH_INFO", ""))
        if route is None and not is_upgrade_request(environ):
            return self._app(environ, start_response)
        detach = detacher(environ)
        if detach is not None:  # the connection may leave the server's request at the 101
            return detach(environ, start_response, self._upgrade)
        return self._upgrade(environ, start_response)

    def _upgrade(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """An upgrade request, or any request for a route."""
        environ[ENVIRON_START_RESPONSE] = start_response
        environ.setdefault(ENVIRON_OPTIONS, self.options)
        route = self.routes.get(environ.get("PATH_INFO", ""))
        if route is not None:
            handler, options = route
            try:
                accepted, result = run_session(environ, handler, options=options)
            except Reject as reject:
                return _respond(start_response, reject)  # run_session logged it
            except HijackError as exc:
                logger.error("%s", exc)
                return _respond(start_response, Reject(501, str(exc)))
            if not accepted:
                logger.error(
                    "WebSocket handler for %s returned %r without accepting",
                    environ.get("PATH_INFO"),
                    result,
                )
                return _respond(start_response, Reject(500, "handler did not accept"))
            return _handed_over(environ)
        # An upgrade request for the wrapped app (a Flask or Bottle WebSocket view, or a 404).
        result = self._app(environ, _GuardedStartResponse(environ, start_response))
        if environ.get(ENVIRON_ACCEPTED):
            close = getattr(result, "close", None)
            if close is not None:
                close()  # runs the framework's teardown; its response body is not sent
            return _handed_over(environ)
        return result

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if self.app is None:
            return _respond(start_response, Reject(404, "not found"))
        return self.app(environ, start_response)


def _handed_over(environ: dict[str, Any]) -> Iterable[bytes]:
    """What the server gets once a WebSocket had its connection (nothing to write)."""
    hijack: Hijack = environ[ENVIRON_HIJACK]
    return hijack.end()


class _GuardedStartResponse:
    """Once a WebSocket took the connection, whatever the framework answers goes nowhere."""

    __slots__ = ("environ", "start_response")

    def __init__(self, environ: dict[str, Any], start_response: StartResponse) -> None:
        self.environ = environ
        self.start_response = start_response

    def __call__(self, *args: Any) -> Callable[[bytes], object]:
        if self.environ.get(ENVIRON_ACCEPTED):
            return _discard
        return self.start_response(*args)


def _discard(data: bytes) -> None:
    pass
