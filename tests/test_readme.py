"""The README's examples run as written."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

from wsgiws.testing import TestClient

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def module_from(code: str, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(code, f"README:{name}", "exec"), module.__dict__)
    return module


def block(marker: str) -> str:
    return next(code for code in BLOCKS if marker in code)


def test_plain_wsgi_quick_start() -> None:
    app = module_from(block("def http_app"), "readme_plain").app
    with TestClient(app).websocket_connect("/echo") as ws:
        ws.send("hi")
        assert ws.receive() == "hi"


def test_bottle_quick_start() -> None:
    app = module_from(block("import bottle"), "readme_bottle").app
    with TestClient(app).websocket_connect("/echo") as ws:
        ws.send(b"\x01")
        assert ws.receive() == b"\x01"


def test_flask_quick_start_and_its_tests() -> None:
    module_from(block("sockets = WebSockets(app)"), "app")  # the tests import it as `app`
    try:
        tests = module_from(block("def test_chat_after_login"), "readme_tests")
        tests.test_chat_requires_login()
        tests.test_chat_after_login()
    finally:
        sys.modules.pop("app", None)
