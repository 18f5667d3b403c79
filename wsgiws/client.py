"""A WebSocket client: :func:`connect` to a ``ws://`` or ``wss://`` URI.

>>> from wsgiws.client import connect
>>> with connect("ws://127.0.0.1:8000/echo") as ws:
...     ws.send("hello")
...     print(ws.receive())

It returns the same :class:`~wsgiws.websocket.WebSocket` that server handlers
get (in the client role): ``receive``, iteration, ``send``, ``send_stream``,
``ping``, ``close``. It is green under gevent (when the calling thread runs a
gevent hub or the socket module is monkey-patched, it uses gevent sockets, so
thousands of clients can share one process) and uses plain blocking sockets in
ordinary threads otherwise.
"""

from __future__ import annotations

import base64
import socket
import ssl
import sys
import time
from collections.abc import Sequence
from typing import Any, Literal, TypeVar
from urllib.parse import unquote, urlsplit

from .client_handshake import (
    USER_AGENT,
    ClientHandshake,
    HandshakeResult,
    HeadersLike,
    WebSocketURI,
    parse_uri,
)
from .deflate import DeflateOptions
from .exceptions import InvalidHandshake, InvalidURI
from .http import HeadError, HeadReader, parse_response_head
from .protocol import Role
from .websocket import WebSocket

__all__ = ["ClientWebSocket", "client_websocket", "connect", "open_handshake", "use_gevent"]

W = TypeVar("W", bound="ClientWebSocket")

_READ_SIZE = 65536


class ClientWebSocket(WebSocket):
    """The :class:`WebSocket` :func:`connect` returns, with what the handshake said."""

    #: The URI this connection was opened to.
    uri: WebSocketURI | None = None
    #: The server's ``101`` response: ``status``, ``reason``, ``headers``.
    response: HandshakeResult | None = None

    @property
    def response_headers(self) -> list[tuple[str, str]]:
        """The headers of the server's ``101`` response, in order."""
        return list(self.response.headers) if self.response is not None else []

    def _path(self) -> str:
        return str(self.uri) if self.uri is not None else "(client)"

    @property
    def path(self) -> str:
        """The resource (path and query) requested."""
        return self.uri.resource if self.uri is not None else ""


def use_gevent() -> bool:
    """Should a new client socket be a gevent socket here?

    Yes when ``socket`` is monkey-patched or the calling thread has a gevent hub
    (it runs greenlets); no in plain threads, where gevent was never used.
    """
    if "gevent" not in sys.modules:
        return False
    try:
        from gevent import monkey
        from gevent._hub_local import get_hub_if_exists
    except ImportError:  # pragma: no cover - gevent is a dependency
        return False
    if monkey.is_module_patched("socket"):
        return True
    return get_hub_if_exists() is not None


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out opening the WebSocket connection")
    return left


def _create_connection(host: str, port: int, green: bool, deadline: float | None) -> socket.socket:
    if green:
        from gevent import socket as gsocket

        sock: socket.socket = gsocket.create_connection((host, port), timeout=_remaining(deadline))
    else:
        sock = socket.create_connection((host, port), timeout=_remaining(deadline))
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # pragma: no cover - not TCP (a test double)
        pass
    return sock


def _wrap_tls(
    sock: socket.socket,
    context: ssl.SSLContext | None,
    hostname: str,
    green: bool,
    deadline: float | None,
) -> socket.socket:
    sock.settimeout(_remaining(deadline))
    if green:
        import gevent.ssl

        if context is None:
            context = gevent.ssl.create_default_context()
        if isinstance(context, gevent.ssl.SSLContext):
            wrapped: socket.socket = context.wrap_socket(sock, server_hostname=hostname)
            return wrapped
        # A standard SSLContext would make a blocking SSL socket: let gevent's wrap it.
        return gevent.ssl.SSLSocket(sock=sock, server_hostname=hostname, _context=context)  # type: ignore[no-any-return]
    if context is None:
        context = ssl.create_default_context()
    return context.wrap_socket(sock, server_hostname=hostname)


def _proxy_tunnel(
    proxy: str, target: WebSocketURI, green: bool, deadline: float | None
) -> socket.socket:
    """A TCP connection to ``target`` through an HTTP proxy (``CONNECT``)."""
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if parts.scheme != "http" or not parts.hostname:
        raise InvalidURI(f"unsupported proxy {proxy!r} (only http://host:port proxies)")
    sock = _create_connection(parts.hostname, parts.port or 8080, green, deadline)
    try:
        host = f"[{target.host}]" if ":" in target.host else target.host
        authority = f"{host}:{target.port}"
        lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            token = base64.b64encode(credentials.encode()).decode("ascii")
            lines.append(f"Proxy-Authorization: Basic {token}")
        sock.settimeout(_remaining(deadline))
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        reader = HeadReader()
        head = None
        while head is None:
            sock.settimeout(_remaining(deadline))
            chunk = sock.recv(4096)
            if not chunk:
                raise InvalidHandshake("the proxy closed the connection")
            try:
                head = reader.feed(chunk)
                response = parse_response_head(head) if head is not None else None
            except HeadError as exc:
                raise InvalidHandshake(f"bad proxy response: {exc}") from None
        assert response is not None
        if not 200 <= response.status < 300:
            raise InvalidHandshake(
                f"proxy refused CONNECT: {response.status} {response.reason}".rstrip()
            )
        return sock
    except BaseException:
        sock.close()
        raise


