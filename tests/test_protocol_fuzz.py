"""Property tests: any bytes, cut anywhere, give the same events and never an exception."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_protocol import frame
from wsgiws.deflate import server_negotiate
from wsgiws.protocol import Event, Message, Ping, Pong, Protocol, ProtocolFailure, Role


def describe(events: list[Event]) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for event in events:
        if isinstance(event, Message):
            out.append(("message", event.data))
        elif isinstance(event, (Ping, Pong)):
            out.append((type(event).__name__, event.payload))
        elif isinstance(event, ProtocolFailure):
            out.append(("failure", event.code))
        else:
            out.append(("close", (event.code, event.reason)))  # type: ignore[union-attr]
    return out


def run(data: bytes, cuts: list[int], compressed: bool) -> list[tuple[str, object]]:
    extension = None
    if compressed:
        negotiated = server_negotiate("permessage-deflate")
        assert negotiated is not None
        extension = negotiated[1]
    proto = Protocol(Role.SERVER, max_message_size=4096, max_fragments=64, extension=extension)
    events: list[Event] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        events += proto.receive_data(data[start:cut])
        start = max(start, cut)
    # (Pongs owed are not compared: pongs left unsent across calls are superseded on purpose.)
    return describe(events)


frames = st.builds(
    frame,
    opcode=st.sampled_from([0, 1, 2, 3, 8, 9, 10, 11]),
    payload=st.binary(max_size=200) | st.text(max_size=60).map(str.encode),
    fin=st.booleans(),
    rsv=st.sampled_from([0, 0, 0, 0x40, 0x20]),
    mask=st.sampled_from([True, True, True, False]),
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(frames, max_size=8).map(b"".join) | st.binary(max_size=300),
    st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
    st.booleans(),
)
def test_chunking_never_changes_the_outcome(data: bytes, cuts: list[int], compressed: bool) -> None:
    whole = run(data, [], compressed)
    assert run(data, cuts, compressed) == whole
    events = whole
    # Nothing follows a failure or a close.
    for kind, _ in events[:-1]:
        assert kind not in ("failure", "close")
