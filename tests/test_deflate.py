"""Tests for wsgiws.deflate (RFC 7692 permessage-deflate, sans I/O)."""

from __future__ import annotations

import os
import random
import tracemalloc
import zlib

import pytest

from wsgiws.deflate import (
    DEFAULT_THRESHOLD,
    DEFAULT_THRESHOLD_NO_CONTEXT_TAKEOVER,
    DeflateError,
    DeflateOptions,
    NegotiationError,
    PerMessageDeflate,
    client_accept,
    client_offer,
    parse_extensions,
    server_negotiate,
)

PMD = "permessage-deflate"
MiB = 1024 * 1024


def negotiate(offer: str, options: DeflateOptions | None = None) -> tuple[str, PerMessageDeflate]:
    result = server_negotiate(offer, options or DeflateOptions())
    assert result is not None, offer
    return result


def pair(
    server_options: DeflateOptions | None = None, client_options: DeflateOptions | None = None
) -> tuple[PerMessageDeflate, PerMessageDeflate]:
    """Run a full negotiation: (server extension, client extension)."""
    client_options = client_options or DeflateOptions()
    response, server = negotiate(client_offer(client_options), server_options)
    return server, client_accept(response, client_options)


def receive(ext: PerMessageDeflate, frames: list[bytes], max_size: int | None = None) -> bytes:
    """Feed the frames of one compressed message like the core would, tracking max_size."""
    ext.begin_message()
    out = []
    remaining = max_size
    for i, frame in enumerate(frames):
        data = ext.decode(frame, i == len(frames) - 1, remaining)
        if remaining is not None:
            remaining -= len(data)
        out.append(data)
    return b"".join(out)


def messages() -> list[bytes]:
    rng = random.Random(7)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"epsilon", b'{"id":', b"},", b"\n"]
    return [
        b"",
        b"x",
        b"Hello",
        b" ".join(rng.choice(words) for _ in range(50)),
        b" ".join(rng.choice(words) for _ in range(5000)),
        os.urandom(3000),  # incompressible
        b"\x00" * 100_000,
    ]


# -- header parsing ------------------------------------------------------------------------------


def test_parse_extensions_lists_and_params() -> None:
    header = (
        'foo, permessage-deflate ;client_max_window_bits; server_max_window_bits = "10" ,bar;x=y'
    )
    assert parse_extensions(header) == [
        ("foo", []),
        (PMD, [("client_max_window_bits", None), ("server_max_window_bits", "10")]),
        ("bar", [("x", "y")]),
    ]


def test_parse_extensions_quoted_pair_and_empty_elements() -> None:
    assert parse_extensions(r', a; b="1\0" ,, c ,') == [("a", [("b", "10")]), ("c", [])]
    assert parse_extensions("") == []
    assert parse_extensions("  ,  ") == []


@pytest.mark.parametrize(
    "header",
    [
        "permessage-deflate;",
        "permessage-deflate; =1",
        "permessage-deflate; a=",
        'permessage-deflate; a="unterminated',
        "permessage-deflate a",
        "permessage-deflate; a=b c",
        "permessage-deflate; a=(b)",
        "permessage-deflate, ;a",
        "pmd/1",
    ],
)
def test_parse_extensions_syntax_errors(header: str) -> None:
    with pytest.raises(ValueError):
        parse_extensions(header)


# -- server negotiation --------------------------------------------------------------------------


def test_server_accepts_browser_offer_with_economical_defaults() -> None:
    response, ext = negotiate("permessage-deflate; client_max_window_bits")
    assert response == f"{PMD}; server_max_window_bits=12; client_max_window_bits=12"
    assert ext.local_max_window_bits == 12
    assert ext.remote_max_window_bits == 12
    assert not ext.local_no_context_takeover
    assert not ext.remote_no_context_takeover
    assert ext.compress_threshold == DEFAULT_THRESHOLD


def test_server_without_client_window_support_does_not_limit_client() -> None:
    response, ext = negotiate(PMD)
    assert response == f"{PMD}; server_max_window_bits=12"
    assert "client_max_window_bits" not in response
    assert ext.remote_max_window_bits == 15


