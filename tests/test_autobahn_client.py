"""Autobahn|Testsuite in client mode against wsgiws.client (tests/autobahn_client.py).

Slow (sections 12-13 take many minutes), so it only runs when selected:

    pytest -m autobahn tests/test_autobahn_client.py

By default the threads run does every case (sections 1-10 and 12-13: about 15
minutes on 2 cores, 12.x dominating) and the gevent run sections 1-10 (about 30 s).
``AB_CLIENT_CASES`` picks the cases for both (e.g. ``"1.*,2.*"``); ``AB_TOOLS`` points
at the Autobahn tools directory (default: the repository's ``.ci/autobahn``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = Path(os.environ.get("AB_TOOLS", ROOT / ".ci" / "autobahn"))

CORE = "1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*"

pytestmark = pytest.mark.autobahn


@pytest.fixture
def run_client(request: pytest.FixtureRequest) -> Path:
    if "autobahn" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("slow: select with -m autobahn")
    script = TOOLS / "run-client.sh"
    if not script.exists():
        pytest.fail(f"Autobahn tools not found at {TOOLS} (set AB_TOOLS)")
    subprocess.run([str(TOOLS / "setup.sh")], check=True, capture_output=True, timeout=600)
    return script


@pytest.mark.parametrize("runtime", ["threads", "gevent"])
def test_autobahn_client_all_ok(run_client: Path, tmp_path: Path, runtime: str) -> None:
    command = f"{sys.executable} tests/autobahn_client.py {{url}} {{agent}}"
    if runtime == "gevent":
        command += " --gevent"
    # Everything in threads (about 15 minutes, mostly 12.x); the core sections under gevent.
    cases = os.environ.get("AB_CLIENT_CASES") or ("*" if runtime == "threads" else CORE)
    result = subprocess.run(
        [str(run_client), command, str(tmp_path / "report"), cases],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=5400,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    match = re.search(
        r"core OK\+NS\+INFO=(\d+)/(\d+), compression OK\+NS\+INFO=(\d+)/(\d+), failed=(\d+)",
        summary,
    )
    assert match, summary
    core_ok, core, comp_ok, comp, failed = (int(x) for x in match.groups())
    assert (core_ok, comp_ok, failed) == (core, comp, 0), summary
    text = (tmp_path / "report" / "summary.txt").read_text()
    assert "NON-STRICT cases by section: 0" in text, text
    assert "FAILED cases by section: 0" in text, text
