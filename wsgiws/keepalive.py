"""Keepalive: ping an idle peer, and fail the connection when it stops answering.

Built on the runtime's timers; it works on whatever socket the connection has
(plain or TLS), because it only asks the connection, never the socket.

The wait for a connection's next ping is not a timer of its own: the connections of
one runtime with the same interval share one, in slots an eighth of the interval
wide (:class:`_Schedule`). Opening and closing a connection then only adds it to a
set and takes it out, where a timer per connection cost an event-loop watcher, its
start and its stop; most connections end before their first ping. A ping goes out
between ``interval`` and ``interval * 9/8`` after the last.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from typing import Protocol

from ._runtime import Runtime, Timer, os_lock

__all__ = ["Keepalive", "Pinged"]

logger = logging.getLogger("wsgiws")


class Pinged(Protocol):
    """What keepalive needs of a connection."""

    @property
    def bytes_received(self) -> int:
        """Bytes received from the peer so far (any byte proves it alive)."""

    def keepalive_ping(self, timeout: float) -> bool:
        """Send a ping, waiting at most ``timeout`` for a busy writer; False once closed."""

    def keepalive_poll(self) -> None:
        """Take what the peer sent meanwhile, without blocking (nobody may be reading)."""

    def keepalive_failed(self, why: str) -> None:
        """The peer is judged gone: fail the connection (1011)."""


class Keepalive:
    """Every ``interval`` seconds a ping; ``timeout`` seconds later, nothing received fails
    the connection. ``timeout`` None only pings (to keep proxies from idling it out)."""

    __slots__ = ("_runtime", "_slot", "_stopped", "_target", "_timer", "interval", "timeout")

    def __init__(
        self, runtime: Runtime, target: Pinged, interval: float, timeout: float | None
    ) -> None:
        self._runtime = runtime
        self._target = target
        self.interval = interval
        self.timeout = timeout
        self._timer: Timer | None = None
        self._slot: set[Keepalive] | None = None  # where it waits in its _Schedule
        self._stopped = False

    def start(self) -> None:
        """Ping in ``interval`` seconds (up to an eighth more: the schedule's slot)."""
        key = (self._runtime, self.interval)
        schedule = _schedules.get(key)
        if schedule is None:
            schedule = _schedules.setdefault(key, _Schedule(self._runtime, self.interval))
        self._slot = schedule.join(self)

    def stop(self) -> None:
        self._stopped = True
        slot = self._slot
        if slot is not None:
            self._slot = None
            slot.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _ping(self) -> None:
        try:
            self._slot = None
            if self._stopped:
                return
            target = self._target
            seen = target.bytes_received
            if not target.keepalive_ping(self.timeout or self.interval):
                return
            if self._stopped:
                return
            if self.timeout:
                self._timer = self._runtime.call_later(self.timeout, lambda: self._judge(seen))
            else:
                self.start()
        except Exception:  # a bug here must not end keepalive without a word
            logger.exception("wsgiws: keepalive ping failed")

    def _judge(self, seen: int) -> None:
        try:
            self._timer = None
            if self._stopped:
                return
            target = self._target
            if target.bytes_received == seen:
                target.keepalive_poll()
            if self._stopped:
                return
            if target.bytes_received == seen:
                target.keepalive_failed("no pong within the keepalive timeout")
            else:
                self.start()
        except Exception:
            logger.exception("wsgiws: keepalive check failed")


#: A ping may come this fraction of its interval late: the width of a schedule's slots.
SLOTS_PER_INTERVAL = 8


class _Schedule:
    """The pending pings of one runtime's connections with one interval, on one timer.

    A keepalive joins the slot that is filling (a set: joining and leaving cost no
    clock and no lock). The timer ticks every ``interval / SLOTS_PER_INTERVAL``
    seconds while any slot has members: each tick closes the filling slot, starts a
    new one, and takes the slot closed ``SLOTS_PER_INTERVAL`` ticks ago; each of its
    members pings on a greenlet or thread of its own (a ping may wait for a busy
    writer). A member joined between the tick before its slot closed and that tick, so
    it pings between ``interval`` and ``interval`` plus one slot after it joined.
    """

    __slots__ = ("_closed", "_lock", "_runtime", "_ticking", "_width", "filling")

    def __init__(self, runtime: Runtime, interval: float) -> None:
        self._runtime = runtime
        self._width = interval / SLOTS_PER_INTERVAL
        #: The slot new keepalives join.
        self.filling: set[Keepalive] = set()
        #: Closed slots, oldest first, waiting for their pings.
        self._closed: deque[set[Keepalive]] = deque()
        self._ticking = False
        # Taken by the tick and by a join that finds the timer stopped: one OS lock
        # serves greenlets and the threads of thread mode (whose timer fires on a thread).
        self._lock = os_lock()

    def join(self, keepalive: Keepalive) -> set[Keepalive]:
        """Schedule ``keepalive``'s ping; the slot it joined (to leave it)."""
        slot = self.filling
        slot.add(keepalive)
        # Read after joining: a tick that stops the timer looks at the slots after it
        # clears the flag (see _tick), so one of the two sees the other.
        if not self._ticking:
            with self._lock:
                if slot is not self.filling and not any(s is slot for s in self._closed):
                    # (thread mode) A tick closed our slot and, finding every slot still
                    # empty, stopped and dropped them all before our add: join afresh.
                    slot.discard(keepalive)
                    slot = self.filling
                    slot.add(keepalive)
                if not self._ticking:
                    self._ticking = True
                    self._runtime.call_later(self._width, self._tick)
        return slot

    def _tick(self) -> None:
        with self._lock:
            closed = self._closed
            closed.append(self.filling)
            self.filling = set()
            due = list(closed.popleft()) if len(closed) > SLOTS_PER_INTERVAL else []
            self._ticking = False
            if self.filling or any(closed):  # (a join may have come meanwhile: thread mode)
                self._ticking = True
                self._runtime.call_later(self._width, self._tick)
            else:
                closed.clear()  # nothing waits: the next join starts afresh
        spawn = self._runtime.spawn
        for keepalive in due:
            if not keepalive._stopped:
                spawn(keepalive._ping)

    def pending(self) -> int:
        """Keepalives waiting for their ping here (for tests)."""
        with self._lock:
            return len(self.filling) + sum(len(slot) for slot in self._closed)


_schedules: dict[tuple[Runtime, float], _Schedule] = {}


if hasattr(os, "register_at_fork"):
    # A forked worker has its own event loop: the parent's timers never fire there.
    os.register_at_fork(after_in_child=_schedules.clear)
