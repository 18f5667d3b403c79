"""Test WebSocket routes in-process: no server, no listening socket.

>>> from wsgiws.testing import TestClient
>>> client = TestClient(app)                 # any WSGI app: a Flask app, Bottle, middleware
>>> with client.websocket_connect("/echo") as ws:
...     ws.send("hi")
...     assert ws.receive() == "hi"

The request travels as real bytes over a socket pair to a tiny in-process HTTP
server that builds a real WSGI environ (path, query, headers, cookies) and
calls the app, which runs the real middleware, the framework's request context
and the handler in a thread (or a greenlet under gevent). The test holds the
client end: the same :class:`~wsgiws.websocket.WebSocket` API as everywhere.

A refusal before accepting (``abort(403)``, ``raise Reject(403)``, a 404)
raises :class:`~wsgiws.exceptions.HandshakeRejected` with the status, headers
and body. An exception the app raised before answering is re-raised in the test.
"""

from __future__ import annotations

import io
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from http.cookies import BaseCookie
from types import EllipsisType
from typing import Any, Literal
from urllib.parse import unquote_to_bytes, urlsplit

from .client import ClientWebSocket, client_websocket, open_handshake, use_gevent
from .client_handshake import ClientHandshake, HeadersLike, header_list, parse_uri
from .deflate import DeflateOptions
from .exceptions import ConnectionClosedOK, HandshakeRejected, ReceiveTimeout
from .http import HeadReader, RequestHead, parse_request_head, response_head
from .servers.testing import ENVIRON_BUFFERED, ENVIRON_SOCKET

__all__ = ["DEFAULT_RECEIVE_TIMEOUT", "TestClient", "TestWebSocket"]

#: Seconds ``receive()`` waits when not told, so an app that never answers fails the
#: test instead of hanging the suite.
DEFAULT_RECEIVE_TIMEOUT = 5.0

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
CookieSource = Mapping[str, str] | Any  # a mapping, or a Werkzeug/Flask test client


class TestWebSocket(ClientWebSocket):
    """The client end of an in-process WebSocket; leaving ``with`` closes it and
    waits for the server side (the handler) to finish."""

    _server: _InProcessServer | None = None
    #: What ``receive()`` waits without a ``timeout`` (None: for ever).
    receive_timeout: float | None = DEFAULT_RECEIVE_TIMEOUT

    def receive(self, timeout: float | EllipsisType | None = ...) -> str | bytes:
        """The next message, waiting ``timeout`` seconds (by default ``receive_timeout``);
        then :class:`~wsgiws.exceptions.ReceiveTimeout` (None waits for ever)."""
        if timeout is not ...:
            return super().receive(timeout)
        try:
            return super().receive(self.receive_timeout)
        except ReceiveTimeout:
            raise ReceiveTimeout(
                f"no message from the app within {self.receive_timeout:g} s (the test client's "
                "receive_timeout; set it on TestClient(...) or websocket_connect(...), or pass "
                "receive(timeout=...))"
            ) from None

    def __iter__(self) -> Iterator[str | bytes]:
        # Through receive(), so that iterating waits receive_timeout too.
        while True:
            try:
                yield self.receive()
            except ConnectionClosedOK:
                return

    def wait_server(self, timeout: float | None = 10.0) -> bool:
        """Wait until the handler has returned and the server side is done; True if it is."""
        return self._server is None or self._server.join(timeout)

    @property
    def server_error(self) -> BaseException | None:
        """An exception that escaped the app (handler errors after accepting are
        logged and close the connection with 1011 instead)."""
        return self._server.error if self._server is not None else None

    def __exit__(self, *exc: object) -> None:
        self.close()
        self.wait_server(self.close_timeout + 5.0)
        if exc[0] is None and self.server_error is not None:
            raise self.server_error


