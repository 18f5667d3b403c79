"""Metrics, the single-process Prometheus collector and the DEBUG log lines, in-process."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from wsgiws import WebSocket, WebSocketMiddleware, metrics
from wsgiws.hub import Hub
from wsgiws.testing import TestClient

hub = Hub()
app = WebSocketMiddleware()


@app.route("/echo")
def echo(ws: WebSocket) -> None:
    for message in ws:
        ws.send(message)


@app.route("/room")
def room(ws: WebSocket) -> None:
    hub.join(ws, "lobby")
    for message in ws:
        hub.send("lobby", message)


def settle(condition: Any) -> None:
    """Wait until the server side of the test client has counted what the test did."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, metrics.snapshot()
        time.sleep(0.01)


def test_single_process_prometheus_reads_the_numbers_at_scrape_time() -> None:
    from wsgiws.prometheus import metrics_app

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        body = b"".join(metrics_app({}, lambda status, headers: None))
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }

    before = scrape()
    with TestClient(app).websocket_connect("/echo") as ws:
        ws.send("abc")
        assert ws.receive() == "abc"
        during = scrape()
    settle(lambda: metrics.snapshot()["open_connections"] == 0)
    after = scrape()
    key_in = ("wsgiws_messages_total", (("direction", "in"),))
    key_bytes = ("wsgiws_payload_bytes_total", (("direction", "out"),))
    opened = ("wsgiws_handshakes_total", (("status", "101"),))
    assert during[("wsgiws_open_connections", ())] == before[("wsgiws_open_connections", ())] + 1
    assert after[key_in] == before.get(key_in, 0) + 1
    assert after[key_bytes] == before.get(key_bytes, 0) + 3
    assert after[opened] == before.get(opened, 0) + 1
    assert ("wsgiws_keepalive_rtt_seconds_count", ()) in after


def test_hub_deliveries_are_counted() -> None:
    start = metrics.snapshot()["hub_deliveries"]
    client = TestClient(app)
    with client.websocket_connect("/room") as a, client.websocket_connect("/room") as b:
        settle(lambda: len(hub.members("lobby")) == 2)
        a.send("hi all")
        assert a.receive() == "hi all"
        assert b.receive() == "hi all"
        # the hub counts a delivery once its write returned, maybe after the client read it
        settle(lambda: metrics.snapshot()["hub_deliveries"] == start + 2)


def test_debug_lines_say_open_and_each_message_without_contents(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="wsgiws")
    with TestClient(app).websocket_connect("/echo?token=hidden", compression="deflate") as ws:
        ws.send("confidential")
        assert ws.receive() == "confidential"
    settle(lambda: "closed 1000" in caplog.text)
    lines = [r for r in caplog.records if r.name == "wsgiws" and hasattr(r, "ws_id")]
    conn_id = lines[0].ws_id  # type: ignore[attr-defined]
    assert all(r.ws_id == conn_id for r in lines)  # type: ignore[attr-defined]
    text = "\n".join(r.getMessage() for r in lines)
    assert (
        f"ws {conn_id} opened GET /echo from 127.0.0.1 subprotocol=- extension=permessage-deflate"
        in text
    )
    assert f"ws {conn_id} received text 12 B" in text
    assert f"ws {conn_id} sent text 12 B" in text
    assert "confidential" not in text
    assert "hidden" not in text


def test_drain_duration_is_measured() -> None:
    from wsgiws import drain
    from wsgiws.exceptions import ConnectionClosedOK

    try:
        with TestClient(app).websocket_connect("/echo") as ws:
            ws.send("x")
            assert ws.receive() == "x"
            assert drain.start() >= 1  # (other tests of this process may have left some)
            with pytest.raises(ConnectionClosedOK) as closed:
                ws.receive()
            assert closed.value.code == 1001
        settle(lambda: metrics.snapshot()["drain_seconds"] is not None)
        assert metrics.snapshot()["drain_seconds"] >= 0.0
    finally:
        drain._reset()


def test_limits_are_set_per_app_and_overridden_per_route() -> None:
    from wsgiws.exceptions import ConnectionClosedError
    from wsgiws.limits import RateLimit

    limited = WebSocketMiddleware(message_rate=RateLimit(rate=0.01, burst=1))
    limited.add_route("/strict", echo)
    limited.add_route("/free", echo, message_rate=None)
    client = TestClient(limited)
    with client.websocket_connect("/strict") as ws:
        ws.send("a")
        assert ws.receive() == "a"
        ws.send("b")
        with pytest.raises(ConnectionClosedError) as closed:
            ws.receive()
        assert (closed.value.code, closed.value.reason) == (1008, "message rate exceeded")
    with client.websocket_connect("/free") as ws:
        for text in "abc":
            ws.send(text)
            assert ws.receive() == text


def test_a_flask_view_refusing_is_logged_with_its_status(caplog: pytest.LogCaptureFixture) -> None:
    from flask import Flask, abort

    from wsgiws.exceptions import HandshakeRejected
    from wsgiws.flask import WebSockets

    flask_app = Flask(__name__)
    sockets = WebSockets(flask_app)

    @sockets.route("/private")
    def private(ws: WebSocket) -> None:
        abort(403)

    caplog.set_level(logging.INFO, logger="wsgiws")
    with pytest.raises(HandshakeRejected) as refused:
        TestClient(flask_app).websocket_connect("/private")
    assert refused.value.status == 403
    assert "refused 403 GET /private from 127.0.0.1: Forbidden" in caplog.text
