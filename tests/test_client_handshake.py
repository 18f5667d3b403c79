"""The sans-I/O client handshake: URIs, the request, and every way a response can fail."""

from __future__ import annotations

import base64

import pytest

from wsgiws.client_handshake import ClientHandshake, parse_uri
from wsgiws.deflate import DeflateOptions, PerMessageDeflate
from wsgiws.exceptions import HandshakeRejected, InvalidHandshake, InvalidURI
from wsgiws.handshake import accept_key


def test_parse_uri_defaults_ports_paths_and_ipv6() -> None:
    uri = parse_uri("ws://example.com")
    assert (uri.secure, uri.host, uri.port, uri.resource) == (False, "example.com", 80, "/")
    assert uri.host_header == "example.com"
    uri = parse_uri("wss://Example.com/a/b?x=1&y=%20")
    assert (uri.secure, uri.host, uri.port, uri.resource) == (
        True,
        "example.com",
        443,
        "/a/b?x=1&y=%20",
    )
    assert uri.host_header == "example.com"
    uri = parse_uri("ws://example.com:8080/p")
    assert uri.host_header == "example.com:8080"
    uri = parse_uri("wss://example.com:443/")
    assert uri.host_header == "example.com"
    uri = parse_uri("ws://[::1]:9000/chat?room=1")
    assert (uri.host, uri.port, uri.resource) == ("::1", 9000, "/chat?room=1")
    assert uri.host_header == "[::1]:9000"
    assert parse_uri("ws://[2001:db8::1]/").host_header == "[2001:db8::1]"
    uri = parse_uri("ws://user:p%40ss@host/a b/é")
    assert uri.user_info == ("user", "p@ss")
    assert uri.resource == "/a%20b/%C3%A9"
    assert str(parse_uri("ws://h:81/x?q")) == "ws://h:81/x?q"


@pytest.mark.parametrize(
    "bad", ["http://example.com/", "example.com", "ws:///path", "ws://host:99999/", "ws://h/#frag"]
)
def test_invalid_uris(bad: str) -> None:
    with pytest.raises(InvalidURI):
        parse_uri(bad)


def _parse_request(data: bytes) -> tuple[str, dict[str, str]]:
    head = data.decode()
    assert head.endswith("\r\n\r\n")
    lines = head[:-4].split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        assert name.lower() not in headers
        headers[name.lower()] = value
    return lines[0], headers


def test_request_has_everything_rfc6455_4_1_requires() -> None:
    hs = ClientHandshake(
        parse_uri("ws://example.com:8080/chat?room=1"),
        subprotocols=["chat", "superchat"],
        headers={"X-Token": "abc"},
        origin="http://example.com:8080",
        compression=DeflateOptions(),
    )
    line, headers = _parse_request(hs.request())
    assert line == "GET /chat?room=1 HTTP/1.1"
    assert headers["host"] == "example.com:8080"
    assert headers["upgrade"] == "websocket"
    assert headers["connection"] == "Upgrade"
    assert headers["sec-websocket-version"] == "13"
    assert len(base64.b64decode(headers["sec-websocket-key"], validate=True)) == 16
    assert headers["sec-websocket-protocol"] == "chat, superchat"
    assert headers["origin"] == "http://example.com:8080"
    assert headers["sec-websocket-extensions"].startswith("permessage-deflate")
    assert headers["x-token"] == "abc"


def test_every_handshake_gets_a_fresh_random_key() -> None:
    uri = parse_uri("ws://h/")
    keys = {ClientHandshake(uri).key for _ in range(100)}
    assert len(keys) == 100


def test_basic_auth_from_uri_and_header_overrides() -> None:
    hs = ClientHandshake(
        parse_uri("ws://u:pw@h/"), headers=[("Host", "other"), ("User-Agent", "me")]
    )
    _, headers = _parse_request(hs.request())
    assert headers["authorization"] == "Basic " + base64.b64encode(b"u:pw").decode()
    assert headers["host"] == "other"
    assert headers["user-agent"] == "me"


@pytest.mark.parametrize(
    "name", ["Sec-WebSocket-Key", "upgrade", "Connection", "Sec-WebSocket-Version"]
)
def test_handshake_headers_cannot_be_overridden(name: str) -> None:
    with pytest.raises(ValueError):
        ClientHandshake(parse_uri("ws://h/"), headers={name: "x"})


