"""The sans-I/O engine, fed bytes: whole, one byte at a time, and with trailing data."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable

import pytest

from wsgiws import protocol
from wsgiws.deflate import PerMessageDeflate
from wsgiws.protocol import (
    Close,
    Event,
    Message,
    Ping,
    Pong,
    Protocol,
    ProtocolFailure,
    Role,
    State,
    _apply_mask_python,
    apply_mask,
    is_valid_close_code,
)


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    length_bytes: int | None = None,
) -> bytes:
    """A frame as a client (mask=True) or server (mask=False) would send it."""
    b0 = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if length_bytes is None:
        length_bytes = 0 if n < 126 else 2 if n < 65536 else 8
    if length_bytes == 0:
        header = bytes([b0, mbit | n])
    elif length_bytes == 2:
        header = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        header = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + _apply_mask_python(payload, key)


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


FEEDS = ["whole", "bytewise", "halves"]


@pytest.fixture(autouse=True, params=["mask-default", "mask-python"])
def _mask_implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here runs with the C accelerator (when built) and with the pure-Python path."""
    if request.param == "mask-python":
        monkeypatch.setattr(protocol, "apply_mask", _apply_mask_python)


def feed(proto: Protocol, data: bytes, how: str) -> list[Event]:
    events: list[Event] = []
    if how == "whole":
        events += proto.receive_data(data)
    elif how == "bytewise":
        for i in range(len(data)):
            events += proto.receive_data(data[i : i + 1])
    else:
        half = len(data) // 2
        events += proto.receive_data(data[:half])
        events += proto.receive_data(data[half:])
    return events


def sent(proto: Protocol) -> bytes:
    """What the engine queued for the wire, as one string (the end-of-stream marker is b"")."""
    return b"".join(proto.data_to_send())


def send(proto: Protocol, data: str | bytes) -> bytes:
    proto.send_message(data)
    return sent(proto)


def fragment(proto: Protocol, data: str | bytes, fin: bool) -> bytes:
    proto.send_fragment(data, fin=fin)
    return sent(proto)


def close_frame(proto: Protocol, code: int = 1000, reason: str = "") -> bytes:
    proto.send_close(code, reason)
    return sent(proto)


def server(**kw: object) -> Protocol:
    return Protocol(Role.SERVER, **kw)  # type: ignore[arg-type]


def messages(events: Iterable[Event]) -> list[str | bytes]:
    return [e.data for e in events if isinstance(e, Message)]


def failure(events: list[Event]) -> ProtocolFailure:
    assert events, "expected a failure event"
    last = events[-1]
    assert isinstance(last, ProtocolFailure), events
    return last


# ---------------------------------------------------------------------- framing


@pytest.mark.parametrize("how", FEEDS)
@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_lengths_7_16_64_bit(how: str, size: int) -> None:
    payload = os.urandom(size)
    proto = server()
    events = feed(proto, frame(2, payload), how)
    assert messages(events) == [payload]


@pytest.mark.parametrize("how", FEEDS)
def test_text_and_many_frames_per_chunk_with_trailing_data(how: str) -> None:
    data = frame(1, "héllo".encode()) + frame(2, b"\x00\x01") + frame(1, b"x")
    trailing = frame(1, b"partial")[:5]
    proto = server()
    events = feed(proto, data + trailing, how)
    assert messages(events) == ["héllo", b"\x00\x01", "x"]
    # The partial frame completes with the rest of its bytes.
    rest = frame(1, b"partial")
    proto2 = server()
    assert messages(proto2.receive_data(rest[:5])) == []
    assert messages(proto2.receive_data(rest[5:])) == ["partial"]


@pytest.mark.parametrize("how", FEEDS)
def test_non_minimal_lengths_are_accepted(how: str) -> None:
    proto = server()
    data = frame(1, b"abc", length_bytes=2) + frame(1, b"def", length_bytes=8)
    assert messages(feed(proto, data, how)) == ["abc", "def"]


@pytest.mark.parametrize("how", FEEDS)
def test_fragmented_message_with_interleaved_control_frames(how: str) -> None:
    data = (
        frame(1, b"he", fin=False)
        + frame(9, b"p1")
        + frame(0, b"", fin=False)
        + frame(0, b"llo", fin=False)
        + frame(10, b"x")
        + frame(0, " wörld".encode(), fin=True)
    )
    proto = server()
    events = feed(proto, data, how)
    assert messages(events) == ["hello wörld"]
    assert [type(e) for e in events] == [Ping, Pong, Message]
    assert sent(proto) == frame(10, b"p1", mask=False)


