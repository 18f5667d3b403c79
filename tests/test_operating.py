"""Limits, connection logs and metrics under real servers (docs/operating.md)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.conftest import SERVER_KINDS
from tests.servers import ROOT, Server, free_port, serve, wait_for_port
from tests.wire import RawClient
from wsgiws.limits import RateLimit, TokenBucket, client_address


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    with serve(request.param, "tests.ops_app:app") as srv:
        yield srv


def wait_for_log(server: Server, pattern: str, timeout: float = 10.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(pattern, server.log())
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{pattern!r} not in log:\n{server.log()}")
        time.sleep(0.05)


def numbers(server: Server) -> dict[str, Any]:
    with urllib.request.urlopen(server.http_url + "/metrics.json", timeout=5) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def settled(server: Server) -> dict[str, Any]:
    """The numbers once every connection has closed (at most 10 s later)."""
    deadline = time.monotonic() + 10
    while (now := numbers(server))["open_connections"] and time.monotonic() < deadline:
        time.sleep(0.05)
    return now


def refusal(url: str, **kwargs: Any) -> tuple[int, dict[str, str]]:
    with pytest.raises(InvalidStatus) as info:
        connect(url, **kwargs)
    response = info.value.response
    return response.status_code, {k.lower(): v for k, v in response.headers.raw_items()}


def admitted(url: str, **kwargs: Any) -> ClientConnection:
    """Connect, waiting out 503s left by connections of earlier tests still ending."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return connect(url, **kwargs)
        except InvalidStatus as exc:
            if exc.response.status_code != 503 or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def echoed(ws: ClientConnection, message: str | bytes) -> bool:
    ws.send(message)
    return bool(ws.recv(timeout=5) == message)


