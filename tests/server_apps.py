"""WSGI apps for the server, drain, TLS and proxy tests (run inside real server processes)."""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from examples.echo import app as echo_app
from examples.echo import index as echo_index
from wsgiws import WebSocket, WebSocketMiddleware, drain

BROWSER_PAGE = b"""<!doctype html><html><head><link rel="icon" href="data:,"></head>
<body><pre id="out"></pre><script>
const out = (t) => { document.getElementById("out").textContent += t + "\\n"; };
const ws = new WebSocket("ws://" + location.host + "/echo");
ws.onopen = () => { out("open"); ws.send("hello from the browser"); };
ws.onmessage = (e) => { out("echo: " + e.data); ws.close(1000, "bye"); };
ws.onerror = () => out("error");
ws.onclose = (e) => out("closed " + e.code + " clean=" + e.wasClean);
</script></body></html>"""


def index(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """examples/echo.py's page, plus /browser: a page that reports an echo round trip."""
    if environ.get("PATH_INFO") == "/browser":
        start_response(
            "200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(BROWSER_PAGE)))]
        )
        return [BROWSER_PAGE]
    return echo_index(environ, start_response)


# examples/echo.py's endpoints, plus the ones below.
app = WebSocketMiddleware(index, max_message_size=16 << 20)
app.routes.update(echo_app.routes)


@app.route("/bye")
def bye(ws: WebSocket) -> None:
    """The server closes: 4000 with a reason, after echoing one message."""
    ws.send(ws.receive())
    ws.close(4000, "done here")


@app.route("/burst")
def burst(ws: WebSocket) -> None:
    """On "<senders> <count> <size>": that many threads (greenlets under gevent's
    patching) send ``count`` messages of ``size`` bytes each, concurrently."""
    senders, count, size = (int(x) for x in str(ws.receive()).split())

    def send(sender: int) -> None:
        for i in range(count):
            head = f"{sender}:{i}:".encode()
            ws.send(head + b"x" * (size - len(head)))

    threads = [threading.Thread(target=send, args=(s,)) for s in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ws.send("done")
    for _ in ws:
        pass


@app.route("/origin")
def origin(ws: WebSocket) -> None:
    ws.send(f"{ws.environ.get('wsgi.url_scheme')} {ws.environ.get('HTTP_HOST')}")
    for _ in ws:
        pass


@drain.on_drain
def announce() -> None:
    """Handlers learn of the drain: every client hears "draining" before its 1001."""
    for ws in drain.open_websockets():
        try:
            ws.send("draining")
        except Exception:
            pass


def plain(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def bottle_without_middleware() -> Any:
    """The Bottle quick start's app, served without WebSocketMiddleware (a common slip)."""
    import bottle

    from wsgiws.bottle import websocket

    bottle_app = bottle.Bottle()

    @bottle_app.route("/echo")
    @websocket
    def echo(ws: WebSocket) -> None:
        for message in ws:
            ws.send(message)

    return bottle_app


bottle_unwrapped = bottle_without_middleware()


# -------------------------------------------- for tests/test_gunicorn_detach.py


@app.route("/refuse")
def refuse(ws: WebSocket) -> None:
    """Refuses with HTTP before accepting (403)."""
    from wsgiws.handshake import Reject

    raise Reject(403, "not for you")


@app.route("/fail-before-accepting")
def fail_before_accepting(ws: WebSocket) -> None:
    raise RuntimeError("the handler failed before accepting")


@app.route("/context")
def context(ws: WebSocket) -> None:
    """Sends what the outer app (:data:`outer`) put in a contextvar for this request."""
    ws.send(REQUEST_TAG.get("(unset)"))
    for _ in ws:
        pass


REQUEST_TAG: contextvars.ContextVar[str] = contextvars.ContextVar("request_tag")


def outer(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """An app around the middleware (as a tracing middleware is); with ``/live`` it counts
    the objects of gunicorn's requests still alive (the gc's view, after a collection),
    with ``/fds`` the worker's open file descriptors."""
    if environ.get("PATH_INFO") == "/live":
        import gc

        from gunicorn.http.message import Request

        gc.collect()
        body = str(sum(isinstance(o, Request) for o in gc.get_objects())).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    if environ.get("PATH_INFO") == "/fds":  # the worker's open file descriptors (no gc run)
        body = str(len(os.listdir("/proc/self/fd"))).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    REQUEST_TAG.set(environ.get("QUERY_STRING", ""))
    return app(environ, start_response)
