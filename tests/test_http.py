"""wsgiws.http: the one HTTP head parser (requests and responses), fed whole and in pieces."""

from __future__ import annotations

import pytest

from wsgiws.http import HeadError, HeadReader, parse_request_head, parse_response_head

RESPONSE = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nX-Two:  a b \r\n\r\nFRAMES"


@pytest.mark.parametrize("step", [1, 7, len(RESPONSE)])
def test_a_head_fed_in_pieces_keeps_what_follows(step: int) -> None:
    reader = HeadReader()
    pieces = [RESPONSE[i : i + step] for i in range(0, len(RESPONSE), step)]
    index, text = 0, reader.feed(pieces[0])
    while text is None:
        index += 1
        text = reader.feed(pieces[index])
    head = parse_response_head(text)
    assert (head.status, head.reason) == (101, "Switching Protocols")
    assert head.headers == [("Upgrade", "websocket"), ("X-Two", "a b")]
    assert reader.rest + b"".join(pieces[index + 1 :]) == b"FRAMES"


def test_bare_lf_heads_are_accepted() -> None:
    reader = HeadReader()
    head = reader.feed(b"GET /chat?x=1 HTTP/1.1\nHost: a\n\nrest")
    assert head is not None and reader.rest == b"rest"
    request = parse_request_head(head)
    assert (request.method, request.target, request.version) == ("GET", "/chat?x=1", "HTTP/1.1")
    assert request.headers == [("Host", "a")]


def test_an_oversized_head_is_refused_before_it_ends() -> None:
    reader = HeadReader(max_size=100)
    with pytest.raises(HeadError, match="longer than 100"):
        reader.feed(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 30)


@pytest.mark.parametrize(
    "head",
    [
        "HTTP/2 200 OK",
        "HTTP/1.1 20 OK",
        "HTTP/1.1 200 OK\nbad header line",
        "HTTP/1.1 200 OK\n folded: value",
        "HTTP/1.1 200 OK\nName : spaced",
    ],
)
def test_malformed_response_heads(head: str) -> None:
    with pytest.raises(HeadError):
        parse_response_head(head)


@pytest.mark.parametrize("head", ["GET /", "GET / HTTP/1.1 extra", "G3T / HTTP/1.1"])
def test_malformed_request_lines(head: str) -> None:
    with pytest.raises(HeadError):
        parse_request_head(head)
