"""Keepalive: ping an idle peer, and fail the connection when it stops answering.

Built on the runtime's timers; it works on whatever socket the connection has
(plain or TLS), because it only asks the connection, never the socket.
"""

from __future__ import annotations

import logging
from typing import Protocol

from ._runtime import Runtime, Timer

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

    __slots__ = ("_runtime", "_stopped", "_target", "_timer", "interval", "timeout")

    def __init__(
        self, runtime: Runtime, target: Pinged, interval: float, timeout: float | None
    ) -> None:
        self._runtime = runtime
        self._target = target
        self.interval = interval
        self.timeout = timeout
        self._timer: Timer | None = None
        self._stopped = False

    def start(self) -> None:
        self._timer = self._runtime.call_later(self.interval, self._ping)

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _ping(self) -> None:
        try:
            self._timer = None
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