def open_handshake(
    sock: socket.socket, handshake: ClientHandshake, deadline: float | None
) -> HandshakeResult:
    """Send the upgrade request on a connected socket and read and validate the answer.

    Raises :class:`InvalidHandshake`, :class:`HandshakeRejected` (non-101) or
    ``TimeoutError`` once ``deadline`` (a ``time.monotonic()`` value) passes.
    """
    try:
        sock.settimeout(_remaining(deadline))
        sock.sendall(handshake.request())
        while True:
            sock.settimeout(_remaining(deadline))
            try:
                data = sock.recv(_READ_SIZE)
            except ConnectionResetError:
                data = b""  # a refusal may be followed by a reset; what came is what we have
            if not data:
                handshake.receive_eof()
                break
            if handshake.receive_data(data):
                break
    except TimeoutError:
        raise TimeoutError("timed out during the WebSocket opening handshake") from None
    return handshake.result()


def connect(
    uri: str,
    *,
    subprotocols: Sequence[str] | None = None,
    headers: HeadersLike | None = None,
    origin: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    open_timeout: float | None = 10.0,
    close_timeout: float = 10.0,
    max_message_size: int | None = 1 << 20,
    max_fragments: int | None = None,
    compression: Literal["deflate"] | DeflateOptions | None = "deflate",
    ping_interval: float | None = 20.0,
    ping_timeout: float | None = 20.0,
    proxy: str | None = None,
    user_agent: str | None = USER_AGENT,
    sock: socket.socket | None = None,
) -> ClientWebSocket:
    """Open a WebSocket connection to ``uri`` (``ws://`` or ``wss://``).

    ``subprotocols``: offered in order of preference; the chosen one is
    ``ws.subprotocol``. ``headers``: extra request headers (a mapping or
    ``(name, value)`` pairs; ``Host``, ``User-Agent`` and ``Authorization`` may
    be overridden, the WebSocket headers may not). ``origin``: the ``Origin``
    header. ``ssl_context``: for ``wss://`` (default: system CAs, hostname
    checked). ``open_timeout``: bounds TCP connect, TLS and the HTTP handshake.
    ``close_timeout``: how long closing waits for the server's close frame, then
    for the server to end TCP. ``max_message_size``: larger incoming messages
    fail the connection with 1009 (None: no limit). ``compression``:
    ``"deflate"`` offers permessage-deflate with defaults, a
    :class:`~wsgiws.deflate.DeflateOptions` tunes it, None offers nothing.
    ``ping_interval``/``ping_timeout``: keepalive (None disables).
    ``proxy``: an ``http://[user:pass@]host:port`` proxy to tunnel through with
    ``CONNECT``. ``sock``: an already connected socket to use instead of
    connecting (TLS is still applied for ``wss://``).

    Raises :class:`~wsgiws.exceptions.InvalidURI`, ``OSError`` (DNS, refused
    connection, TLS), ``TimeoutError``,
    :class:`~wsgiws.exceptions.HandshakeRejected` when the server answers with
    another status than 101 (it carries ``status``, ``headers`` and ``body``),
    and :class:`~wsgiws.exceptions.InvalidHandshake` for an invalid 101.
    """
    target = parse_uri(uri)
    deflate: DeflateOptions | None
    if compression == "deflate":
        deflate = DeflateOptions()
    elif compression is None or isinstance(compression, DeflateOptions):
        deflate = compression
    else:
        raise ValueError(f"unsupported compression {compression!r}")
    handshake = ClientHandshake(
        target,
        subprotocols=subprotocols,
        headers=headers,
        origin=origin,
        compression=deflate,
        user_agent=user_agent,
    )
    deadline = None if open_timeout is None else time.monotonic() + open_timeout
    green = use_gevent()
    if sock is None:
        if proxy is not None:
            sock = _proxy_tunnel(proxy, target, green, deadline)
        else:
            sock = _create_connection(target.host, target.port, green, deadline)
    try:
        if target.secure:
            sock = _wrap_tls(sock, ssl_context, server_hostname or target.host, green, deadline)
        result = open_handshake(sock, handshake, deadline)
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return client_websocket(
        sock,
        result,
        target,
        ClientWebSocket,
        max_message_size=max_message_size,
        max_fragments=max_fragments,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        close_timeout=close_timeout,
    )


def client_websocket(
    sock: socket.socket,
    result: HandshakeResult,
    target: WebSocketURI,
    cls: type[W],
    **options: Any,
) -> W:
    """The client-side WebSocket (of class ``cls``) over ``sock`` once ``result`` was agreed."""
    ws = cls(
        role=Role.CLIENT,
        subprotocol=result.subprotocol,
        extension=result.extension,
        sock=sock,
        leftover=result.leftover,
        **options,
    )
    ws.uri = target
    ws.response = result
    return ws
