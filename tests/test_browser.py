"""A real browser (headless Chromium) against the echo example: handshake, deflate, echo."""

from __future__ import annotations

import html
import subprocess
import tempfile

import pytest

from tests.conftest import SERVER_KINDS, require_binary
from tests.servers import serve

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def page_log(url: str) -> str:
    """Load ``url`` in Chromium, let its scripts run, return the page's log text."""
    chromium = require_binary("chromium")
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
             "--virtual-time-budget=5000", "--dump-dom", url],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
    start = dom.index('<pre id="log">') + len('<pre id="log">')
    return html.unescape(dom[start : dom.index("</pre>", start)])


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_chromium_negotiates_deflate_and_echoes(kind: str) -> None:
    with serve(kind, "examples.echo:app") as server:
        log = page_log(server.http_url + "/?send=héllo%20browser")
        server_log = server.log()
    assert "open (extensions: permessage-deflate" in log
    assert "< héllo browser" in log
    assert "Traceback" not in server_log
