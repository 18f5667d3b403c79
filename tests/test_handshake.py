"""The opening handshake, from WSGI environs."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from wsgiws.handshake import (
    Reject,
    accept_key,
    check_origin,
    is_upgrade_request,
    select_subprotocol,
    validate_request,
)

KEY = base64.b64encode(b"0123456789abcdef").decode()


def environ(**overrides: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "PATH_INFO": "/ws",
        "HTTP_HOST": "example.com:8000",
        "HTTP_UPGRADE": "websocket",
        "HTTP_CONNECTION": "Upgrade",
        "HTTP_SEC_WEBSOCKET_KEY": KEY,
        "HTTP_SEC_WEBSOCKET_VERSION": "13",
        "wsgi.url_scheme": "http",
    }
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def rejected(env: dict[str, Any], **kw: Any) -> Reject:
    with pytest.raises(Reject) as info:
        validate_request(env, **kw)
    return info.value


def test_rfc_sample_accept_key() -> None:
    # RFC 6455 section 1.3.
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_valid_request() -> None:
    accept = validate_request(environ())
    headers = dict(accept.response_headers())
    assert headers["Upgrade"] == "websocket"
    assert headers["Connection"] == "Upgrade"
    assert headers["Sec-WebSocket-Accept"] == accept_key(KEY)
    assert "Sec-WebSocket-Protocol" not in headers


@pytest.mark.parametrize(
    ("upgrade", "connection"),
    [
        ("WebSocket", "keep-alive, Upgrade"),
        ("h2c, websocket", "upgrade"),
        ("websocket", "Keep-Alive,UPGRADE"),
    ],
)
def test_token_lists_are_case_insensitive(upgrade: str, connection: str) -> None:
    validate_request(environ(HTTP_UPGRADE=upgrade, HTTP_CONNECTION=connection))


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({"REQUEST_METHOD": "POST"}, 400),
        ({"SERVER_PROTOCOL": "HTTP/1.0"}, 400),
        ({"HTTP_HOST": None}, 400),
        ({"HTTP_UPGRADE": None}, 426),
        ({"HTTP_UPGRADE": "websockets"}, 426),
        ({"HTTP_CONNECTION": "keep-alive"}, 400),
        ({"HTTP_CONNECTION": None}, 400),
        ({"HTTP_SEC_WEBSOCKET_VERSION": "8"}, 426),
        ({"HTTP_SEC_WEBSOCKET_VERSION": None}, 426),
        ({"HTTP_SEC_WEBSOCKET_KEY": None}, 400),
        ({"HTTP_SEC_WEBSOCKET_KEY": "not base64!"}, 400),
        ({"HTTP_SEC_WEBSOCKET_KEY": base64.b64encode(b"short").decode()}, 400),
        ({"HTTP_SEC_WEBSOCKET_KEY": base64.b64encode(b"x" * 17).decode()}, 400),
    ],
)
def test_bad_requests(overrides: dict[str, Any], status: int) -> None:
    reject = rejected(environ(**overrides))
    assert reject.status == status
    status_line, headers, body = reject.response()
    assert status_line.startswith(str(status))
    assert dict(headers)["Content-Type"].startswith("text/plain")
    assert body.strip()  # a reason a person can read
    if status == 426:
        assert ("Sec-WebSocket-Version", "13") in headers


def test_http2_and_later_versions_pass() -> None:
    validate_request(environ(SERVER_PROTOCOL="HTTP/2.0"))


def test_subprotocol_server_preference_and_exact_match() -> None:
    env = environ(HTTP_SEC_WEBSOCKET_PROTOCOL="superchat, chat")
    assert validate_request(env, subprotocols=["chat", "superchat"]).subprotocol == "chat"
    assert validate_request(env, subprotocols=["superchat", "chat"]).subprotocol == "superchat"
    assert validate_request(env, subprotocols=["Chat"]).subprotocol is None
    assert select_subprotocol(["a", "b"], ["c"]) is None
    accept = validate_request(env, subprotocols=["chat"])
    assert ("Sec-WebSocket-Protocol", "chat") in accept.response_headers()


def test_required_subprotocol() -> None:
    env = environ(HTTP_SEC_WEBSOCKET_PROTOCOL="other")
    assert rejected(env, subprotocols=["chat"], require_subprotocol=True).status == 400
    assert validate_request(environ(), subprotocols=["chat"]).subprotocol is None


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "secure", "ok"),
    [
        (None, "a.com", None, False, True),  # non-browser client
        ("http://a.com", "a.com", None, False, True),
        ("http://a.com:80", "a.com", None, False, True),
        ("https://a.com", "a.com:443", None, True, True),
        ("http://A.com:8000", "a.com:8000", None, False, True),
        ("http://evil.com", "a.com", None, False, False),
        ("http://a.com:8001", "a.com:8000", None, False, False),
        ("null", "a.com", None, False, False),
        ("http://evil.com", "a.com", ["http://evil.com"], False, True),
        ("http://other.com", "a.com", ["http://evil.com"], False, False),
        ("http://a.com", "a.com", ["http://evil.com"], False, False),
        ("http://anything", "a.com", ["*"], False, True),
        ("null", "a.com", ["null"], False, True),
    ],
)
def test_origin_check(
    origin: str | None, host: str, allowed: list[str] | None, secure: bool, ok: bool
) -> None:
    assert check_origin(origin, host, allowed, secure=secure) is ok


def test_cross_origin_browser_request_is_403() -> None:
    reject = rejected(environ(HTTP_ORIGIN="http://evil.example"))
    assert reject.status == 403
    validate_request(environ(HTTP_ORIGIN="http://evil.example"), origins=["http://evil.example"])
    validate_request(environ(HTTP_ORIGIN="http://example.com:8000"))


def test_is_upgrade_request() -> None:
    assert is_upgrade_request(environ())
    assert is_upgrade_request(environ(HTTP_UPGRADE="h2c, WebSocket"))
    assert not is_upgrade_request(environ(HTTP_UPGRADE=None))
    assert not is_upgrade_request(environ(HTTP_UPGRADE="h2c"))


def test_extension_negotiation_hook() -> None:
    from wsgiws.deflate import DeflateOptions, server_negotiate

    env = environ(HTTP_SEC_WEBSOCKET_EXTENSIONS="permessage-deflate; client_max_window_bits")
    accept = validate_request(
        env, negotiate_extension=lambda o: server_negotiate(o, DeflateOptions())
    )
    assert accept.extension is not None
    assert any(name == "Sec-WebSocket-Extensions" for name, _ in accept.response_headers())
    accept = validate_request(env)  # no negotiator: declined
    assert accept.extension is None
