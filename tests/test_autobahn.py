"""Autobahn|Testsuite (server mode) against examples/echo.py under real servers.

Slow (sections 12-13 take minutes), so marked ``autobahn`` and run by ``.ci/run``
(``pytest -m autobahn``). ``WSGIWS_AUTOBAHN_CASES`` picks the cases (default all).
The suite's scripts live in the repository: ``.ci/autobahn`` (``WSGIWS_AUTOBAHN`` overrides).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.servers import ROOT, serve

pytestmark = pytest.mark.autobahn

AUTOBAHN = Path(os.environ.get("WSGIWS_AUTOBAHN", ROOT / ".ci" / "autobahn"))


def run_suite(url: str, cases: str, exclude: str = "") -> dict[str, object]:
    if not (AUTOBAHN / "run.sh").exists():
        pytest.fail(f"Autobahn|Testsuite not found at {AUTOBAHN} (set WSGIWS_AUTOBAHN)")
    out = Path(tempfile.mkdtemp(prefix="wsgiws-autobahn-"))
    env = {**os.environ, "AB_EXCLUDE": exclude}
    subprocess.run(
        ["bash", str(AUTOBAHN / "run.sh"), url, str(out), cases], check=True, env=env, timeout=3000
    )
    summary: dict[str, object] = json.loads((out / "summary.json").read_text())
    print(summary["line"], f"({int(summary['duration_ms']) / 1000:.0f} s of cases)")  # type: ignore[call-overload]
    return summary


# Sections 12-13 (permessage-deflate) take ~10 minutes; once under gunicorn is enough for CI.
@pytest.mark.parametrize(
    ("kind", "default_exclude"), [("gunicorn-gevent", ""), ("pywsgi", "12.*,13.*")]
)
def test_autobahn_server(kind: str, default_exclude: str) -> None:
    cases = os.environ.get("WSGIWS_AUTOBAHN_CASES", "*")
    exclude = os.environ.get("WSGIWS_AUTOBAHN_EXCLUDE", default_exclude)
    with serve(kind, "examples.echo:app") as server:
        summary = run_suite(server.url + "/echo", cases, exclude)
    assert summary["missing"] == []
    # Every case OK for behaviour and for close behaviour; INFORMATIONAL only where the
    # suite merely informs. No NON-STRICT, no UNCLEAN.
    assert summary["failed"] == {}, summary["failed"]
    assert summary["non_strict"] == {}, summary["non_strict"]
    assert summary["unimplemented"] == {}, summary["unimplemented"]
    assert summary["close_not_ok"] == {}, summary["close_not_ok"]
