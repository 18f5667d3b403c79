from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import Server, serve

#: The unit suite: the sans-I/O core fed bytes and in-process code, no server process, broker or
#: browser. CI runs it on the oldest and the newest Python we claim (``pytest -m unit``), and the
#: whole suite on the default one.
UNIT_MODULES = {
    "test_client_handshake",
    "test_compression_options",
    "test_connection",
    "test_deflate",
    "test_handshake",
    "test_http",
    "test_middleware",
    "test_operating_inprocess",
    "test_protocol",
    "test_protocol_deflate",
    "test_protocol_fuzz",
    "test_readme",
    "test_runtime",
    "test_testing",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in UNIT_MODULES:
            item.add_marker(pytest.mark.unit)


#: The servers every integration test of the core runs against.
SERVER_KINDS = ["pywsgi", "gunicorn-gevent"]


@pytest.fixture(scope="module", params=SERVER_KINDS)
def echo_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """examples.echo:app under each real server."""
    with serve(request.param, "examples.echo:app") as server:
        yield server


def require_binary(name: str) -> str:
    """The path of an external program a test drives (redis-server, nginx, chromium).

    Missing: skipped on a developer's machine, a failure in CI (``WSGIWS_REQUIRE_ALL=1``,
    set by ``.ci/run``, which installs them).
    """
    import shutil

    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None
    )
    if path is None:
        if os.environ.get("WSGIWS_REQUIRE_ALL"):
            pytest.fail(f"{name} is not installed (.ci/run installs it)")
        pytest.skip(f"{name} is not installed")
    return path


#: npm packages the tests drive, pinned; installed on first use into NODE_PREFIX.
NODE_PACKAGES = {"ws": "8.23.0"}
NODE_PREFIX = Path(os.environ.get("WSGIWS_NODE_PREFIX") or Path.home() / ".cache" / "wsgiws-node")


def require_node_package(name: str) -> Path:
    """The ``node_modules`` folder holding npm package ``name`` (``npm install``-ed once).

    No node or npm, or an install that fails: skipped, or a failure in CI, like
    :func:`require_binary`.
    """
    require_binary("node")
    modules = NODE_PREFIX / "node_modules"
    if not (modules / name / "package.json").exists():
        npm = require_binary("npm")
        spec = f"{name}@{NODE_PACKAGES[name]}"
        done = subprocess.run(
            [npm, "install", "--prefix", str(NODE_PREFIX), "--no-audit", "--no-fund", spec],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            message = f"npm install {spec} failed:\n{done.stderr[-2000:]}"
            if os.environ.get("WSGIWS_REQUIRE_ALL"):
                pytest.fail(message)
            pytest.skip(message)
    return modules