def test_client_role_expects_unmasked_and_masks_its_frames() -> None:
    client = Protocol(Role.CLIENT)
    assert messages(client.receive_data(frame(1, b"hi", mask=False))) == ["hi"]
    out = send(client, "hi")
    assert out[1] & 0x80  # masked
    srv = server()
    assert messages(srv.receive_data(out)) == ["hi"]
    # A fresh key per frame.
    assert send(client, "same")[2:6] != send(client, "same")[2:6]


def test_server_frames_are_unmasked_and_large_messages_are_fragmented() -> None:
    proto = server(max_message_size=None)
    proto.fragment_size = 1000
    out = send(proto, b"y" * 2500)
    client = Protocol(Role.CLIENT, max_message_size=None)
    assert out[0] == 0x02  # first frame: binary, not fin
    assert messages(client.receive_data(out)) == [b"y" * 2500]


def test_streamed_message() -> None:
    proto = server()
    out = fragment(proto, "ab", fin=False) + fragment(proto, "cd", fin=True)
    assert out[0] == 0x01 and out[4] == 0x80
    client = Protocol(Role.CLIENT)
    assert messages(client.receive_data(out)) == ["abcd"]
    with pytest.raises(RuntimeError):
        fragment(proto, b"x", fin=False)
        send(proto, "interleaved")


def test_apply_mask_matches_bytewise_xor() -> None:
    key = b"\x01\x02\x03\x04"
    for n in (0, 1, 3, 4, 5, 1000, 1001):
        data = os.urandom(n)
        expected = bytes(b ^ key[i % 4] for i, b in enumerate(data))
        assert apply_mask(data, key) == expected
        assert _apply_mask_python(data, key) == expected


# ------------------------------------------------------------- protocol errors


@pytest.mark.parametrize("how", FEEDS)
@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(3, b"x"), 1002),  # reserved opcodes
        (frame(7, b"x"), 1002),
        (frame(0xB, b"x"), 1002),
        (frame(0xF, b"x"), 1002),
        (frame(1, b"x", rsv=0x40), 1002),  # RSV without an extension
        (frame(1, b"x", rsv=0x20), 1002),
        (frame(1, b"x", rsv=0x10), 1002),
        (frame(9, b"x" * 126), 1002),  # control frame over 125 bytes
        (frame(9, b"x", fin=False), 1002),  # fragmented control frame
        (frame(0, b"x"), 1002),  # continuation without a start
        (frame(1, b"a", fin=False) + frame(1, b"b"), 1002),  # new message inside a fragmented one
        (frame(1, b"x", mask=False), 1002),  # unmasked client frame
        (bytes([0x82, 0xFF]) + struct.pack("!Q", 1 << 63) + b"\x00" * 4, 1002),  # top bit
        (frame(1, b"\xff"), 1007),
        (frame(1, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"), 1007),
        (frame(8, b"\x03"), 1002),  # 1-byte close payload
        (frame(8, close_payload(1000, "") + b"\xff"), 1002),  # invalid UTF-8 reason
    ],
)
def test_protocol_violations(how: str, data: bytes, code: int) -> None:
    proto = server()
    events = feed(proto, data, how)
    assert failure(events).code == code
    # The engine ignores everything after a failure.
    assert proto.receive_data(frame(1, b"more")) == []


@pytest.mark.parametrize(
    "code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
)
def test_close_codes_that_may_not_be_on_the_wire(code: int) -> None:
    assert not is_valid_close_code(code)
    proto = server()
    assert failure(proto.receive_data(frame(8, close_payload(code)))).code == 1002


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999]
)
def test_valid_close_codes_are_echoed(code: int) -> None:
    proto = server()
    events = proto.receive_data(frame(8, close_payload(code, "bye")))
    assert isinstance(events[0], Close) and events[0].code == code and events[0].reason == "bye"
    assert sent(proto) == b"" and proto.close_pending  # the reply waits for the application
    proto.send_close()
    assert sent(proto) == frame(8, struct.pack("!H", code), mask=False)
    assert proto.state is State.CLOSED


