"""Django: WebSocket views in the URLconf of examples/django, in-process and under gunicorn."""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("django")

from tests.servers import ROOT, Server, serve
from tests.wire import RawClient, assert_bye_is_clean

PROJECT = ROOT / "examples" / "django"


def migrate(db: Path) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"],
        cwd=PROJECT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "WSGIWS_DJANGO_DB": str(db)},
        check=True,
    )


def open_db_files(pid: int | str, db: Path) -> int:
    """How many file descriptors process ``pid`` has open on the SQLite file: its connections."""
    count = 0
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            if os.readlink(fd) == str(db):
                count += 1
        except OSError:
            pass  # closed meanwhile
    return count


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


# ----------------------------------------------------------------- in-process


@pytest.fixture(scope="module")
def django_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The example project's WSGI application, set up in this process on a fresh SQLite file."""
    db = tmp_path_factory.mktemp("django") / "db.sqlite3"
    migrate(db)
    os.environ["WSGIWS_DJANGO_DB"] = str(db)
    os.environ["DJANGO_SETTINGS_MODULE"] = "chatsite.settings"
    sys.path.insert(0, str(PROJECT))
    from chatsite.wsgi import application

    yield application
    sys.path.remove(str(PROJECT))


@pytest.fixture()
def db_path(django_app: object) -> Path:
    from django.conf import settings

    return Path(settings.DATABASES["default"]["NAME"])


def logged_in(name: str, permission: str | None = None) -> object:
    """A django.test.Client logged in as ``name`` (created, with ``permission`` if given)."""
    from django.contrib.auth.models import Permission, User
    from django.db import connections
    from django.test import Client

    user, _ = User.objects.get_or_create(username=name)
    if permission is not None:
        app_label, codename = permission.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client = Client()
    client.force_login(user)
    connections.close_all()  # this thread's connection would count as the server's
    return client


def test_logged_in_client_cookies_reach_the_view(django_app: object) -> None:
    from wsgiws.testing import TestClient

    with TestClient(django_app, cookies=logged_in("ada")).websocket_connect("/ws/echo/") as ws:
        ws.send("hello")
        assert ws.receive() == "hello"


def test_view_refuses_anonymous_with_its_own_403(django_app: object) -> None:
    from wsgiws.exceptions import HandshakeRejected
    from wsgiws.testing import TestClient

    with pytest.raises(HandshakeRejected) as info:
        TestClient(django_app).websocket_connect("/ws/echo/")
    assert info.value.status == 403
    assert info.value.body == b"log in first\n"


def test_login_required_redirects_to_the_login_page(django_app: object) -> None:
    from wsgiws.exceptions import HandshakeRejected
    from wsgiws.testing import TestClient

    with pytest.raises(HandshakeRejected) as info:
        TestClient(django_app).websocket_connect("/ws/chat/lobby/")
    assert info.value.status == 302
    assert dict((k.lower(), v) for k, v in info.value.headers)["location"] == (
        "/login/?next=/ws/chat/lobby/"
    )


def test_path_converter_session_and_database(django_app: object) -> None:
    from django.contrib.sessions.models import Session

    from wsgiws.testing import TestClient

    http = logged_in("grace")
    with TestClient(django_app, cookies=http).websocket_connect("/ws/chat/kitchen/") as ws:
        ws.send("one")
        assert ws.receive() == "grace@kitchen #1: one"
        ws.send("two")
        assert ws.receive() == "grace@kitchen #2: two"
    # The view wrote the session; Django's SessionMiddleware saved it after the socket closed.
    key = http.cookies["sessionid"].value  # type: ignore[attr-defined]
    assert wait_until(
        lambda: Session.objects.get(session_key=key).get_decoded().get("last_room") == "kitchen"
    )


def test_permission_required_403_then_allowed(django_app: object) -> None:
    from wsgiws.exceptions import HandshakeRejected
    from wsgiws.testing import TestClient

    with pytest.raises(HandshakeRejected) as info:
        TestClient(django_app, cookies=logged_in("bob")).websocket_connect("/ws/staff/")
    assert info.value.status == 403  # PermissionDenied, answered by Django
    staff = logged_in("carol", permission="chat.view_message")
    with TestClient(django_app, cookies=staff).websocket_connect("/ws/staff/") as ws:
        assert str(ws.receive()).startswith("hello carol, ")