@pytest.mark.parametrize(
    "offer", ["", "x-webkit-deflate-frame", "deflate-frame; no_context_takeover", "  ,  "]
)
def test_server_declines_when_no_permessage_deflate(offer: str) -> None:
    assert server_negotiate(offer, DeflateOptions()) is None


def test_server_ignores_unknown_extensions_and_takes_first_valid_offer() -> None:
    offer = (
        "x-foo; a=1, "
        "permessage-deflate; server_max_window_bits=10; mystery, "
        "permessage-deflate; server_max_window_bits=9; client_no_context_takeover, "
        "permessage-deflate"
    )
    response, ext = negotiate(offer)
    assert response == f"{PMD}; client_no_context_takeover; server_max_window_bits=9"
    assert ext.local_max_window_bits == 9
    assert ext.remote_no_context_takeover


def test_server_offer_split_over_header_lines() -> None:
    lines = ["x-foo", "permessage-deflate; server_no_context_takeover"]
    response, ext = negotiate(", ".join(lines))
    assert response.startswith(f"{PMD}; server_no_context_takeover")
    assert ext.local_no_context_takeover
    assert ext.compress_threshold == DEFAULT_THRESHOLD_NO_CONTEXT_TAKEOVER


@pytest.mark.parametrize(
    "params",
    [
        "server_max_window_bits=7",
        "server_max_window_bits=16",
        "server_max_window_bits=abc",
        "server_max_window_bits=08",
        "server_max_window_bits=+9",
        'server_max_window_bits=""',
        'server_max_window_bits="1 0"',
        "server_max_window_bits",
        "client_max_window_bits=7",
        "client_max_window_bits=16",
        "client_max_window_bits=abc",
        "client_max_window_bits=010",
        "server_no_context_takeover=1",
        'client_no_context_takeover=""',
        "server_no_context_takeover; server_no_context_takeover",
        "client_no_context_takeover; client_no_context_takeover",
        "server_max_window_bits=10; server_max_window_bits=10",
        "client_max_window_bits; client_max_window_bits=10",
        "unknown_param",
        "mem_level=5",
        "Server_No_Context_Takeover",
        "CLIENT_MAX_WINDOW_BITS",
    ],
)
def test_server_declines_invalid_offer(params: str) -> None:
    assert server_negotiate(f"{PMD}; {params}", DeflateOptions()) is None
    # ... and moves on to the next offer.
    response, _ = negotiate(f"{PMD}; {params}, {PMD}; server_no_context_takeover")
    assert "server_no_context_takeover" in response


def test_extension_name_is_case_sensitive() -> None:
    assert server_negotiate("Permessage-Deflate", DeflateOptions()) is None
    assert server_negotiate("PERMESSAGE-DEFLATE, permessage-deflate", DeflateOptions()) is not None


def test_malformed_header_declines_everything() -> None:
    assert server_negotiate(f"{PMD}, {PMD}; a=b c", DeflateOptions()) is None
    assert server_negotiate(f'{PMD}; server_max_window_bits="10', DeflateOptions()) is None


@pytest.mark.parametrize(
    ("value", "expected"), [('"10"', 10), ('"1\\0"', 10), ("9", 9), ('"15"', 12)]
)
def test_server_quoted_window_bits(value: str, expected: int) -> None:
    response, ext = negotiate(f"{PMD}; server_max_window_bits={value}")
    assert f"server_max_window_bits={expected}" in response
    assert ext.local_max_window_bits == expected


def test_server_honours_offered_client_window_value() -> None:
    response, ext = negotiate(f'{PMD}; client_max_window_bits="10"')
    assert "client_max_window_bits=10" in response
    assert ext.remote_max_window_bits == 10
    response, ext = negotiate(
        f"{PMD}; client_max_window_bits=14", DeflateOptions(client_max_window_bits=9)
    )
    assert "client_max_window_bits=9" in response
    assert ext.remote_max_window_bits == 9