def test_invalid_utf8_fails_in_the_fragment_where_it_appears() -> None:
    proto = server()
    assert proto.receive_data(frame(1, "κόσμε".encode(), fin=False)) == []
    # A surrogate (ED A0 80) split across fragments: fails on its second byte.
    assert proto.receive_data(frame(0, b"\xed", fin=False)) == []
    assert failure(proto.receive_data(frame(0, b"\xa0", fin=False))).code == 1007


def test_invalid_utf8_fails_before_the_frame_is_complete() -> None:
    proto = server()
    data = frame(1, b"valid" + b"\xf4\x90\x80\x80" + b"x" * 1000)
    # Header + mask + first bytes of the payload: the bad sequence is already visible.
    assert failure(proto.receive_data(data[: 6 + 4 + 10])).code == 1007


def test_truncated_utf8_at_message_end_fails() -> None:
    proto = server()
    proto.receive_data(frame(1, b"a\xe2\x82", fin=False))
    assert failure(proto.receive_data(frame(0, b""))).code == 1007


# ------------------------------------------------------------------ size limits


def test_max_message_size_is_enforced_from_the_header() -> None:
    proto = server(max_message_size=100)
    header_only = frame(2, b"x" * 1000)[:8]  # 2 + 2 length bytes + 4 mask bytes
    assert failure(proto.receive_data(header_only)).code == 1009


def test_max_message_size_counts_all_fragments() -> None:
    proto = server(max_message_size=100)
    assert proto.receive_data(frame(2, b"x" * 60, fin=False)) == []
    assert failure(proto.receive_data(frame(0, b"x" * 60)[:8])).code == 1009


def test_no_limit() -> None:
    proto = server(max_message_size=None)
    assert messages(proto.receive_data(frame(2, b"x" * (2 << 20)))) == [b"x" * (2 << 20)]


def test_fragment_count_is_bounded() -> None:
    proto = server(max_fragments=3)
    data = frame(1, b"a", fin=False) + frame(0, b"", fin=False) + frame(0, b"", fin=False)
    assert proto.receive_data(data) == []
    assert failure(proto.receive_data(frame(0, b"", fin=False))).code == 1009


# ------------------------------------------------------------- pings and close


def test_every_ping_of_a_batch_is_answered() -> None:
    proto = server()
    proto.receive_data(b"".join(frame(9, b"p%d" % i) for i in range(3)))
    assert sent(proto) == b"".join(frame(10, b"p%d" % i, mask=False) for i in range(3))


def test_pongs_not_sent_before_newer_pings_are_superseded() -> None:
    proto = server()
    proto.receive_data(frame(9, b"old1") + frame(9, b"old2"))
    proto.receive_data(frame(9, b"new"))  # the pongs above never went out
    assert sent(proto) == frame(10, b"new", mask=False)


def test_close_reply_echoes_code_and_nothing_follows() -> None:
    proto = server()
    events = proto.receive_data(frame(9, b"p") + frame(8, close_payload(1001)) + frame(1, b"after"))
    assert [type(e) for e in events] == [Ping, Close]
    # The ping before the close gets its pong at once; the close reply when asked for.
    assert sent(proto) == frame(10, b"p", mask=False)
    proto.send_close(1000, "ours is not used")
    assert sent(proto) == frame(8, struct.pack("!H", 1001), mask=False)
    with pytest.raises(RuntimeError):
        send(proto, "too late")
    assert close_frame(proto) == b""


def test_empty_close_gets_empty_reply() -> None:
    proto = server()
    events = proto.receive_data(frame(8))
    assert isinstance(events[0], Close) and events[0].code == 1005
    proto.send_close()
    assert sent(proto) == frame(8, mask=False)


def test_after_sending_close_only_close_is_sent() -> None:
    proto = server()
    out = close_frame(proto, 1000, "done")
    assert out == frame(8, close_payload(1000, "done"), mask=False)
    assert proto.state is State.CLOSING
    with pytest.raises(RuntimeError):
        send(proto, "x")
    with pytest.raises(RuntimeError):
        proto.send_ping()
    proto.receive_data(frame(9, b"late ping"))
    assert sent(proto) == b""  # no pong after our close
    events = proto.receive_data(frame(8, close_payload(1000)))
    assert isinstance(events[-1], Close)
    assert proto.state is State.CLOSED
    assert sent(proto) == b""