def test_header_injection_refused() -> None:
    with pytest.raises(ValueError):
        ClientHandshake(parse_uri("ws://h/"), headers={"X-A": "1\r\nEvil: 2"})
    with pytest.raises(ValueError):
        ClientHandshake(parse_uri("ws://h/"), subprotocols=["a,b"])


KEY = "dGhlIHNhbXBsZSBub25jZQ=="
GOOD_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def _handshake(**kwargs: object) -> ClientHandshake:
    return ClientHandshake(parse_uri("ws://server.example.com/chat"), key=KEY, **kwargs)  # type: ignore[arg-type]


def _response(*headers: str, status: str = "101 Switching Protocols") -> bytes:
    return ("\r\n".join([f"HTTP/1.1 {status}", *headers]) + "\r\n\r\n").encode()


GOOD = ("Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Accept: {GOOD_ACCEPT}")


def test_rfc_example_accept_and_leftover_bytes() -> None:
    assert accept_key(KEY) == GOOD_ACCEPT
    hs = _handshake()
    data = _response(*GOOD) + b"\x81\x02hi"
    # Byte by byte: the parser is incremental.
    done = False
    for i in range(len(data)):
        done = hs.receive_data(data[i : i + 1])
        if done:
            hs.receive_data(data[i + 1 :])
            break
    assert done
    result = hs.result()
    assert result.status == 101
    assert result.leftover == b"\x81\x02hi"
    assert result.subprotocol is None and result.extension is None


def test_header_values_are_case_insensitive_where_the_rfc_says_so() -> None:
    hs = _handshake()
    hs.receive_data(
        _response(
            "UPGRADE: WebSocket",
            "connection: keep-alive, upgrade",
            f"sec-websocket-accept: {GOOD_ACCEPT}",
        )
    )
    assert hs.result().status == 101


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (GOOD[1:], "Upgrade"),
        (("Upgrade: h2c", *GOOD[1:]), "Upgrade"),
        ((GOOD[0], GOOD[2]), "Connection"),
        ((GOOD[0], "Connection: close", GOOD[2]), "Connection"),
        (GOOD[:2], "without Sec-WebSocket-Accept"),
        (
            (*GOOD[:2], "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            "wrong Sec-WebSocket-Accept",
        ),
        ((*GOOD, f"Sec-WebSocket-Accept: {GOOD_ACCEPT}"), "several Sec-WebSocket-Accept"),
    ],
)
def test_invalid_101_responses_fail(headers: tuple[str, ...], message: str) -> None:
    hs = _handshake()
    assert hs.receive_data(_response(*headers))
    with pytest.raises(InvalidHandshake, match=message):
        hs.result()


def test_subprotocol_must_be_one_that_was_offered() -> None:
    hs = _handshake(subprotocols=["chat"])
    hs.receive_data(_response(*GOOD, "Sec-WebSocket-Protocol: chat"))
    assert hs.result().subprotocol == "chat"
    hs = _handshake(subprotocols=["chat"])
    hs.receive_data(_response(*GOOD, "Sec-WebSocket-Protocol: superchat"))
    with pytest.raises(InvalidHandshake, match="not offered"):
        hs.result()
    hs = _handshake()
    hs.receive_data(_response(*GOOD, "Sec-WebSocket-Protocol: chat"))
    with pytest.raises(InvalidHandshake, match="not offered"):
        hs.result()
    hs = _handshake(subprotocols=["chat", "superchat"])
    hs.receive_data(_response(*GOOD, "Sec-WebSocket-Protocol: chat, superchat"))
    with pytest.raises(InvalidHandshake, match="several"):
        hs.result()


