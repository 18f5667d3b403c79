"""End to end: the chat example under gunicorn (2 workers + Redis) driven by two pages
of a real headless Chromium, over the Chrome DevTools Protocol."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests import redis_server
from tests.browser import chromium
from tests.conftest import require_binary
from tests.servers import ROOT, Server, serve, server_command, wait_for_port
from wsgiws.hub import Hub

pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager")


class Page:
    """One browser tab, driven through its DevTools WebSocket."""

    def __init__(self, debugger_url: str) -> None:
        self.ws: ClientConnection = connect(debugger_url, max_size=None, open_timeout=10)
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=10))
            if reply.get("id") == call_id:
                if "error" in reply:
                    raise RuntimeError(reply["error"])
                return dict(reply["result"])

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.05)
        state = self.js(
            "document.getElementById('status').textContent + ' / '"
            " + document.getElementById('log').textContent"
        )
        raise AssertionError(f"timed out waiting for {expression} ({state})")

    def open(self, url: str) -> None:
        self.call("Page.enable")
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && !!document.getElementById('say')")

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def browser() -> Iterator[int]:
    """A headless Chromium; yields its DevTools port."""
    with chromium() as port:
        yield port


@pytest.fixture
def chat_server() -> Iterator[Server]:
    require_binary("redis-server")
    with redis_server.redis_server() as redis:
        env = {"WSGIWS_REDIS_URL": redis.url}
        with serve("gunicorn-gevent", "examples.chat.app:app", ["-w", "2"], env=env) as server:
            yield server


def new_page(devtools_port: int) -> Page:
    request = urllib.request.Request(f"http://127.0.0.1:{devtools_port}/json/new", method="PUT")
    with urllib.request.urlopen(request, timeout=10) as response:
        target = json.load(response)
    return Page(target["webSocketDebuggerUrl"])


def join(page: Page, url: str, name: str, room: str) -> int:
    """Open the chat, join ``room`` as ``name``; returns the worker pid the page reached."""
    page.open(url)
    page.js(
        f"document.getElementById('name').value = {json.dumps(name)};"
        f"document.getElementById('room').value = {json.dumps(room)};"
        "document.getElementById('join').click();"
    )
    status = page.wait_for(
        "document.getElementById('status').textContent.includes('worker') &&"
        " document.getElementById('status').textContent"
    )
    page.wait_for(f"document.getElementById('log').textContent.includes({json.dumps(name)})")
    return int(str(status).rsplit(" ", 1)[-1].rstrip(")"))


def say(page: Page, text: str) -> None:
    page.js(
        f"document.getElementById('text').value = {json.dumps(text)};"
        "document.getElementById('say').requestSubmit();"
    )


def log_of(page: Page) -> list[str]:
    return list(
        page.js("[...document.querySelectorAll('#log div')].map((d) => d.textContent)") or []
    )


def test_two_browser_pages_chat_through_two_workers(browser: int, chat_server: Server) -> None:
    url = chat_server.http_url + "/"
    alice, bob = new_page(browser), new_page(browser)
    try:
        alice_pid = join(alice, url, "alice", "lobby")
        for _ in range(8):  # try to put bob on the other worker, so Redis carries the messages
            bob_pid = join(bob, url, "bob", "lobby")
            if bob_pid != alice_pid:
                break
        alice.wait_for("document.getElementById('log').textContent.includes('bob joined')")
        say(alice, "hello bob")
        bob.wait_for("document.getElementById('log').textContent.includes('alice: hello bob')")
        say(bob, "hi alice")
        alice.wait_for("document.getElementById('log').textContent.includes('bob: hi alice')")
        time.sleep(0.3)  # anything duplicated would have arrived by now
        for page in (alice, bob):
            lines = log_of(page)
            assert lines.count("[lobby] alice: hello bob") == 1
            assert lines.count("[lobby] bob: hi alice") == 1
        # An announcement from a plain HTTP request reaches both pages.
        data = b"text=maintenance+at+noon"
        with urllib.request.urlopen(chat_server.http_url + "/rooms/lobby", data=data) as reply:
            assert reply.status == 204
        for page in (alice, bob):
            page.wait_for(
                "document.getElementById('log').textContent.includes('maintenance at noon')"
            )
    finally:
        alice.close()
        bob.close()


def restart(server: Server, env: dict[str, str]) -> None:
    """Stop the gunicorn instance and start it again on the same port (a deploy)."""
    server.stop()
    command = server_command("gunicorn-gevent", "examples.chat.app:app", server.port, ["-w", "2"])
    with open(server.log_path, "ab") as log:
        server.process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        )
    wait_for_port(server.port, server.process, server.log_path)


def worker_of(page: Page) -> int:
    status = str(page.wait_for("/worker \\d+/.test(document.getElementById('status').textContent)"
                               " && document.getElementById('status').textContent"))  # fmt: skip
    return int(status.rsplit(" ", 1)[-1].rstrip(")"))


def test_a_page_cut_off_in_every_way_shows_every_message_once_in_order(browser: int) -> None:
    """Worker SIGKILL, server restart, Redis restart (with persistence): the page
    reconnects (backoff and jitter) with its last position and misses nothing."""
    require_binary("redis-server")
    with redis_server.redis_server(persistent=True) as redis:
        env = {"WSGIWS_REDIS_URL": redis.url}
        with serve("gunicorn-gevent", "examples.chat.app:app", ["-w", "2"], env=env) as server:
            publisher = Hub.from_url(redis.url)
            page = new_page(browser)
            sent: list[str] = []

            def publish(count: int) -> None:
                for _ in range(count):
                    text = f"n{len(sent)}"
                    publisher.send(
                        "lobby", json.dumps({"room": "lobby", "name": None, "text": text})
                    )
                    sent.append(text)
                    time.sleep(0.01)

            def seen() -> str:
                return f"document.getElementById('log').textContent.includes('{sent[-1]}')"

            try:
                join(page, server.http_url + "/", "carol", "lobby")
                publish(10)
                page.wait_for(seen())
                os.kill(worker_of(page), signal.SIGKILL)  # the page's worker dies
                publish(10)
                page.wait_for(seen(), timeout=20)
                restart(server, env)  # a deploy: the page is cut off meanwhile
                publish(10)
                page.wait_for(seen(), timeout=20)
                redis.stop()  # messages published meanwhile wait in the publisher
                publish(10)
                redis.start()
                publish(10)
                page.wait_for(seen(), timeout=30)
                time.sleep(0.5)  # a duplicate would have arrived by now
                lines = [line for line in log_of(page) if line.startswith("[lobby] n")]
                assert lines == [f"[lobby] {text}" for text in sent]
                assert int(page.js("feed.connections")) >= 3
            finally:
                page.close()
                publisher.close()