def test_send_close_validates_code_and_reason() -> None:
    proto = server()
    with pytest.raises(ValueError):
        close_frame(proto, 1006)
    with pytest.raises(ValueError):
        close_frame(proto, 2000)
    with pytest.raises(ValueError):
        close_frame(proto, 1000, "x" * 124)
    with pytest.raises(ValueError):
        proto.send_ping(b"x" * 126)


def test_close_without_code() -> None:
    proto = server()
    assert close_frame(proto, 1005) == frame(8, mask=False)


# ------------------------------- the peer's close waits behind its messages (5.5.1)

MSG_MSG_CLOSE = frame(1, b"one") + frame(1, b"two") + frame(8, close_payload(1000, "bye"))


@pytest.mark.parametrize("how", FEEDS)
def test_messages_before_a_close_can_still_be_answered(how: str) -> None:
    """1.4: the closing handshake must not lose data in flight. The peer's close comes
    after its messages, and our reply waits until the application took them and answered."""
    proto = server()
    events = feed(proto, MSG_MSG_CLOSE + frame(1, b"after the close") + frame(9, b"ping"), how)
    assert events == [Message("one"), Message("two"), Close(1000, "bye")]
    assert proto.data_to_send() == []  # no reply yet, and nothing after the close counts
    assert proto.close_pending and proto.state is State.OPEN
    assert send(proto, "one") + send(proto, "two") == frame(1, b"one", mask=False) + frame(
        1, b"two", mask=False
    )
    proto.send_close()
    assert proto.data_to_send() == [frame(8, close_payload(1000), mask=False), EOF_MARK]
    assert not proto.close_pending and proto.state is State.CLOSED
    assert (proto.close_code, proto.close_reason, proto.close_initiator) == (1000, "bye", "remote")
    with pytest.raises(protocol.InvalidState):
        proto.send_message("too late")
    assert feed(proto, frame(1, b"later"), how) == [] and proto.data_to_send() == []


@pytest.mark.parametrize("how", FEEDS)
def test_client_answers_messages_before_the_servers_close(how: str) -> None:
    proto = client()
    data = frame(1, b"one", mask=False) + frame(8, close_payload(1001), mask=False)
    assert feed(proto, data, how) == [Message("one"), Close(1001, "")]
    assert proto.close_pending and proto.data_to_send() == []
    proto.send_message("answer")
    proto.send_close()
    out = proto.data_to_send()
    assert [part[0] for part in out] == [0x81, 0x88]  # masked answer, masked reply, no FIN yet
    assert proto.close_expected() and proto.close_code == 1001


def test_a_ping_before_the_close_is_answered_first_one_after_it_not() -> None:
    proto = server()
    proto.receive_data(frame(1, b"m") + frame(9, b"before") + frame(8) + frame(9, b"after"))
    assert sent(proto) == frame(10, b"before", mask=False)
    proto.send_ping(b"ours")  # control frames may still go out before the reply
    proto.send_close()
    assert sent(proto) == frame(9, b"ours", mask=False) + frame(8, mask=False)


def test_broadcast_frames_go_out_before_the_reply_and_not_after() -> None:
    proto = server()
    proto.receive_data(MSG_MSG_CLOSE)
    shared = protocol.FramedMessage.frame("news")
    proto.send_framed(shared)
    assert sent(proto) == frame(1, b"news", mask=False)
    proto.send_close()
    sent(proto)
    with pytest.raises(protocol.InvalidState):
        proto.send_framed(shared)
    assert proto.data_to_send() == []


def test_a_shared_frame_sent_now_is_the_shared_buffers_when_nothing_else_waits() -> None:
    proto = server()
    shared = protocol.FramedMessage.frame("news")
    assert not shared.compressed
    out = proto.send_framed_now(shared)
    assert out is shared.frames  # no copy, no list: the broadcast's buffers themselves
    assert b"".join(out) == frame(1, b"news", mask=False)
    assert proto.data_to_send() == []  # nothing was left queued behind it
    assert (proto.messages_out, proto.bytes_out) == (1, 4)


