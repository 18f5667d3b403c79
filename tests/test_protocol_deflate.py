"""Compressed messages through the engine: negotiated pairs, fed bytes whole and one at a time."""

from __future__ import annotations

import zlib

import pytest

from tests.test_protocol import FEEDS, failure, feed, fragment, frame, messages, send
from wsgiws.deflate import DeflateOptions, client_accept, client_offer, server_negotiate
from wsgiws.protocol import Message, Protocol, Role


def pair(
    options: DeflateOptions | None = None, max_message_size: int | None = 1 << 20
) -> tuple[Protocol, Protocol]:
    """A client and a server engine that negotiated permessage-deflate."""
    negotiated = server_negotiate(client_offer(options), options)
    assert negotiated is not None
    response, server_ext = negotiated
    client_ext = client_accept(response, options)
    return (
        Protocol(Role.CLIENT, extension=client_ext, max_message_size=max_message_size),
        Protocol(Role.SERVER, extension=server_ext, max_message_size=max_message_size),
    )


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


@pytest.mark.parametrize("how", FEEDS)
def test_messages_round_trip_both_ways(how: str) -> None:
    client, server = pair()
    texts = ["hello " * 50, "héllo wörld " * 30, "x", ""]
    wire = b"".join(send(client, t) for t in texts)
    assert wire[0] & 0x40  # RSV1 on a compressed message
    assert messages(feed(server, wire, how)) == texts
    data = bytes(range(256)) * 40
    assert messages(feed(client, send(server, data), how)) == [data]


@pytest.mark.parametrize("how", FEEDS)
def test_context_takeover_across_messages(how: str) -> None:
    client, server = pair()
    first = send(client, "the same sentence, again and again " * 4)
    second = send(client, "the same sentence, again and again " * 4)
    assert len(second) < len(first)  # the second refers back to the first
    assert len(messages(feed(server, first + second, how))) == 2


@pytest.mark.parametrize("how", FEEDS)
def test_fragmented_compressed_message_rsv1_on_first_frame_only(how: str) -> None:
    _, server = pair()
    body = raw_deflate(b"fragmented and compressed " * 20)
    third = len(body) // 3
    wire = (
        frame(1, body[:third], fin=False, rsv=0x40)
        + frame(9, b"ping in between")
        + frame(0, body[third : 2 * third], fin=False)
        + frame(0, body[2 * third :])
    )
    events = feed(server, wire, how)
    assert [e.data for e in events if isinstance(e, Message)] == ["fragmented and compressed " * 20]


def test_rsv1_on_a_continuation_frame_is_1002() -> None:
    _, server = pair()
    wire = frame(1, raw_deflate(b"ab"), fin=False, rsv=0x40) + frame(0, b"", rsv=0x40)
    assert failure(server.receive_data(wire)).code == 1002


def test_rsv1_on_a_control_frame_is_1002() -> None:
    _, server = pair()
    assert failure(server.receive_data(frame(9, b"", rsv=0x40))).code == 1002


def test_corrupt_compressed_data_is_1007() -> None:
    _, server = pair()
    assert failure(server.receive_data(frame(2, b"\xff\xff\xff\xff", rsv=0x40))).code == 1007


def test_invalid_utf8_inside_compressed_text_is_1007() -> None:
    _, server = pair()
    assert failure(server.receive_data(frame(1, raw_deflate(b"ok\xff"), rsv=0x40))).code == 1007


@pytest.mark.parametrize("how", ["whole", "halves"])
def test_decompression_bomb_fails_1009_without_inflating_it(how: str) -> None:
    import tracemalloc

    _, server = pair(max_message_size=1 << 20)
    bomb = raw_deflate(b"\x00" * (64 << 20))  # 64 MiB of zeros: about 64 KB on the wire
    assert len(bomb) < 100_000
    tracemalloc.start()
    try:
        events = feed(server, frame(2, bomb, rsv=0x40), how)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert failure(events).code == 1009
    assert peak < 4 << 20  # about the limit, never the 64 MiB


def test_bomb_fed_one_byte_at_a_time() -> None:
    _, server = pair(max_message_size=100_000)
    wire = frame(2, raw_deflate(b"\x00" * 1_000_000), rsv=0x40)
    events = feed(server, wire, "bytewise")
    assert failure(events).code == 1009


def test_small_messages_go_uncompressed() -> None:
    client, _ = pair()
    assert not send(client, "hi")[0] & 0x40


def test_streamed_compressed_message() -> None:
    client, server = pair()
    wire = fragment(client, "part one, ", fin=False) + fragment(client, "part two", fin=True)
    assert messages(server.receive_data(wire)) == ["part one, part two"]


def test_no_context_takeover_both_ways() -> None:
    options = DeflateOptions(server_no_context_takeover=True, client_no_context_takeover=True)
    client, server = pair(options)
    for _ in range(3):
        assert messages(server.receive_data(send(client, "abc" * 100))) == ["abc" * 100]
        assert messages(client.receive_data(send(server, "xyz" * 100))) == ["xyz" * 100]