class _InProcessServer:
    """Reads one HTTP request from a socket, calls the WSGI app, writes its answer."""

    def __init__(
        self,
        app: WSGIApp,
        sock: socket.socket,
        base: Mapping[str, Any],
        green: bool,
    ) -> None:
        self.app = app
        self.sock = sock
        self.base = base
        self.green = green
        self.error: BaseException | None = None
        self.status: str | None = None
        self._headers_sent = False
        self._done: Any
        if green:
            import gevent

            self._done = gevent.spawn(self._run)
        else:
            self._done = threading.Event()
            threading.Thread(target=self._run_thread, daemon=True, name="wsgiws-test").start()

    def join(self, timeout: float | None) -> bool:
        if self.green:
            self._done.join(timeout)
            return bool(self._done.dead)
        return bool(self._done.wait(timeout))

    def _run_thread(self) -> None:
        try:
            self._run()
        finally:
            self._done.set()

    def _run(self) -> None:
        sock = self.sock
        try:
            request = self._read_head()
            if request is None:
                return
            environ = self._environ(*request)
            self._call_app(environ)
        except Exception as exc:
            self.error = exc
            self._send_error(exc)
        finally:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _read_head(self) -> tuple[RequestHead, bytes] | None:
        reader = HeadReader()
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            head = reader.feed(chunk)  # HeadError (a ValueError) for a bad head
            if head is not None:
                return parse_request_head(head), reader.rest

    def _environ(self, head: RequestHead, leftover: bytes) -> dict[str, Any]:
        method, target, version = head.method, head.target, head.version
        path, _, query = target.partition("?")
        environ: dict[str, Any] = dict(self.base)
        environ.update(
            {
                "REQUEST_METHOD": method,
                "SCRIPT_NAME": "",
                "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
                "QUERY_STRING": query,
                "RAW_URI": target,
                "REQUEST_URI": target,
                "SERVER_PROTOCOL": version,
                "wsgi.input": io.BytesIO(),
                "wsgi.errors": sys.stderr,
                ENVIRON_SOCKET: self.sock,
                ENVIRON_BUFFERED: leftover,
            }
        )
        for name, value in head.headers:
            key = name.upper().replace("-", "_")
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ[key] = value
                continue
            key = "HTTP_" + key
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _call_app(self, environ: dict[str, Any]) -> None:
        pending: list[tuple[str, list[tuple[str, str]]]] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            if exc_info is not None and self._headers_sent:
                raise exc_info[1].with_traceback(exc_info[2])
            pending[:] = [(status, list(headers))]
            return write

        def write(data: bytes) -> None:
            if not self._headers_sent:
                self._send_head(*pending[0])
            if data:
                self.sock.sendall(data)

        result = self.app(environ, start_response)
        try:
            body = []
            for chunk in result:
                if self._headers_sent:
                    if chunk:
                        self.sock.sendall(chunk)
                else:
                    body.append(chunk)
            if not self._headers_sent:
                if not pending:
                    raise RuntimeError("the WSGI app did not call start_response")
                status, headers = pending[0]
                data = b"".join(body)
                if not any(name.lower() == "content-length" for name, _ in headers):
                    headers.append(("Content-Length", str(len(data))))
                self._send_head(status, headers)
                if data:  # a client that read an empty response may be gone already
                    self.sock.sendall(data)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    def _send_head(self, status: str, headers: list[tuple[str, str]]) -> None:
        self._headers_sent = True
        self.status = status
        self.sock.sendall(response_head(status, headers))

    def _send_error(self, exc: BaseException) -> None:
        if self._headers_sent:
            return
        body = "".join(traceback.format_exception(exc)).encode("utf-8", "replace")
        try:
            self._send_head(
                "500 Internal Server Error",
                [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
            )
            self.sock.sendall(body)
        except OSError:
            pass


class TestClient:
    """Drives a WSGI app's WebSocket routes in-process.

    ``app``: the WSGI app as you serve it (a Flask app, a Bottle app wrapped in
    :class:`~wsgiws.WebSocketMiddleware`, the middleware itself). ``base_url``
    gives the host and scheme the app sees. ``headers`` and ``cookies`` are sent
    with every connection (``cookies`` may also be a Flask/Werkzeug or Django test
    client, whose cookie jar is then used: log in with it first to test session auth).
    ``runtime``: ``"threads"`` runs the app in a thread, ``"gevent"`` in a
    greenlet (with gevent sockets); ``"auto"`` picks gevent when the socket
    module is monkey-patched or this thread runs a gevent hub.
    ``receive_timeout``: how long ``ws.receive()`` waits when not told (5 s;
    None waits for ever): an app that never answers fails the test with
    :class:`~wsgiws.exceptions.ReceiveTimeout` saying so, instead of hanging it.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        app: WSGIApp,
        *,
        base_url: str = "http://localhost",
        headers: HeadersLike | None = None,
        cookies: CookieSource | None = None,
        runtime: Literal["auto", "threads", "gevent"] = "auto",
        timeout: float = 10.0,
        receive_timeout: float | None = DEFAULT_RECEIVE_TIMEOUT,
    ) -> None:
        self.app = app
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        self.secure = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.secure else 80)
        self.headers = header_list(headers)
        self.cookies = cookies
        self.runtime = runtime
        self.timeout = timeout
        self.receive_timeout = receive_timeout

    def _green(self) -> bool:
        if self.runtime == "auto":
            return use_gevent()
        return self.runtime == "gevent"

    def _cookie_header(self, source: CookieSource | None, path: str) -> str | None:
        if source is None:
            return None
        jar = source if isinstance(source, BaseCookie) else getattr(source, "cookies", None)
        if isinstance(jar, BaseCookie):  # http.cookies, as Django's test client keeps them
            return "; ".join(f"{name}={morsel.value}" for name, morsel in jar.items()) or None
        if isinstance(source, Mapping):
            return "; ".join(f"{k}={v}" for k, v in source.items()) or None
        add = getattr(source, "_add_cookies_to_wsgi", None)  # Werkzeug >= 2.3 test client
        environ = {
            "wsgi.url_scheme": "https" if self.secure else "http",
            "HTTP_HOST": self._netloc(),
            "SERVER_NAME": self.host,
            "SERVER_PORT": str(self.port),
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": "",
        }
        if add is not None:
            add(environ)
        else:
            jar = getattr(source, "cookie_jar", None)  # older Werkzeug
            inject = getattr(jar, "inject_wsgi", None)
            if inject is None:
                raise TypeError(f"cannot take cookies from {source!r}")
            inject(environ)
        value = environ.get("HTTP_COOKIE")
        return str(value) if value else None

    def _netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"

    def websocket_connect(
        self,
        path: str = "/",
        *,
        headers: HeadersLike | None = None,
        cookies: CookieSource | None = None,
        subprotocols: Sequence[str] | None = None,
        origin: str | None = None,
        compression: DeflateOptions | Literal["deflate"] | None = None,
        max_message_size: int | None = 1 << 20,
        close_timeout: float = 5.0,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        environ: Mapping[str, Any] | None = None,
        receive_timeout: float | EllipsisType | None = ...,
    ) -> TestWebSocket:
        """Open a WebSocket to ``path`` (with query string) of the app.

        Raises :class:`~wsgiws.exceptions.HandshakeRejected` when the app answers
        with an HTTP response instead of accepting, or re-raises what the app
        raised before answering. ``environ`` adds WSGI environ entries (e.g.
        ``REMOTE_ADDR``). Keepalive pings are off unless ``ping_interval`` is set.
        ``receive_timeout``: how long ``receive()`` waits by default on this
        connection (the client's unless given; None: for ever).
        """
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        scheme = "wss" if self.secure else "ws"
        uri = parse_uri(f"{scheme}://{self._netloc()}{path}")
        all_headers = self.headers + header_list(headers)
        cookie_values = [
            value
            for value in (
                self._cookie_header(self.cookies, uri.resource.partition("?")[0]),
                self._cookie_header(cookies, uri.resource.partition("?")[0]),
            )
            if value
        ]
        if cookie_values:
            all_headers.append(("Cookie", "; ".join(cookie_values)))
        deflate = DeflateOptions() if compression == "deflate" else compression
        handshake = ClientHandshake(
            uri,
            subprotocols=subprotocols,
            headers=all_headers,
            origin=origin,
            compression=deflate if isinstance(deflate, DeflateOptions) else None,
        )
        green = self._green()
        if green:
            from gevent import socket as gsocket

            client_sock, server_sock = gsocket.socketpair()
        else:
            client_sock, server_sock = socket.socketpair()
        base = {
            "SERVER_NAME": self.host,
            "SERVER_PORT": str(self.port),
            "SERVER_SOFTWARE": "wsgiws.testing",
            "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_PORT": "50000",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https" if self.secure else "http",
            "wsgi.multithread": not green,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            **(environ or {}),
        }
        server = _InProcessServer(self.app, server_sock, base, green)
        try:
            result = open_handshake(client_sock, handshake, time.monotonic() + self.timeout)
            client_sock.settimeout(None)
        except HandshakeRejected as exc:
            client_sock.close()
            server.join(self.timeout)
            if server.error is not None:
                raise server.error from exc
            raise
        except BaseException:
            client_sock.close()
            raise
        ws = client_websocket(
            client_sock,
            result,
            uri,
            TestWebSocket,
            max_message_size=max_message_size,
            close_timeout=close_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
        )
        ws._server = server
        ws.receive_timeout = self.receive_timeout if receive_timeout is ... else receive_timeout
        return ws