def test_a_shared_frame_sent_now_goes_after_what_was_queued_before_it() -> None:
    proto = server()
    proto.send_message("mine")
    proto.receive_data(frame(9, b"p"))  # a pong is owed: taken, like any, with the output
    shared = protocol.FramedMessage.frame("news")
    out = proto.send_framed_now(shared)
    assert b"".join(out) == (
        frame(1, b"mine", mask=False) + frame(1, b"news", mask=False) + frame(10, b"p", mask=False)
    )
    assert proto.data_to_send() == []
    assert (proto.messages_out, proto.bytes_out) == (2, 8)


def test_a_shared_frame_sent_now_is_refused_where_send_framed_refuses_it() -> None:
    shared = protocol.FramedMessage.frame("y")
    closed = server()
    closed.send_close()
    with pytest.raises(protocol.InvalidState):
        closed.send_framed_now(shared)
    streaming = server()
    streaming.send_fragment("x", fin=False)
    with pytest.raises(protocol.InvalidState):
        streaming.send_framed_now(shared)
    with pytest.raises(ValueError):
        client().send_framed_now(shared)  # clients mask each frame
    deflate = PerMessageDeflate(local_no_context_takeover=True)
    compressed = protocol.FramedMessage.frame("z" * 500, deflate)
    assert compressed.compressed
    bare = server()
    with pytest.raises(ValueError):
        bare.send_framed_now(compressed)  # without the extension
    assert (bare.messages_out, bare.data_to_send()) == (0, [])  # nothing counted, nothing sent
    with_deflate = server(extension=PerMessageDeflate(local_no_context_takeover=True))
    assert with_deflate.send_framed_now(compressed) is compressed.frames
    assert (with_deflate.messages_out, with_deflate.bytes_out) == (1, 500)
    assert (closed.messages_out, streaming.messages_out) == (0, 0)  # refused: not counted


def test_ending_before_the_reply_keeps_the_peers_code() -> None:
    """7.1.5: the close code is the one in the first close frame received, not 1006."""
    for end in ("abort", "eof"):
        proto = server()
        proto.receive_data(frame(8, close_payload(4001, "theirs")))
        if end == "abort":
            proto.abort("socket error while sending")
        else:
            proto.receive_eof()
        assert (proto.close_code, proto.close_reason, proto.close_initiator) == (
            4001,
            "theirs",
            "remote",
        )
        assert proto.data_to_send() == [EOF_MARK]  # no reply: we could not write it


def test_failing_before_the_reply_sends_one_close_with_the_failure_code() -> None:
    proto = server()
    proto.receive_data(MSG_MSG_CLOSE)
    proto.fail(1011, "handler crashed")
    assert proto.data_to_send() == [
        frame(8, close_payload(1011, "handler crashed"), mask=False),
        EOF_MARK,
    ]
    assert proto.close_code == 1011 and not proto.close_pending


# ------------------------------------------- the connection's life (RFC 6455 7.1)

EOF_MARK = protocol.END_OF_STREAM


def client() -> Protocol:
    return Protocol(Role.CLIENT)


@pytest.mark.parametrize("how", FEEDS)
def test_server_answers_a_close_then_ends_tcp_first(how: str) -> None:
    """7.1.1: the server closes TCP first, right after the closing handshake."""
    proto = server()
    data = frame(8, close_payload(1000, "bye")) + frame(1, b"trailing, ignored")
    events = feed(proto, data, how)
    assert events == [Close(1000, "bye")]
    proto.send_close()
    assert proto.data_to_send() == [frame(8, struct.pack("!H", 1000), mask=False), EOF_MARK]
    assert proto.state is State.CLOSED and not proto.close_expected()
    assert (proto.close_code, proto.close_reason, proto.close_initiator) == (1000, "bye", "remote")


@pytest.mark.parametrize("how", FEEDS)
def test_server_failure_sends_one_close_then_ends_tcp_and_hears_nothing_more(how: str) -> None:
    proto = server()
    data = frame(1, b"ok") + frame(1, b"unmasked", mask=False) + frame(9, b"ping")
    events = feed(proto, data, how)
    assert events[:-1] == [Message("ok")]
    fault = failure(events)
    assert fault.code == 1002
    assert proto.state is State.OPEN  # messages before the fault may still be answered
    proto.send_message("answer")
    proto.fail(fault.code, fault.reason)
    out = proto.data_to_send()
    assert out == [
        frame(1, b"answer", mask=False),
        frame(8, close_payload(1002, "client frames must be masked"), mask=False),
        EOF_MARK,
    ]
    assert feed(proto, frame(9, b"later"), how) == []
    assert proto.data_to_send() == []  # no pong, no second close
    # It read no close from the peer: the I/O layer drains until the peer's FIN.
    assert proto.close_expected()
    proto.receive_eof()
    assert not proto.close_expected()
    assert (proto.close_code, proto.close_initiator) == (1002, "local")


