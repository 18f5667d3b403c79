"""The Redis Streams backend on its own, against a real redis-server: positions,
bounded history, the floor that makes a trimmed position a gap, once-only appends."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis as redis_py

from tests import redis_server
from wsgiws.backends.redis import RedisStreamsBackend
from wsgiws.hub import GAP, MESSAGE, Envelope, HistoryGap, Position


@pytest.fixture(scope="module", params=redis_server.SERVERS)
def redis(request: pytest.FixtureRequest) -> Iterator[redis_server.RedisServer]:
    with redis_server.redis_server(binary=redis_server.server_binary(request.param)) as server:
        yield server


def wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_history_is_bounded_and_a_trimmed_position_is_a_gap(
    redis: redis_server.RedisServer,
) -> None:
    backend = RedisStreamsBackend(redis.url, prefix="t1", history=5, history_age=None)
    try:
        start = backend.head("r")
        heads = []  # the room's head after each message: the position a client holds then
        for i in range(12):
            backend.publish(Envelope("r", f"m{i}", None, "pub", i + 1))
            heads.append(backend.head("r"))
        backend.publish(Envelope("r", "again", None, "pub", 3))  # a retried append
        assert backend.head("r") == heads[-1]  # appended nothing
        assert redis_py.Redis.from_url(redis.url).xlen(backend.stream_key("r")) == 5
        kept = backend.replay("r", heads[6])  # after m6: m7..m11, all still there
        assert [e.payload for e in kept] == [f"m{i}" for i in range(7, 12)]
        assert [e.position for e in kept] == heads[7:]
        keys = [h.key for h in heads]
        assert keys == sorted(keys) and len(set(keys)) == 12
        assert {h.epoch for h in heads} == {start.epoch}
        for gone in (start, heads[0], heads[5]):  # m6 is gone: after m5 is a gap
            with pytest.raises(HistoryGap) as gap:
                backend.replay("r", gone)
            assert gap.value.reason == "trimmed"
        with pytest.raises(HistoryGap) as gap:
            backend.replay("r", Position("0bad0bad", "1-0"))
        assert gap.value.reason == "epoch"
    finally:
        backend.close()


def test_a_reader_that_falls_behind_the_history_reports_a_gap(
    redis: redis_server.RedisServer,
) -> None:
    """A reader whose next XREAD comes after more messages than the history holds
    (a burst outran it) hears of the loss, then gets what is left, in order."""
    got: list[Envelope] = []
    reader = RedisStreamsBackend(redis.url, prefix="t4", history=3, history_age=None)
    publisher = RedisStreamsBackend(redis.url, prefix="t4", history=3, history_age=None)
    try:
        behind = reader.head("r")
        calm = reader.head("calm")
        publisher.publish(Envelope("calm", "c0", None, "pub", 1))
        for i in range(6):  # m0..m2 are trimmed before the reader reads
            publisher.publish(Envelope("r", f"m{i}", None, "pub", i + 2))
        reader.start(got.append)
        reader.watch("r", behind)  # its XREAD starts only now, from before m0
        reader.watch("calm", calm)  # behind by one message, which is still there
        wait_for(lambda: len(got) == 5)
        in_r = [(e.kind, e.payload) for e in got if e.room == "r"]
        assert in_r == [(GAP, ""), (MESSAGE, "m3"), (MESSAGE, "m4"), (MESSAGE, "m5")]
        assert [(e.kind, e.payload) for e in got if e.room == "calm"] == [(MESSAGE, "c0")]
        publisher.publish(Envelope("r", "m6", None, "pub", 8))  # caught up: no gap
        wait_for(lambda: len(got) == 6)
        assert (got[-1].kind, got[-1].payload) == (MESSAGE, "m6")
    finally:
        reader.close()
        publisher.close()


def test_age_trimming_reports_no_false_gap(redis: redis_server.RedisServer) -> None:
    backend = RedisStreamsBackend(redis.url, prefix="t2", history=100, history_age=0.3)
    try:
        start = backend.head("r")
        backend.publish(Envelope("r", "old", None, "pub", 1))
        first = backend.replay("r", start)
        assert [e.payload for e in first] == ["old"]
        time.sleep(0.4)
        backend.publish(Envelope("r", "new", None, "pub", 2))  # trims "old" by age
        with pytest.raises(HistoryGap):
            backend.replay("r", start)  # "old" came after start and is gone
        assert first[0].position is not None
        assert [e.payload for e in backend.replay("r", first[0].position)] == ["new"]
    finally:
        backend.close()


def test_a_reader_that_was_away_while_its_room_was_trimmed_reports_a_gap(
    redis: redis_server.RedisServer,
) -> None:
    got: list[Envelope] = []
    reader = RedisStreamsBackend(redis.url, prefix="t3", history=3, history_age=None)
    publisher = RedisStreamsBackend(redis.url, prefix="t3", history=3, history_age=None)
    try:
        reader.start(got.append)
        reader.watch("r", reader.head("r"))
        reader.watch("calm", reader.head("calm"))
        wait_for(lambda: reader.subscribed)
        publisher.publish(Envelope("r", "seen", None, "pub", 1))
        wait_for(lambda: len(got) == 1)
        away = [group.task for group in reader._groups.values()]
        assert len(away) == 1  # one server: one reader for every stream
        reader._closed = True  # the reader stops reading (as if its connection were gone)
        for task in away:
            task.join(10)  # a thread: the test process does not patch sockets
            assert not task.is_alive()
        for i in range(5):  # more than the history while it is away
            publisher.publish(Envelope("r", f"missed{i}", None, "pub", i + 2))
        reader._closed = False
        got.clear()
        reader.start(got.append)  # back, from the last id it delivered
        wait_for(lambda: any(e.kind == GAP for e in got))
        gaps = [e for e in got if e.kind == GAP]
        assert [e.room for e in gaps] == ["r"]  # "calm" lost nothing
    finally:
        reader.close()
        publisher.close()