def test_extension_must_be_one_that_was_offered() -> None:
    hs = _handshake()
    hs.receive_data(_response(*GOOD, "Sec-WebSocket-Extensions: permessage-deflate"))
    with pytest.raises(InvalidHandshake, match="none were offered"):
        hs.result()
    hs = _handshake(compression=DeflateOptions())
    hs.receive_data(_response(*GOOD, "Sec-WebSocket-Extensions: x-webkit-deflate-frame"))
    with pytest.raises(InvalidHandshake, match="not offered"):
        hs.result()
    hs = _handshake(compression=DeflateOptions())
    hs.receive_data(
        _response(*GOOD, "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=10")
    )
    extension = hs.result().extension
    assert isinstance(extension, PerMessageDeflate)
    assert extension.local_max_window_bits == 10
    hs = _handshake(compression=DeflateOptions())
    hs.receive_data(_response(*GOOD))
    assert hs.result().extension is None  # the server may decline


@pytest.mark.parametrize(
    ("status", "body"),
    [
        ("403 Forbidden", b"origin not allowed\n"),
        ("404 Not Found", b"no such page"),
        ("426 Upgrade Required", b""),
    ],
)
def test_non_101_raises_with_status_headers_and_body(status: str, body: bytes) -> None:
    hs = _handshake()
    data = _response(
        "Content-Type: text/plain",
        f"Content-Length: {len(body)}",
        "Sec-WebSocket-Version: 13",
        status=status,
    )
    done = hs.receive_data(data + body[:3])
    if len(body) > 3:
        assert not done
        assert hs.receive_data(body[3:])
    with pytest.raises(HandshakeRejected) as info:
        hs.result()
    assert info.value.status == int(status[:3])
    assert info.value.reason == status[4:]
    assert info.value.body == body
    assert info.value.header("sec-websocket-version") == "13"
    assert status[:3] in str(info.value)


def test_non_101_body_is_bounded_and_read_until_eof_without_length() -> None:
    hs = _handshake(max_body_size=100)
    assert not hs.receive_data(_response("Content-Type: text/html", status="200 OK") + b"x" * 50)
    assert hs.receive_data(b"y" * 1000)
    with pytest.raises(HandshakeRejected) as info:
        hs.result()
    assert info.value.body == b"x" * 50 + b"y" * 50
    hs = _handshake()
    hs.receive_data(_response(status="500 Internal Server Error") + b"oops")
    hs.receive_eof()
    with pytest.raises(HandshakeRejected) as info:
        hs.result()
    assert info.value.body == b"oops"


def test_chunked_refusal_body_is_decoded() -> None:
    hs = _handshake()
    assert not hs.receive_data(
        _response("Transfer-Encoding: chunked", status="403 Forbidden") + b"5\r\nhello\r\n"
    )
    assert hs.receive_data(b"6\r\n world\r\n0\r\n\r\n")
    with pytest.raises(HandshakeRejected) as info:
        hs.result()
    assert info.value.body == b"hello world"


def test_interim_1xx_responses_are_skipped() -> None:
    hs = _handshake()
    assert hs.receive_data(_response(status="100 Continue") + _response(*GOOD))
    assert hs.result().status == 101


def test_redirect_is_a_rejection_with_location() -> None:
    hs = _handshake()
    hs.receive_data(_response("Location: ws://elsewhere/", "Content-Length: 0", status="302 Found"))
    with pytest.raises(HandshakeRejected) as info:
        hs.result()
    assert info.value.status == 302
    assert info.value.header("Location") == "ws://elsewhere/"


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 abc Nope\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 101 Switching\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 101 Switching\r\nUpgrade: websocket\r\n folded\r\n\r\n",
        b"HTTP/2 101 x\r\n\r\n",
    ],
)
def test_malformed_responses(data: bytes) -> None:
    with pytest.raises(InvalidHandshake):
        _handshake().receive_data(data)


def test_response_head_size_is_bounded() -> None:
    hs = _handshake(max_head_size=1000)
    assert not hs.receive_data(b"HTTP/1.1 101 Switching Protocols\r\n")
    with pytest.raises(InvalidHandshake, match="longer than 1000"):
        for _ in range(100):
            hs.receive_data(b"X-Filler: " + b"a" * 50 + b"\r\n")


def test_eof_before_the_response_head() -> None:
    hs = _handshake()
    hs.receive_data(b"HTTP/1.1 101 Swi")
    with pytest.raises(InvalidHandshake, match="closed during the opening handshake"):
        hs.receive_eof()
    with pytest.raises(InvalidHandshake):
        _handshake().receive_eof()