def test_server_closes_first_then_ends_tcp_on_the_reply() -> None:
    proto = server()
    proto.send_close(1001, "going")
    assert proto.data_to_send() == [frame(8, close_payload(1001, "going"), mask=False)]
    assert proto.state is State.CLOSING and proto.close_expected()
    proto.receive_data(frame(8, close_payload(1001)))
    assert proto.data_to_send() == [EOF_MARK]  # the reply is not answered: TCP ends
    assert proto.state is State.CLOSED and not proto.close_expected()
    assert (proto.close_code, proto.close_reason, proto.close_initiator) == (1001, "", "local")


def test_client_answers_a_close_and_waits_for_the_servers_fin() -> None:
    proto = client()
    proto.receive_data(frame(8, close_payload(1000), mask=False))
    proto.send_close()
    out = proto.data_to_send()
    assert len(out) == 1 and out[0][:2] == b"\x88\x82"  # masked reply, no end of stream yet
    assert proto.state is State.CLOSED and proto.close_expected()
    proto.receive_eof()
    assert proto.data_to_send() == [EOF_MARK]  # now the client ends its side
    assert not proto.close_expected()
    assert proto.close_code == 1000


def test_client_failure_sends_a_close_and_leaves_tcp_to_the_server() -> None:
    proto = client()
    fault = failure(proto.receive_data(frame(1, b"masked by a server", mask=True)))
    proto.fail(fault.code, fault.reason)
    out = proto.data_to_send()
    assert len(out) == 1 and out[0][0] == 0x88  # a close, and no end of stream
    assert proto.close_expected()


def test_eof_before_a_close_is_abnormal() -> None:
    proto = server()
    proto.receive_data(frame(2, b"x" * 10)[:5])  # mid-frame
    proto.receive_eof()
    assert (proto.close_code, proto.close_initiator) == (1006, "abnormal")
    assert proto.data_to_send() == [EOF_MARK]  # no close frame: the peer is gone
    with pytest.raises(protocol.InvalidState):
        proto.send_message("late")


def test_eof_after_our_close_keeps_our_code() -> None:
    proto = server()
    proto.send_close(4000, "mine")
    proto.receive_eof()
    assert (proto.close_code, proto.close_reason, proto.close_initiator) == (4000, "mine", "local")


def test_fail_after_close_sent_adds_no_second_close() -> None:
    proto = server()
    proto.send_close(1000)
    proto.data_to_send()
    proto.fail(1002, "bad reply")
    assert proto.data_to_send() == [EOF_MARK]
    assert proto.close_code == 1002


def test_invalid_state_is_a_runtime_error_for_older_callers() -> None:
    proto = server()
    proto.send_close()
    with pytest.raises(protocol.InvalidState):
        proto.send_ping()
    assert issubclass(protocol.InvalidState, RuntimeError)


def test_events_are_frozen_values() -> None:
    import dataclasses

    event = Close(1000, "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.code = 1001  # type: ignore[misc]
    assert Message("a") == Message("a") and not hasattr(Message("a"), "__dict__")


class _BrokenExtension:
    rsv1 = 0x40

    def begin_message(self) -> None:
        pass

    def decode(self, payload: bytes, fin: bool, max_size: int | None) -> bytes:
        raise KeyError("a bug in the extension")

    def should_compress(self, size: int) -> bool:
        return False

    def encode(self, data: bytes) -> bytes:
        return data

    def encode_fragment(self, data: bytes, fin: bool) -> bytes:
        return data


def test_a_bug_in_an_extension_is_logged_and_fails_with_1011(
    caplog: pytest.LogCaptureFixture,
) -> None:
    proto = server(extension=_BrokenExtension())
    fault = failure(proto.receive_data(frame(1, b"x", rsv=0x40)))
    assert fault.code == 1011
    assert "KeyError" in caplog.text