def test_server_options_full_windows_and_no_context_takeover() -> None:
    options = DeflateOptions(
        server_max_window_bits=15,
        client_max_window_bits=15,
        server_no_context_takeover=True,
        client_no_context_takeover=True,
    )
    response, ext = negotiate(f"{PMD}; client_max_window_bits", options)
    assert response == f"{PMD}; server_no_context_takeover; client_no_context_takeover"
    assert ext.local_max_window_bits == 15
    assert ext.remote_max_window_bits == 15
    assert ext.local_no_context_takeover
    assert ext.remote_no_context_takeover
    # The client offering a smaller server window wins and must be echoed.
    response, ext = negotiate(f"{PMD}; server_max_window_bits=11", options)
    assert "server_max_window_bits=11" in response
    assert ext.local_max_window_bits == 11


def test_server_max_window_bits_8_accepted_but_never_compressed() -> None:
    response, ext = negotiate(f"{PMD}; server_max_window_bits=8")
    assert "server_max_window_bits=8" in response
    assert not ext.should_compress(10 * MiB)
    # encode() still works: stored blocks only, inflatable with a 256 byte window.
    data = b"abcdefgh" * 200
    payload = ext.encode(data)
    inflater = zlib.decompressobj(-8)
    assert inflater.decompress(payload + b"\x00\x00\xff\xff") == data
    # Incoming compressed messages are still fine.
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    frame = (c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert receive(ext, [frame]) == data


def _random_options(rng: random.Random) -> DeflateOptions:
    return DeflateOptions(
        server_max_window_bits=rng.choice([None, 8, 9, 12, 15]),
        client_max_window_bits=rng.choice([None, 8, 10, 15]),
        server_no_context_takeover=rng.random() < 0.5,
        client_no_context_takeover=rng.random() < 0.5,
    )


def test_negotiation_is_consistent_for_any_options() -> None:
    rng = random.Random(1)
    for _ in range(300):
        server_options, client_options = _random_options(rng), _random_options(rng)
        server, client = pair(server_options, client_options)
        assert server.local_max_window_bits == client.remote_max_window_bits
        assert client.local_max_window_bits == server.remote_max_window_bits
        assert server.local_no_context_takeover == client.remote_no_context_takeover
        assert client.local_no_context_takeover == server.remote_no_context_takeover
        if client_options.server_max_window_bits is not None:
            assert server.local_max_window_bits <= client_options.server_max_window_bits
        if client_options.client_max_window_bits is not None:
            assert client.local_max_window_bits <= client_options.client_max_window_bits
        data = b"payload %d " % rng.randint(0, 9) * 40
        assert receive(server, [client.encode(data)]) == data
        assert receive(client, [server.encode(data)]) == data


# -- client side ---------------------------------------------------------------------------------


def test_client_offer() -> None:
    assert client_offer(DeflateOptions()) == f"{PMD}; client_max_window_bits"
    options = DeflateOptions(
        server_max_window_bits=10,
        client_max_window_bits=11,
        server_no_context_takeover=True,
        client_no_context_takeover=True,
    )
    assert client_offer(options) == (
        f"{PMD}; server_no_context_takeover; client_no_context_takeover; "
        "server_max_window_bits=10; client_max_window_bits=11"
    )


def test_client_accepts_valid_responses() -> None:
    ext = client_accept(PMD, DeflateOptions())
    assert (ext.local_max_window_bits, ext.remote_max_window_bits) == (15, 15)
    ext = client_accept(
        f"{PMD}; server_no_context_takeover; client_no_context_takeover;"
        ' server_max_window_bits=10; client_max_window_bits="9"',
        DeflateOptions(),
    )
    assert ext.local_max_window_bits == 9
    assert ext.remote_max_window_bits == 10
    assert ext.local_no_context_takeover
    assert ext.remote_no_context_takeover
    # Our own client_no_context_takeover offer binds us even if the server does not echo it.
    ext = client_accept(PMD, DeflateOptions(client_no_context_takeover=True))
    assert ext.local_no_context_takeover
    # Our offered client window binds us when the server says nothing.
    ext = client_accept(PMD, DeflateOptions(client_max_window_bits=10))
    assert ext.local_max_window_bits == 10


@pytest.mark.parametrize(
    ("response", "options"),
    [
        ("", DeflateOptions()),
        (f"{PMD}; a=b c", DeflateOptions()),
        ("x-foo", DeflateOptions()),
        (f"{PMD}, x-foo", DeflateOptions()),
        (f"{PMD}, {PMD}", DeflateOptions()),
        ("Permessage-Deflate", DeflateOptions()),
        (f"{PMD}; unknown", DeflateOptions()),
        (f"{PMD}; server_no_context_takeover; server_no_context_takeover", DeflateOptions()),
        (f"{PMD}; server_max_window_bits=9; server_max_window_bits=9", DeflateOptions()),
        (f"{PMD}; server_no_context_takeover=1", DeflateOptions()),
        (f"{PMD}; client_no_context_takeover=x", DeflateOptions()),
        (f"{PMD}; client_max_window_bits", DeflateOptions()),
        (f"{PMD}; client_max_window_bits=7", DeflateOptions()),
        (f"{PMD}; client_max_window_bits=16", DeflateOptions()),
        (f"{PMD}; server_max_window_bits=7", DeflateOptions()),
        (f"{PMD}; server_max_window_bits=16", DeflateOptions()),
        (f"{PMD}; server_max_window_bits", DeflateOptions()),
        (f"{PMD}; server_max_window_bits=abc", DeflateOptions()),
        # we asked for a server window limit: it must be confirmed, with a value <= ours
        (PMD, DeflateOptions(server_max_window_bits=10)),
        (f"{PMD}; server_max_window_bits=11", DeflateOptions(server_max_window_bits=10)),
        # we asked for server_no_context_takeover: it must be confirmed
        (PMD, DeflateOptions(server_no_context_takeover=True)),
        # the server may not raise the client window above what we offered
        (f"{PMD}; client_max_window_bits=12", DeflateOptions(client_max_window_bits=11)),
    ],
)
def test_client_rejects_invalid_responses(response: str, options: DeflateOptions) -> None:
    with pytest.raises(NegotiationError):
        client_accept(response, options)
    assert issubclass(NegotiationError, ValueError)


def test_client_window_8_from_server_disables_compression() -> None:
    ext = client_accept(f"{PMD}; client_max_window_bits=8", DeflateOptions())
    assert ext.local_max_window_bits == 8
    assert not ext.should_compress(MiB)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"server_max_window_bits": 7},
        {"client_max_window_bits": 16},
        {"level": 10},
        {"mem_level": 0},
        {"compress_threshold": -1},
    ],
)
def test_options_validation(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        DeflateOptions(**kwargs)  # type: ignore[arg-type]


# -- compression round trips ---------------------------------------------------------------------

CONFIGS = [
    pytest.param(DeflateOptions(), DeflateOptions(), id="defaults"),
    pytest.param(
        DeflateOptions(server_no_context_takeover=True),
        DeflateOptions(client_no_context_takeover=True),
        id="no-takeover-both",
    ),
    pytest.param(
        DeflateOptions(server_max_window_bits=9, client_max_window_bits=9, mem_level=1),
        DeflateOptions(),
        id="small-windows",
    ),
    pytest.param(
        DeflateOptions(server_max_window_bits=15, client_max_window_bits=15, level=9),
        DeflateOptions(server_max_window_bits=15, mem_level=9),
        id="full-windows",
    ),
    pytest.param(
        DeflateOptions(), DeflateOptions(server_max_window_bits=10), id="client-limits-server"
    ),
]


@pytest.mark.parametrize(("server_options", "client_options"), CONFIGS)
def test_round_trip_several_messages_both_directions(
    server_options: DeflateOptions, client_options: DeflateOptions
) -> None:
    server, client = pair(server_options, client_options)
    for _ in range(3):
        for data in messages():
            assert receive(server, [client.encode(data)]) == data
            assert receive(client, [server.encode(data)]) == data


def test_context_takeover_shrinks_repeated_messages() -> None:
    server, client = pair()
    data = b'{"event": "price-update", "symbol": "ACME", "bid": 101.25, "ask": 101.5}'
    first = server.encode(data)
    second = server.encode(data)
    assert len(second) < len(first) // 2
    assert receive(client, [first]) == data
    assert receive(client, [second]) == data


def test_no_context_takeover_messages_are_independent() -> None:
    server, client = pair(DeflateOptions(server_no_context_takeover=True))
    data = b'{"event": "price-update", "symbol": "ACME", "bid": 101.25, "ask": 101.5}'
    payloads = [server.encode(data) for _ in range(3)]
    assert payloads[0] == payloads[1] == payloads[2]
    for payload in payloads:
        # each one inflates with a fresh decompressor
        assert zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff") == data
        assert receive(client, [payload]) == data
    # and the compressor is released between messages
    assert server._deflater is None


def test_remote_no_context_takeover_drops_inflater_between_messages() -> None:
    server, client = pair(client_options=DeflateOptions(client_no_context_takeover=True))
    assert server.remote_no_context_takeover
    assert receive(server, [client.encode(b"abc" * 100)]) == b"abc" * 100
    assert server._inflater is None
    other, _ = pair()
    assert receive(other, [client.encode(b"abc" * 100)]) == b"abc" * 100
    assert other._inflater is not None


def test_compressed_window_respects_negotiated_bits() -> None:
    # Data whose only redundancy lies 2000 bytes back: a 1 KiB window (10 bits) cannot use it.
    block = os.urandom(2000)
    data = block + block
    narrow = PerMessageDeflate(local_max_window_bits=10)
    wide = PerMessageDeflate(local_max_window_bits=12)
    assert len(wide.encode(data)) < 2100
    # One message only: a second one (context takeover) may refer into the first one's
    # last 1 KiB, which a fresh inflater has not seen (that made this test fail ~2 % of runs).
    encoded = narrow.encode(data)
    assert len(encoded) > 3900
    # Inflating with exactly the negotiated window works.
    inflater = zlib.decompressobj(-10)
    assert inflater.decompress(encoded + b"\x00\x00\xff\xff") == data


def test_rfc7692_examples() -> None:
    ext = PerMessageDeflate()
    hello = bytes.fromhex("f248cdc9c90700")
    assert receive(ext, [hello]) == b"Hello"
    # §7.2.3.2: the second message refers to the first one (context takeover).
    assert receive(ext, [bytes.fromhex("f200110000")]) == b"Hello"
    # §7.2.3.1: the same message split over two frames.
    assert receive(PerMessageDeflate(), [hello[:3], hello[3:]]) == b"Hello"
    # §7.2.3.3: no compression (stored block).
    assert receive(ext, [bytes.fromhex("000500faff48656c6c6f00")]) == b"Hello"
    # §7.2.3.4: BFINAL set; the stream restarts for the next message.
    assert receive(ext, [bytes.fromhex("f348cdc9c9070000")]) == b"Hello"
    assert receive(ext, [hello]) == b"Hello"
    # §7.2.3.6: an empty message is sent as a single 0x00 octet.
    assert PerMessageDeflate().encode(b"") == b"\x00"
    assert receive(PerMessageDeflate(), [b"\x00"]) == b""


def test_encode_strips_trailer() -> None:
    ext = PerMessageDeflate()
    for data in messages():
        payload = ext.encode(data)
        assert not payload.endswith(b"\x00\x00\xff\xff") or data == b""
    # an uncompressed message does not disturb the compressor state
    assert receive(PerMessageDeflate(), [PerMessageDeflate().encode(b"a" * 1000)]) == b"a" * 1000


def test_should_compress_threshold() -> None:
    ext = PerMessageDeflate()
    assert not ext.should_compress(DEFAULT_THRESHOLD - 1)
    assert ext.should_compress(DEFAULT_THRESHOLD)
    ext = PerMessageDeflate(compress_threshold=0)
    assert ext.should_compress(0)
    _, ext = negotiate(PMD, DeflateOptions(compress_threshold=1000))
    assert not ext.should_compress(999)
    assert ext.should_compress(1000)


# -- fragmented messages -------------------------------------------------------------------------


def test_fragmented_decode_one_frame_at_a_time() -> None:
    server, client = pair()
    data = b" ".join(b"word%d" % (i % 97) for i in range(20_000))
    for size in (1, 7, 100, 4096):
        payload = client.encode(data)
        frames = [payload[i : i + size] for i in range(0, len(payload), size)]
        assert receive(server, frames) == data
    # an empty final frame after the data is fine as well
    payload = client.encode(data)
    assert receive(server, [payload, b""]) == data


def test_fragmented_decode_byte_by_byte_yields_incrementally() -> None:
    ext = PerMessageDeflate()
    data = os.urandom(500) * 4
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = (c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
    ext.begin_message()
    pieces = [ext.decode(payload[i : i + 1], False, None) for i in range(len(payload))]
    pieces.append(ext.decode(b"", True, None))
    assert b"".join(pieces) == data
    assert sum(1 for p in pieces if p) > 10  # output arrives as input arrives


def test_encode_fragment_stream() -> None:
    server, client = pair()
    chunks = [b"first chunk " * 50, b"", b"second " * 300, os.urandom(100), b"end"]
    for _ in range(2):  # twice: the context carries over between streamed messages
        frames = [
            server.encode_fragment(chunk, i == len(chunks) - 1) for i, chunk in enumerate(chunks)
        ]
        assert all(frames[:-1])  # every non-final fragment is flushed, hence non-empty
        assert not frames[-1].endswith(b"\x00\x00\xff\xff")
        assert receive(client, frames) == b"".join(chunks)
    # a whole message after a streamed one
    assert receive(client, [server.encode(b"after")]) == b"after"


def test_encode_fragment_no_context_takeover() -> None:
    server, client = pair(DeflateOptions(server_no_context_takeover=True))
    frames = [server.encode_fragment(b"abc" * 100, False), server.encode_fragment(b"xyz", True)]
    assert server._deflater is None
    inflater = zlib.decompressobj(-15)
    assert inflater.decompress(b"".join(frames) + b"\x00\x00\xff\xff") == b"abc" * 100 + b"xyz"
    assert receive(client, frames) == b"abc" * 100 + b"xyz"


# -- limits and corruption -----------------------------------------------------------------------


def _compress(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return (c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


def test_decompression_bomb_is_bounded() -> None:
    bomb = _compress(b"\x00" * (10 * MiB))
    assert len(bomb) < 20_000
    ext = PerMessageDeflate()
    tracemalloc.start()
    try:
        ext.begin_message()
        with pytest.raises(DeflateError) as info:
            ext.decode(bomb, True, MiB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.code == 1009
    assert info.value.reason
    # without the bound the whole 10 MiB (and more) would be allocated; with it, the limit
    # plus one 64 KiB zlib buffer
    assert peak < 1.25 * MiB, peak


def test_decompression_bomb_fragmented_is_bounded() -> None:
    bomb = _compress(b"\x00" * (10 * MiB))
    frames = [bomb[i : i + 1000] for i in range(0, len(bomb), 1000)]
    ext = PerMessageDeflate()
    tracemalloc.start()
    try:
        with pytest.raises(DeflateError) as info:
            receive(ext, frames, max_size=MiB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.code == 1009
    # frames within the limit are returned (the core keeps them), plus one transient join copy
    assert peak < 2.25 * MiB, peak


@pytest.mark.parametrize("frame_size", [1, 3, 10_000, 1_000_000])
@pytest.mark.parametrize("length", [10_000, 65_536, 300_000])
def test_max_size_exact_boundary(frame_size: int, length: int) -> None:
    data = (b"0123456789" * (length // 10 + 1))[:length]
    payload = _compress(data)
    frames = [payload[i : i + frame_size] for i in range(0, len(payload), frame_size)]
    assert receive(PerMessageDeflate(), frames, max_size=len(data)) == data
    with pytest.raises(DeflateError) as info:
        receive(PerMessageDeflate(), frames, max_size=len(data) - 1)
    assert info.value.code == 1009


def test_max_size_zero_allows_only_empty_message() -> None:
    assert receive(PerMessageDeflate(), [b"\x00"], max_size=0) == b""
    with pytest.raises(DeflateError):
        receive(PerMessageDeflate(), [_compress(b"a")], max_size=0)


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xff\xff\xff",  # reserved block type
        bytes.fromhex("000500faff48656c6c6f00")[:-1].replace(b"\xfa", b"\xfb"),  # bad NLEN
        bytes.fromhex("f200110000"),  # distance too far back without context
    ],
)
def test_corrupt_data_fails_with_1007(payload: bytes) -> None:
    ext = PerMessageDeflate()
    with pytest.raises(DeflateError) as info:
        receive(ext, [payload])
    assert info.value.code == 1007
    # the extension is usable again (the core closes anyway, but no stale state remains)
    assert receive(ext, [bytes.fromhex("f248cdc9c90700")]) == b"Hello"


def test_corrupt_data_in_later_frame() -> None:
    sender = PerMessageDeflate()
    first = sender.encode_fragment(b"hello " * 100, False)  # ends on a block boundary
    ext = PerMessageDeflate()
    ext.begin_message()
    assert ext.decode(first, False, None) == b"hello " * 100
    with pytest.raises(DeflateError) as info:
        ext.decode(b"\xff\xff", True, None)  # BTYPE 11 is reserved
    assert info.value.code == 1007


def test_extension_constants() -> None:
    assert PerMessageDeflate.rsv1 == 0x40
    err = DeflateError(1009, "too big")
    assert (err.code, err.reason, str(err)) == (1009, "too big", "too big")


def test_trailer_itself_may_produce_output() -> None:
    # A stored block header announcing 4 bytes: the appended 00 00 ff ff become its content.
    payload = bytes.fromhex("000400fbff")
    assert receive(PerMessageDeflate(), [payload]) == b"\x00\x00\xff\xff"
    assert receive(PerMessageDeflate(), [payload], max_size=4) == b"\x00\x00\xff\xff"
    with pytest.raises(DeflateError) as info:
        receive(PerMessageDeflate(), [payload], max_size=3)
    assert info.value.code == 1009


def test_decode_without_begin_message_and_negative_max_size() -> None:
    ext = PerMessageDeflate()
    assert ext.decode(bytes.fromhex("f248cdc9c90700"), True, None) == b"Hello"
    assert ext.decode(b"\x00", True, -5) == b""
    with pytest.raises(DeflateError):
        ext.decode(bytes.fromhex("f248cdc9c90700"), True, -5)


def test_large_final_fragment_and_defaults() -> None:
    response, server = server_negotiate(client_offer()) or ("", PerMessageDeflate())
    client = client_accept(response)
    assert "client_max_window_bits=12" in response
    data = os.urandom(50_000)
    frames = [client.encode_fragment(b"x" * 10, False), client.encode_fragment(data, True)]
    assert receive(server, frames) == b"x" * 10 + data
    assert "remote_max_window_bits=12" in repr(server)


def test_peer_exceeding_negotiated_window_fails_with_1007() -> None:
    block = os.urandom(2000)
    payload = PerMessageDeflate(local_max_window_bits=15).encode(block + block)
    assert receive(PerMessageDeflate(remote_max_window_bits=15), [payload]) == block + block
    # zlib only notices when the reference reaches before its window, i.e. across calls; output
    # is never wrong, at worst the message fails.
    frames = [payload[i : i + 100] for i in range(0, len(payload), 100)]
    with pytest.raises(DeflateError) as info:
        receive(PerMessageDeflate(remote_max_window_bits=10), frames)
    assert info.value.code == 1007
    assert "too far back" in info.value.reason
