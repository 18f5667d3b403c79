"""A real browser (headless Chromium) against the echo example: handshake, deflate, echo."""

from __future__ import annotations

import pytest

from tests.browser import page_text
from tests.conftest import SERVER_KINDS
from tests.servers import serve


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_chromium_negotiates_deflate_and_echoes(kind: str) -> None:
    with serve(kind, "examples.echo:app") as server:
        log = page_text(server.http_url + "/?send=h%C3%A9llo%20browser", "log", "< héllo browser")
        server_log = server.log()
    assert "open (extensions: permessage-deflate" in log
    assert "< héllo browser" in log
    assert "Traceback" not in server_log