def test_http404_before_accepting_and_int_converter(django_app: object) -> None:
    from chat.models import Message
    from django.db import connections

    from wsgiws.exceptions import HandshakeRejected
    from wsgiws.testing import TestClient

    with pytest.raises(HandshakeRejected) as info:
        TestClient(django_app).websocket_connect("/ws/article/999999/")
    assert info.value.status == 404
    number = Message.objects.create(room="r", author="a", text="found it").pk
    connections.close_all()
    with TestClient(django_app).websocket_connect(f"/ws/article/{number}/") as ws:
        assert ws.receive() == "found it"


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://localhost", True),  # the site's own origin
        ("https://chat.example.org", True),  # CSRF_TRUSTED_ORIGINS: https://*.example.org
        ("http://chat.example.org", False),  # the scheme must match too
        ("https://example.org.evil.test", False),
        ("http://evil.test", False),
        ("null", False),
    ],
)
def test_origin_follows_csrf_trusted_origins(
    django_app: object, origin: str, allowed: bool
) -> None:
    from wsgiws.exceptions import HandshakeRejected
    from wsgiws.testing import TestClient

    client = TestClient(django_app, cookies=logged_in("ada"))
    if allowed:
        with client.websocket_connect("/ws/echo/", origin=origin) as ws:
            ws.send("ok")
            assert ws.receive() == "ok"
    else:
        with pytest.raises(HandshakeRejected) as info:
            client.websocket_connect("/ws/echo/", origin=origin)
        assert info.value.status == 403
        assert b"is not allowed" in info.value.body


def test_route_origins_override_django_rule(django_app: object) -> None:
    from wsgiws.testing import TestClient

    with TestClient(django_app).websocket_connect("/ws/feed/", origin="http://evil.test") as ws:
        assert str(ws.receive()).endswith(" messages so far")


def test_host_outside_allowed_hosts_gets_400(django_app: object) -> None:
    from wsgiws.exceptions import HandshakeRejected
    from wsgiws.testing import TestClient

    with pytest.raises(HandshakeRejected) as info:
        TestClient(django_app, base_url="http://evil.test").websocket_connect("/ws/feed/")
    assert info.value.status == 400  # DisallowedHost, answered by Django


def test_plain_get_on_a_websocket_view_gets_426(django_app: object) -> None:
    from django.test import Client

    response = Client().get("/ws/echo/", headers={"Host": "testserver"})
    assert response.status_code == 426
    assert response["Upgrade"] == "websocket"
    assert Client().get("/").content == b"an ordinary Django view\n"  # HTTP views unaffected


def test_idle_sockets_hold_no_database_connection(django_app: object, db_path: Path) -> None:
    """Each socket queries per message; once waiting for the next one it gives its
    connection back (CONN_MAX_AGE = 0), so open sockets do not pile up connections."""
    from wsgiws.testing import TestClient

    client = TestClient(django_app, cookies=logged_in("dora"))
    sockets = [client.websocket_connect(f"/ws/chat/room{i}/") for i in range(10)]
    try:
        for i, ws in enumerate(sockets):
            ws.send("hi")
            assert ws.receive() == f"dora@room{i} #1: hi"
        assert wait_until(lambda: open_db_files("self", db_path) == 0)
    finally:
        for ws in sockets:
            ws.close()
            assert ws.wait_server()
    for _ in range(20):  # many short sessions leak nothing either
        with client.websocket_connect("/ws/chat/churn/") as ws:
            ws.send("x")
            ws.receive()
    assert wait_until(lambda: open_db_files("self", db_path) == 0)


def test_atomic_block_survives_waiting_for_a_message(django_app: object) -> None:
    """A connection inside atomic() is not closed when the handler waits (that would
    roll its transaction back)."""
    from django.db import connection, transaction

    from wsgiws.django import close_old_connections

    with transaction.atomic():
        connection.ensure_connection()
        close_old_connections()
        assert connection.connection is not None and connection.in_atomic_block
    close_old_connections()
    assert connection.connection is None  # CONN_MAX_AGE = 0: outside atomic() it goes


def test_websocket_views_are_exempt_from_atomic_requests(django_app: object) -> None:
    from chat import views

    assert "default" in views.chat._non_atomic_requests  # type: ignore[attr-defined]
    assert "default" in views.echo._non_atomic_requests  # type: ignore[attr-defined]


# ------------------------------------------------------------- real gunicorn


@pytest.fixture(scope="module")
def gunicorn_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("django-gunicorn") / "db.sqlite3"
    migrate(db)
    return db


def serve_example(db: Path) -> contextlib.AbstractContextManager[Server]:
    """``cd examples/django && gunicorn -c gunicorn.conf.py`` (gevent worker, drain hook)."""
    return serve(
        "gunicorn-config", "gunicorn.conf.py", cwd=PROJECT, env={"WSGIWS_DJANGO_DB": str(db)}
    )


@pytest.fixture(scope="module")
def gunicorn_server(gunicorn_db: Path) -> Iterator[Server]:
    with serve_example(gunicorn_db) as srv:
        yield srv


def login_cookie(server: Server, name: str) -> str:
    with urllib.request.urlopen(f"{server.http_url}/login/{name}/", timeout=5) as response:
        cookies = response.headers.get_all("Set-Cookie")
    return "; ".join(cookie.split(";", 1)[0] for cookie in cookies)


def worker_pid(server: Server) -> int:
    for line in server.log().splitlines():
        if "Booting worker with pid:" in line:
            return int(line.rsplit(":", 1)[1])
    raise AssertionError(server.log())


