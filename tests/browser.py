"""Drive a real headless Chromium (Debian's ``chromium``) through the DevTools protocol."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from websockets.sync.client import connect

from tests.conftest import require_binary


@contextmanager
def chromium(url: str = "about:blank", timeout: float = 30.0) -> Iterator[int]:
    """A headless Chromium showing ``url``; yields its DevTools port.

    Skips (fails in CI) when Chromium is not installed.
    """
    binary = require_binary("chromium")
    profile = Path(tempfile.mkdtemp(prefix="wsgiws-chromium-"))
    # No speculative connections ("network prediction": preconnects, prefetch): an idle
    # socket opened just in case would hold a one-connection server (gunicorn's sync
    # worker) until its timeout, and the page's WebSocket would wait behind it.
    (profile / "Default").mkdir()
    (profile / "Default" / "Preferences").write_text(
        json.dumps({"net": {"network_prediction_options": 2}})
    )
    process = subprocess.Popen(
        [binary, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-quic", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        port_file = profile / "DevToolsActivePort"
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.05)
        yield int(port_file.read_text().split()[0])
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(profile, ignore_errors=True)


def page_text(
    url: str, element_id: str, until: str, timeout: float = 20.0, devtools_port: int | None = None
) -> str:
    """Open ``url`` and return the text of ``element_id`` once it contains ``until``.

    In a new tab of the Chromium at ``devtools_port`` (see :func:`chromium`), or in a
    Chromium started for this page.
    """
    deadline = time.monotonic() + timeout
    if devtools_port is not None:
        new_tab = urllib.request.Request(
            f"http://127.0.0.1:{devtools_port}/json/new?{url}", method="PUT"
        )
        with urllib.request.urlopen(new_tab, timeout=10) as response:
            target = json.load(response)
        try:
            return _poll_text(target["webSocketDebuggerUrl"], element_id, until, deadline)
        finally:
            close_tab = f"http://127.0.0.1:{devtools_port}/json/close/{target['id']}"
            urllib.request.urlopen(close_tab, timeout=10).close()
    with chromium(url) as port:
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page" and t["url"] == url]
            if pages:
                return _poll_text(pages[0]["webSocketDebuggerUrl"], element_id, until, deadline)
            time.sleep(0.1)
        return ""


def _poll_text(debugger_url: str, element_id: str, until: str, deadline: float) -> str:
    """The page's ``element_id`` text once it contains ``until`` (or at ``deadline``)."""
    with connect(debugger_url, max_size=None) as devtools:
        expression = f"(document.getElementById({element_id!r}) || {{}}).textContent"
        for n in range(10_000):
            devtools.send(
                json.dumps(
                    {"id": n, "method": "Runtime.evaluate", "params": {"expression": expression}}
                )
            )
            while (reply := json.loads(devtools.recv()))["id"] != n:
                pass
            text = str(reply["result"]["result"].get("value") or "")
            if until in text or time.monotonic() > deadline:
                return text
            time.sleep(0.1)
    return ""
