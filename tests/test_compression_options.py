"""permessage-deflate is configurable per app and per route, and can be turned off."""

from __future__ import annotations

from wsgiws import WebSocket, WebSocketMiddleware
from wsgiws.deflate import DeflateOptions
from wsgiws.testing import TestClient

app = WebSocketMiddleware()  # compression on by default


def echo(ws: WebSocket) -> None:
    for message in ws:
        ws.send(message)


app.add_route("/default", echo)
app.add_route("/plain", echo, compression=None)
app.add_route(
    "/lean",
    echo,
    compression=DeflateOptions(server_no_context_takeover=True, client_no_context_takeover=True),
)
no_deflate_app = WebSocketMiddleware(compression=None)
no_deflate_app.add_route("/echo", echo)


def negotiated(target: WebSocketMiddleware, path: str) -> str | None:
    with TestClient(target).websocket_connect(path, compression="deflate") as ws:
        ws.send("payload " * 100)
        assert ws.receive() == "payload " * 100
        return dict((k.lower(), v) for k, v in ws.response_headers).get("sec-websocket-extensions")


def test_default_route_negotiates_deflate() -> None:
    header = negotiated(app, "/default")
    assert header is not None and header.startswith("permessage-deflate")


def test_route_can_turn_it_off() -> None:
    assert negotiated(app, "/plain") is None


def test_route_can_ask_for_no_context_takeover() -> None:
    header = negotiated(app, "/lean")
    assert header is not None
    assert "server_no_context_takeover" in header
    assert "client_no_context_takeover" in header


def test_app_can_turn_it_off() -> None:
    assert negotiated(no_deflate_app, "/echo") is None