def test_gunicorn_echo_when_logged_in(gunicorn_server: Server) -> None:
    from websockets.sync.client import connect

    cookie = login_cookie(gunicorn_server, "ada")
    with connect(gunicorn_server.url + "/ws/echo/", additional_headers={"Cookie": cookie}) as ws:
        for message in ["a", b"b", "\u00fc" * 1000]:
            ws.send(message)
            assert ws.recv() == message
    assert ws.close_code == 1000


def test_gunicorn_refuses_anonymous_with_403_before_accepting(gunicorn_server: Server) -> None:
    client = RawClient(gunicorn_server.port, "/ws/echo/")
    assert client.status == 403
    assert client.body() == b"log in first\n"
    client.close()


def test_gunicorn_client_close_then_nothing_but_fin(gunicorn_server: Server) -> None:
    cookie = login_cookie(gunicorn_server, "ada")
    client = RawClient(
        gunicorn_server.port,
        "/ws/echo/",
        headers={"Cookie": cookie},
        extra=RawClient.frame(1, b"early"),  # right behind the handshake
    )
    assert client.accepted_properly()
    assert client.read_frame() == (1, True, b"early")
    client.send_frame(8, struct.pack("!H", 1000))
    assert client.read_close() == (1000, "")
    assert client.rest_until_eof() == b""  # no Django response after the close frame, then FIN
    client.close()


def test_gunicorn_server_close_then_nothing_but_fin(gunicorn_server: Server) -> None:
    cookie = login_cookie(gunicorn_server, "ada")
    assert_bye_is_clean(RawClient(gunicorn_server.port, "/ws/bye/", headers={"Cookie": cookie}))


def test_gunicorn_log_shows_101_and_no_error(gunicorn_server: Server) -> None:
    from websockets.sync.client import connect

    cookie = login_cookie(gunicorn_server, "ada")
    with connect(gunicorn_server.url + "/ws/echo/", additional_headers={"Cookie": cookie}) as ws:
        ws.send("x")
        ws.recv()
    assert wait_until(lambda: '"GET /ws/echo/ HTTP/1.1" 101' in gunicorn_server.log())
    assert "Traceback" not in gunicorn_server.log()


def test_gunicorn_idle_sockets_hold_no_database_connection(
    gunicorn_server: Server, gunicorn_db: Path
) -> None:
    from websockets.sync.client import connect

    cookie = login_cookie(gunicorn_server, "eve")
    pid = worker_pid(gunicorn_server)
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(
                connect(
                    f"{gunicorn_server.url}/ws/chat/g{i}/", additional_headers={"Cookie": cookie}
                )
            )
            for i in range(10)
        ]
        for i, ws in enumerate(sockets):
            ws.send("hi")
            assert ws.recv() == f"eve@g{i} #1: hi"
        assert wait_until(lambda: open_db_files(pid, gunicorn_db) == 0)
    assert wait_until(lambda: open_db_files(pid, gunicorn_db) == 0)


def test_gunicorn_sigterm_drains_every_socket_with_1001(gunicorn_db: Path) -> None:
    with serve_example(gunicorn_db) as server:
        cookie = login_cookie(server, "ada")
        clients = []
        for i in range(10):
            client = RawClient(server.port, "/ws/echo/", headers={"Cookie": cookie})
            assert client.accepted_properly()
            client.send_frame(1, f"hi {i}".encode())
            assert client.read_frame() == (1, True, f"hi {i}".encode())
            clients.append(client)
        server.process.send_signal(signal.SIGTERM)
        for client in clients:
            client.sock.settimeout(10)
            assert client.read_close() == (1001, "server restarting")
            client.send_frame(8, struct.pack("!H", 1001))
            assert client.rest_until_eof() == b""  # a reset would raise ConnectionResetError
            client.close()
        server.process.wait(15)
        log = server.log()
        assert server.process.returncode == 0, log
        assert "closing 10 WebSocket(s) with 1001" in log
        assert "Traceback" not in log and "graceful timeout" not in log


def test_uwsgi_serves_the_django_project(gunicorn_db: Path) -> None:
    from websockets.sync.client import connect

    from tests.conftest import require_binary
    from tests.servers import uwsgi_binary

    if uwsgi_binary() is None:
        require_binary("uwsgi")
    env = {"WSGIWS_DJANGO_DB": str(gunicorn_db)}
    with serve("uwsgi", "chatsite.wsgi:application", cwd=PROJECT, env=env) as server:
        anonymous = RawClient(server.port, "/ws/echo/")
        assert anonymous.status == 403
        anonymous.close()
        cookie = login_cookie(server, "uma")
        with connect(server.url + "/ws/chat/u/", additional_headers={"Cookie": cookie}) as ws:
            ws.send("hi")
            assert ws.recv() == "uma@u #1: hi"
        assert_bye_is_clean(RawClient(server.port, "/ws/bye/", headers={"Cookie": cookie}))
        assert "Traceback" not in server.log()
