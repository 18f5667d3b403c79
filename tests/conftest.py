from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import Server, serve

#: The servers every integration test of the core runs against.
SERVER_KINDS = ["pywsgi", "gunicorn-gevent"]


@pytest.fixture(scope="module", params=SERVER_KINDS)
def echo_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """examples.echo:app under each real server."""
    with serve(request.param, "examples.echo:app") as server:
        yield server