def closed_with(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            ws.recv(timeout=10)
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


# ------------------------------------------------------------------ limits


def test_max_connections_per_worker_answers_503_with_retry_after(server: Server) -> None:
    with admitted(server.url + "/capped"), admitted(server.url + "/capped") as second:
        status, headers = refusal(server.url + "/capped")
        assert status == 503
        assert headers["retry-after"] == "5"
        wait_for_log(
            server,
            r"INFO ws [0-9a-f]{8} refused 503 GET /capped from 127\.0\.0\.1: "
            r"worker has \d+ WebSockets \(max_connections=2\)",
        )
        with connect(server.url + "/echo") as other:  # the cap is this route's only
            assert echoed(other, "x")
        second.close()
        with admitted(server.url + "/capped") as again:  # a place came free
            assert echoed(again, "y")


def test_max_connections_per_client_uses_the_trusted_forwarded_address(server: Server) -> None:
    url = server.url + "/per-client"
    alice = {"X-Forwarded-For": "203.0.113.7"}
    with admitted(url, additional_headers=alice):
        status, headers = refusal(url, additional_headers=alice)
        assert (status, headers["retry-after"]) == (429, "5")
        wait_for_log(
            server,
            r"ws [0-9a-f]{8} refused 429 GET /per-client from 203\.0\.113\.7 via 127\.0\.0\.1: "
            r"203\.0\.113\.7 has 1 WebSockets",
        )
        # Another client behind the same proxy is not held back by alice.
        with admitted(url, additional_headers={"X-Forwarded-For": "203.0.113.8"}):
            pass
        # What alice writes left of what the proxy appended is not believed.
        spoofed = {"X-Forwarded-For": "203.0.113.9, 203.0.113.7"}
        assert refusal(url, additional_headers=spoofed)[0] == 429


def test_forwarded_address_is_ignored_from_an_untrusted_peer(server: Server) -> None:
    url = server.url + "/per-peer"
    with admitted(url, additional_headers={"X-Forwarded-For": "203.0.113.7"}):
        status, _ = refusal(url, additional_headers={"X-Forwarded-For": "203.0.113.8"})
        assert status == 429
    wait_for_log(server, r"refused 429 GET /per-peer from 127\.0\.0\.1: 127\.0\.0\.1 has 1")


def test_upgrade_request_headers_are_capped_with_431(server: Server) -> None:
    client = RawClient(server.port, "/small-headers", headers={"X-Padding": "p" * 2000})
    assert client.status == 431
    client.close()
    wait_for_log(
        server, r"refused 431 GET /small-headers from 127\.0\.0\.1: upgrade request headers too"
    )
    with connect(server.url + "/small-headers") as ws:  # an ordinary request fits
        assert echoed(ws, "ok")


def test_message_rate_closes_with_1008(server: Server) -> None:
    with connect(server.url + "/message-rate") as ws:
        for n in range(3):  # the burst
            assert echoed(ws, str(n))
        ws.send("one too many")
        assert closed_with(ws) == (1008, "message rate exceeded")
    wait_for_log(server, r"INFO ws [0-9a-f]{8} closing with 1008: message_rate exceeded")
    wait_for_log(server, r"closed 1008 'message rate exceeded' by local after [\d.]+ s; in 3 msg")


def test_byte_rate_closes_with_1008(server: Server) -> None:
    with connect(server.url + "/byte-rate") as ws:
        assert echoed(ws, b"12345678")
        ws.send(b"12345678")  # 2 bytes left in the bucket
        assert closed_with(ws) == (1008, "byte rate exceeded")
    wait_for_log(server, r"closing with 1008: byte_rate exceeded")


def test_rate_limit_can_drop_with_a_warning(server: Server) -> None:
    with connect(server.url + "/drop") as ws:
        for text in "abcd":
            ws.send(text)
        assert [ws.recv(timeout=5), ws.recv(timeout=5)] == ["a", "b"]
    found = wait_for_log(
        server,
        r"WARNING ws ([0-9a-f]{8}) dropping messages: message_rate exceeded \(1 dropped so far\)",
    )
    conn_id = found.group(1)
    # one warning for both drops; the close line counts them
    wait_for_log(server, rf"ws {conn_id} closed 1000 '' by remote .*; in 2 msg 2 B, 2 dropped")
    assert server.log().count(f"ws {conn_id} dropping") == 1


def test_idle_timeout_closes_with_1000(server: Server) -> None:
    with connect(server.url + "/idle") as ws:
        assert closed_with(ws) == (1000, "idle timeout")
    wait_for_log(server, r"INFO ws [0-9a-f]{8} closing: no message for 0\.3 s \(idle_timeout\)")


def test_session_check_closes_with_1008_after_logout(server: Server) -> None:
    with connect(server.url + "/session") as ws:
        assert echoed(ws, "still here")
        assert echoed(ws, "logout")
        assert closed_with(ws) == (1008, "session expired")
    wait_for_log(server, r"ws [0-9a-f]{8} closing with 1008: session expired \(session check\)")


# -------------------------------------------------------------------- logs


def test_connection_log_lines_carry_the_id_and_never_contents_or_query(server: Server) -> None:
    with connect(server.url + "/echo?token=secret-token") as ws:
        assert echoed(ws, "private message")
        assert echoed(ws, b"\x00" * 300)
    found = wait_for_log(
        server,
        r"INFO ws ([0-9a-f]{8}) closed 1000 '' by remote after [\d.]+ s; "
        r"in 2 msg 315 B, out 2 msg 315 B; GET /echo from 127\.0\.0\.1",
    )
    ours = [line for line in server.log().splitlines() if f"ws {found.group(1)}" in line]
    assert ours  # (the server's own access log prints the query string; that is its business)
    assert not [line for line in ours if "secret-token" in line or "private message" in line]


def test_refused_handshake_is_logged_with_status_and_reason(server: Server) -> None:
    status, _ = refusal(server.url + "/echo", origin="http://evil.example")
    assert status == 403
    wait_for_log(
        server, r"INFO ws [0-9a-f]{8} refused 403 GET /echo from 127\.0\.0\.1: .*evil\.example"
    )


def test_latency_is_the_last_ping_round_trip(server: Server) -> None:
    with connect(server.url + "/latency") as ws:
        report = json.loads(ws.recv(timeout=10))
    assert report["before"] == 0.0
    assert report["answered"] is True
    assert report["after"] > 0.0


# ----------------------------------------------------------------- metrics


def test_metrics_after_a_scripted_set_of_connections() -> None:
    # A server of its own: the numbers are the process's.
    with serve("pywsgi", "tests.ops_app:app") as srv:
        start = numbers(srv)
        assert start["open_connections"] == 0
        assert start["handshakes"] == {}
        with connect(srv.url + "/echo") as ws:
            ws.send("hello")  # 5 bytes each way
            assert ws.recv(timeout=5) == "hello"
            assert numbers(srv)["open_connections"] == 1
        with connect(srv.url + "/echo") as ws:
            assert echoed(ws, b"\x01" * 1000)
            ws.close(4001, "client bye")
        with connect(srv.url + "/close-4000") as ws:
            ws.send("x")
            assert closed_with(ws) == (4000, "server says bye")
        refusal(srv.url + "/echo", origin="http://evil.example")
        now = settled(srv)
        assert now["open_connections"] == 0
        assert now["handshakes"] == {"101": 3, "403": 1}
        assert now["closes"] == {"1000/remote": 1, "4001/remote": 1, "4000/local": 1}
        assert now["messages_in"] == 3
        assert now["bytes_in"] == 5 + 1000 + 1
        assert now["messages_out"] == 2
        assert now["bytes_out"] == 5 + 1000


def test_messages_a_limit_dropped_are_not_counted_as_received() -> None:
    # The engine counts every message in; the totals leave out what never reached the
    # application, while the connection is open and after it closed.
    with serve("pywsgi", "tests.ops_app:app") as srv:
        with connect(srv.url + "/drop") as ws:
            for message in ("aa", "bb", "cc", "dd", "eee"):
                ws.send(message)
            assert [ws.recv(timeout=5), ws.recv(timeout=5)] == ["aa", "bb"]  # burst 2
            deadline = time.monotonic() + 10
            while (now := numbers(srv))["limited"].get("message_rate", 0) < 3:
                assert time.monotonic() < deadline, now
                time.sleep(0.05)
            assert (now["messages_in"], now["bytes_in"]) == (2, 4)
        now = settled(srv)
        assert now["open_connections"] == 0
        assert (now["messages_in"], now["bytes_in"]) == (2, 4)
        assert (now["messages_out"], now["bytes_out"]) == (2, 4)


# -------------------------------------------------------------- unit pieces


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(RateLimit(rate=2, burst=4))
    start = bucket.stamp
    assert all(bucket.take(1, start) for _ in range(4))
    assert not bucket.take(1, start)
    assert bucket.take(1, start + 0.5)  # 0.5 s at 2/s is one token
    assert not bucket.take(1, start + 0.5)
    # An amount larger than the bucket passes only when it is full, leaving a debt.
    assert not bucket.take(10, start + 1.0)
    assert bucket.take(10, start + 10.0)
    assert not bucket.take(1, start + 10.0)


def test_client_address_trusts_only_listed_proxies() -> None:
    environ = {"REMOTE_ADDR": "10.1.2.3", "HTTP_X_FORWARDED_FOR": "198.51.100.1, 203.0.113.7"}
    assert client_address(environ) == "10.1.2.3"
    assert client_address(environ, ["10.0.0.0/8"]) == "203.0.113.7"
    assert client_address(environ, ["10.0.0.0/8", "203.0.113.7"]) == "198.51.100.1"
    assert client_address(environ, ["192.168.0.0/16"]) == "10.1.2.3"
    assert client_address({"REMOTE_ADDR": "10.1.2.3"}, ["10.0.0.0/8"]) == "10.1.2.3"
    with pytest.raises(ValueError):
        RateLimit(rate=0, burst=1)


# ------------------------------------------------------------- Prometheus


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(server.http_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape_until(
    server: Server, wanted: dict[tuple[str, tuple[tuple[str, str], ...]], float]
) -> None:
    """Scrape until every wanted sample has its value (the workers copy theirs each second)."""
    deadline = time.monotonic() + 20
    while True:
        samples = scrape(server)
        if all(samples.get(key) == value for key, value in wanted.items()):
            return
        if time.monotonic() > deadline:
            missing = {key: (value, samples.get(key)) for key, value in wanted.items()}
            raise AssertionError(f"(wanted, scraped): {missing}")
        time.sleep(0.1)


def test_prometheus_exporter_adds_up_two_gunicorn_workers(tmp_path: Any) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    args = ["-w", "2", "-c", "python:tests.ops_gunicorn"]
    with (
        serve("gunicorn-gevent", "tests.ops_app:app", args=args, env=env) as srv,
        ExitStack() as stack,
    ):
        pids: set[str] = set()
        sockets = []
        while len(pids) < 2:  # connections until both workers hold some
            assert len(sockets) < 500, "every connection went to one worker"
            ws = stack.enter_context(connect(srv.url + "/pid"))
            pids.add(str(ws.recv(timeout=5)))
            sockets.append(ws)
        for ws in sockets:
            assert echoed(ws, "hello")
        opened = len(sockets)
        scrape_until(srv, {("wsgiws_open_connections", ()): opened})
        for ws in sockets:
            ws.close()
        scrape_until(
            srv,
            {
                ("wsgiws_open_connections", ()): 0,
                ("wsgiws_handshakes_total", (("status", "101"),)): opened,
                ("wsgiws_messages_total", (("direction", "in"),)): opened,
                ("wsgiws_messages_total", (("direction", "out"),)): 2 * opened,  # pid + echo
                ("wsgiws_payload_bytes_total", (("direction", "in"),)): 5 * opened,
                ("wsgiws_closes_total", (("code", "1000"), ("initiator", "remote"))): opened,
            },
        )


# ------------------------------------------------------- handshake timeout


@pytest.fixture
def pywsgi_with_timeout(tmp_path: Any) -> Iterator[Server]:
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.ops_pywsgi", str(port)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server("pywsgi", port, process, log)
    try:
        wait_for_port(port, process, log)
        yield server
    finally:
        server.stop()


def test_pywsgi_handshake_timeout_answers_408(pywsgi_with_timeout: Server) -> None:
    server = pywsgi_with_timeout
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow:
        slow.sendall(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        answer = b""
        while chunk := slow.recv(4096):  # the server ends the connection
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    wait_for_log(server, r"request head from 127\.0\.0\.1 not complete after 0\.5 s")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as silent:
        assert silent.recv(4096) == b""  # never a byte: closed without an answer
    # A WebSocket outlives the bound: it only covers the request head.
    with connect(server.url + "/echo") as ws:
        assert echoed(ws, "one")
        time.sleep(1.0)  # twice the bound, to show it is no longer armed
        assert echoed(ws, "two")
