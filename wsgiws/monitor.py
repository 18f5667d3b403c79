"""The observer the middleware gives every WebSocket: logs, metrics and limits in one.

One object per connection (one observer call per message, not one per concern),
built by :func:`wsgiws.middleware.run_session` from the route's options.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from . import connlog, drain
from .exceptions import PolicyViolation
from .handshake import Reject
from .limits import IdleTimer, TokenBucket
from .metrics import metrics
from .observer import CloseInitiator

if TYPE_CHECKING:
    from .middleware import WebSocketOptions
    from .protocol import Protocol
    from .websocket import WebSocket

__all__ = ["SessionObserver", "refused"]

logger = connlog.logger

#: With ``rate_limit_action="drop"``: at most one warning per connection this often.
DROP_WARNING_INTERVAL: Final = 10.0


class SessionObserver:
    """Counts, logs and limits one server-side connection (a ConnectionObserver), and keeps
    it registered with the drain while it is open."""

    __slots__ = (
        "byte_bucket",
        "checks",
        "client",
        "debug",
        "drop",
        "dropped",
        "extension",
        "id",
        "idle",
        "idle_timeout",
        "message_bucket",
        "not_delivered",
        "not_delivered_bytes",
        "per_message",
        "started",
        "traffic",
        "warned",
        "with_query",
    )

    def __init__(
        self,
        environ: Mapping[str, Any],
        options: WebSocketOptions,
        client: str,
        extension: str | None = None,
    ) -> None:
        self.extension = extension  # the Sec-WebSocket-Extensions answer, for the open line
        self.id = str(environ.get(connlog.ENVIRON_CONNECTION_ID, "-"))
        self.client = client
        self.with_query = options.log_query_string
        self.message_bucket = (
            None if options.message_rate is None else TokenBucket(options.message_rate)
        )
        self.byte_bucket = None if options.byte_rate is None else TokenBucket(options.byte_rate)
        self.drop = options.rate_limit_action == "drop"
        self.idle_timeout = options.idle_timeout
        self.idle: IdleTimer | None = None
        #: Anything to do per message beyond counting? (one test on the hot path)
        self.checks = bool(self.message_bucket or self.byte_bucket or self.idle_timeout)
        self.dropped = 0
        # Messages a limit kept from the application (dropped, or the one that closed it).
        self.not_delivered = self.not_delivered_bytes = 0
        self.warned = 0.0
        self.started = 0.0
        self.debug = False
        #: Called per message only to limit or to log at DEBUG; the engine does the counting.
        self.per_message = self.checks
        self.traffic: Protocol | None = None  # the engine's counters, once open

    def opened(self, ws: WebSocket) -> None:
        self.started = time.monotonic()
        self.traffic = ws.traffic
        metrics.opened(self.traffic)
        drain.register(ws)  # a drain (the worker stopping) closes it with 1001
        self.debug = logger.isEnabledFor(logging.DEBUG)  # read once: the hot path stays cheap
        self.per_message = self.checks or self.debug
        if self.debug:
            logger.debug(
                "ws %s opened %s subprotocol=%s extension=%s",
                self.id,
                self._request(ws),
                ws.subprotocol or "-",
                self.extension or "-",
                extra=connlog.extra(self.id),
            )
        if self.idle_timeout:
            self.idle = IdleTimer(ws, self.idle_timeout)

    def _request(self, ws: WebSocket) -> str:
        # Built when a line needs it: an idle connection holds no log text.
        return connlog.describe_request(ws.environ, self.client, self.with_query)

    def message_received(self, ws: WebSocket, text: bool, size: int) -> bool:
        if self.checks:
            now = time.monotonic()
            if self.idle is not None:
                self.idle.last = now
            if self.message_bucket is not None and not self.message_bucket.take(1, now):
                return self._over_limit(ws, "message_rate", size, now)
            if self.byte_bucket is not None and not self.byte_bucket.take(size, now):
                return self._over_limit(ws, "byte_rate", size, now)
        if self.debug:
            kind = "text" if text else "binary"
            logger.debug(
                "ws %s received %s %d B", self.id, kind, size, extra=connlog.extra(self.id)
            )
        return True

    def _over_limit(self, ws: WebSocket, limit: str, size: int, now: float) -> bool:
        metrics.limit(limit)
        metrics.not_delivered(size)
        self.not_delivered += 1
        self.not_delivered_bytes += size
        if not self.drop:
            logger.info(
                "ws %s closing with 1008: %s exceeded", self.id, limit, extra=connlog.extra(self.id)
            )
            raise PolicyViolation(f"{limit.replace('_', ' ')} exceeded")
        self.dropped += 1
        if now - self.warned >= DROP_WARNING_INTERVAL:
            self.warned = now
            logger.warning(
                "ws %s dropping messages: %s exceeded (%d dropped so far)",
                self.id,
                limit,
                self.dropped,
                extra=connlog.extra(self.id),
            )
        return False

    def message_sent(self, ws: WebSocket, text: bool, size: int) -> None:
        if self.idle is not None:
            self.idle.last = time.monotonic()
        if self.debug:
            kind = "text" if text else "binary"
            logger.debug("ws %s sent %s %d B", self.id, kind, size, extra=connlog.extra(self.id))

    def pong_received(self, ws: WebSocket, rtt: float) -> None:
        metrics.rtt(rtt)
        if self.debug:
            logger.debug(
                "ws %s pong after %.1f ms", self.id, rtt * 1000, extra=connlog.extra(self.id)
            )

    def closed(self, ws: WebSocket, code: int, reason: str, initiator: CloseInitiator) -> None:
        traffic = self.traffic
        if traffic is None:
            return  # never opened: nothing was counted or logged as open
        drain.unregister(ws)
        metrics.closed(traffic, code, initiator)
        if self.idle is not None:
            self.idle.cancel()
        if not logger.isEnabledFor(logging.INFO):
            return  # the line's arguments cost more than the check
        dropped = f", {self.dropped} dropped" if self.dropped else ""
        logger.info(
            "ws %s closed %d %r by %s after %.1f s; in %d msg %d B%s, out %d msg %d B; %s",
            self.id,
            code,
            reason,
            initiator,
            time.monotonic() - self.started,
            traffic.messages_in - self.not_delivered,
            traffic.bytes_in - self.not_delivered_bytes,
            dropped,
            traffic.messages_out,
            traffic.bytes_out,
            self._request(ws),
            extra=connlog.extra(self.id),
        )


def refused(environ: Mapping[str, Any], client: str, exc: BaseException, with_query: bool) -> None:
    """Count and log an upgrade request answered with an HTTP error instead of a 101."""
    status = exc.status if isinstance(exc, Reject) else int(getattr(exc, "code", 500) or 500)
    reason = exc.reason if isinstance(exc, Reject) else type(exc).__name__
    metrics.handshake(status)
    conn_id = str(environ.get(connlog.ENVIRON_CONNECTION_ID, "-"))
    logger.info(
        "ws %s refused %d %s: %s",
        conn_id,
        status,
        connlog.describe_request(environ, client, with_query),
        reason,
        extra=connlog.extra(conn_id),
    )
