"""The connection layer: a :class:`WebSocket` over a (green) socket.

One instance is one connection. Reading happens in whichever greenlet asks for
something (a message, a pong, the peer's close), under a read lock, so an idle
connection costs no greenlet of its own; keepalive uses timers. Sends are
serialized by a send lock and always write whole frames.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from . import drain as _drain
from ._runtime import Lock, Runtime, Timer, runtime_for
from .exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    PolicyViolation,
    ReceiveTimeout,
)
from .observer import ConnectionObserver
from .protocol import (
    OK_CLOSE_CODES,
    Buffer,
    Close,
    CloseCode,
    Extension,
    Message,
    Pong,
    Protocol,
    ProtocolFailure,
    Role,
)

__all__ = ["WebSocket"]

logger = logging.getLogger("wsgiws")

#: Opens the connection: sends the 101 (server) and returns the socket and any
#: bytes the peer sent behind its handshake that were already read.
Opener = Callable[["WebSocket"], "tuple[socket.socket, bytes]"]

_READ_SIZE: Final = 65536
_MAX_READ_SIZE: Final = 1 << 18  # one read of a large frame's payload takes at most this
_YIELD_EVERY: Final = 16  # messages handed out between forced yields to other connections
#: Most bytes of frames held back to go out with the next write (see WebSocket._cork).
_CORK_LIMIT: Final = 65536
#: Buffers per sendmsg call (the system's limit, IOV_MAX, is 1024 on Linux).
_MAX_PARTS: Final = 256


class WebSocket:
    """A WebSocket connection, handed to handlers (server) or returned by ``connect`` (client).

    Thread- and greenlet-safe: several greenlets may send, receive and ping at once.

    Server-side a handler's WebSocket starts unaccepted: the first ``receive``,
    ``send`` or ``ping`` accepts it (answers ``101``), or call :meth:`accept`
    explicitly, e.g. to pick a subprotocol. Until then a handler may still
    refuse the request with an HTTP response (``raise Reject(403)``, or
    ``abort(403)`` in Flask).
    """

    # Slots keep an idle connection small; ``__dict__`` still takes any other attribute
    # (an application's own, or one added here without a slot).
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_bytes_in",
        "_close_callbacks",
        "_closed",
        "_closing_started",
        "_corked",
        "_corked_size",
        "_handed_out",
        "_incoming",
        "_keepalive_timer",
        "_opener",
        "_pending_failure",
        "_ping_sent_at",
        "_pong_waiters",
        "_proto",
        "_raw_sock",
        "_read_lock",
        "_read_waiters",
        "_rt",
        "_send_lock",
        "_sock",
        "close_code",
        "close_reason",
        "close_timeout",
        "environ",
        "extension",
        "latency",
        "max_fragments",
        "max_message_size",
        "observer",
        "offered_subprotocols",
        "ping_interval",
        "ping_timeout",
        "role",
        "subprotocol",
    )

    def __init__(
        self,
        *,
        role: Role = Role.SERVER,
        environ: Mapping[str, Any] | None = None,
        subprotocol: str | None = None,
        offered_subprotocols: Iterable[str] = (),
        extension: Extension | None = None,
        max_message_size: int | None = 1 << 20,
        max_fragments: int | None = None,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float = 10.0,
        opener: Opener | None = None,
        sock: socket.socket | None = None,
        leftover: bytes = b"",
        observer: ConnectionObserver | None = None,
    ) -> None:
        self.role = role
        #: The WSGI environ of the upgrade request (empty for a client).
        self.environ: Mapping[str, Any] = environ if environ is not None else {}
        #: The negotiated subprotocol, or None.
        self.subprotocol = subprotocol
        self.offered_subprotocols = list(offered_subprotocols)
        self.extension = extension
        self.max_message_size = max_message_size
        self.max_fragments = max_fragments
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        #: Close code and reason once closed (see :class:`ConnectionClosed` for their meaning).
        self.close_code: int | None = None
        self.close_reason: str = ""
        self._opener = opener
        #: Told about opening, messages, pongs and the end (see :mod:`wsgiws.observer`).
        self.observer = observer
        #: The round trip of the last ping answered, in seconds (0.0 until one is).
        self.latency = 0.0
        self._ping_sent_at: float | None = None
        self._sock: socket.socket | None = None
        self._raw_sock: socket.socket | None = None  # see Runtime.raw_socket
        self._corked: list[Buffer] | None = None  # frames not written yet (see _cork)
        self._corked_size = 0
        self._proto: Protocol | None = None
        self._rt: Runtime | None = None
        # Messages received, not yet handed out: () while there are none to save memory.
        self._incoming: deque[str | bytes] | tuple[()] = ()
        self._closed = False
        self._closing_started = False
        self._bytes_in = 0
        self._handed_out = 0
        self._pending_failure: ProtocolFailure | None = None
        self._read_waiters = 0
        self._pong_waiters: list[tuple[bytes, list[bool]]] = []
        self._keepalive_timer: Timer | None = None
        self._close_callbacks: list[Callable[[WebSocket], object]] | None = None
        self._read_lock: Lock
        self._send_lock: Lock
        if sock is not None:
            self._open(sock, leftover)

    # ----------------------------------------------------------------- opening

    @property
    def accepted(self) -> bool:
        return self._proto is not None

    def accept(self, subprotocol: str | None = None) -> None:
        """Answer the handshake (``101``) and open the connection; a no-op once open.

        ``subprotocol`` overrides the one chosen from the route's list; it must
        be one the client offered.
        """
        if self._proto is not None:
            return
        if self._opener is None:
            raise RuntimeError("this WebSocket has no handshake to answer")
        if subprotocol is not None:
            if subprotocol not in self.offered_subprotocols:
                raise ValueError(f"the client did not offer subprotocol {subprotocol!r}")
            self.subprotocol = subprotocol
        opener, self._opener = self._opener, None
        sock, leftover = opener(self)
        self._open(sock, leftover)

    def _open(self, sock: socket.socket, leftover: bytes) -> None:
        rt = runtime_for(sock)
        self._rt = rt
        self._read_lock = rt.lock()
        self._send_lock = rt.lock()
        self._sock = sock
        self._raw_sock = rt.raw_socket(sock)
        self._proto = Protocol(
            self.role,
            max_message_size=self.max_message_size,
            max_fragments=self.max_fragments,
            extension=self.extension,
        )
        if self.ping_interval:
            self._keepalive_timer = rt.call_later(self.ping_interval, self._keepalive_ping)
        if self.role is Role.SERVER:
            _drain.register(self)
        if self.observer is not None:
            self.observer.opened(self)
        if leftover:
            self._feed(leftover)

    def _ensure_open(self) -> Protocol:
        if self._proto is None:
            self.accept()
        assert self._proto is not None
        return self._proto

    # ----------------------------------------------------------------- receive

    def receive(self, timeout: float | None = None) -> str | bytes:
        """The next message: ``str`` for text, ``bytes`` for binary.

        Raises :class:`ReceiveTimeout` after ``timeout`` seconds without one (the
        connection stays usable), :class:`ConnectionClosedOK` after a normal
        close and :class:`ConnectionClosedError` after any other end.
        """
        incoming = self._incoming
        if not incoming:
            incoming = ()  # holds no reference to a deque while blocked in _read
            if self._proto is None:
                self.accept()
            deadline = None if timeout is None else time.monotonic() + timeout
            if self._corked is not None:
                self._flush_cork()  # replies must not wait for the peer's next message
            while not self._incoming:
                if self._closed:
                    raise self._closed_exception()
                if self._pending_failure is not None:
                    self._fail(self._pending_failure)
                    continue
                self._read(deadline)
            incoming = self._incoming
        message = incoming.popleft()  # before yielding: another receiver may run meanwhile
        self._handed_out += 1
        if self._handed_out >= _YIELD_EVERY:
            # A peer that keeps our buffer full never makes recv block; yield anyway.
            self._handed_out = 0
            if self._corked is not None:
                self._flush_cork()
            assert self._rt is not None
            self._rt.cooperate()
        return message

    def __iter__(self) -> Iterator[str | bytes]:
        """Messages until the connection closes; a normal close ends the loop quietly."""
        while True:
            try:
                yield self.receive()
            except ConnectionClosedOK:
                return

    def _read(self, deadline: float | None) -> None:
        """Read once from the socket (or wait for the greenlet that is reading)."""
        lock = self._read_lock
        if not lock.acquire(blocking=False):
            self._read_waiters += 1
            try:
                if deadline is None:
                    lock.acquire()
                elif not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    raise ReceiveTimeout
            finally:
                self._read_waiters -= 1
        try:
            if self._incoming or self._closed or self._pending_failure is not None:
                return
            assert self._rt is not None and self._sock is not None
            raw = self._raw_sock
            size = _READ_SIZE
            pending = self._proto.payload_pending if self._proto is not None else 0
            if pending > _READ_SIZE:
                size = min(pending, _MAX_READ_SIZE)
            try:
                if raw is None:
                    timeout = None if deadline is None else deadline - time.monotonic()
                    data = self._rt.recv(self._sock, size, timeout)
                else:
                    while True:
                        try:
                            data = raw.recv(size)
                            break
                        except BlockingIOError:
                            self._handed_out = 0  # we wait: other connections get their turn
                            self._incoming = ()  # and may stay idle: drop the empty deque
                            timeout = None if deadline is None else deadline - time.monotonic()
                            self._rt.wait_readable(self._sock, timeout)
            except TimeoutError:
                raise ReceiveTimeout from None
            except OSError as exc:
                self._connection_lost(f"socket error: {exc}", reading=True)
                return
            if not data:
                self._connection_lost("the peer closed TCP without a close frame", reading=True)
                return
            self._feed(data)
        finally:
            lock.release()
            if self._read_waiters and self._rt is not None:
                self._rt.cooperate()  # hand the lock over to the waiting greenlet

    def _feed(self, data: bytes) -> None:
        proto = self._proto
        assert proto is not None
        self._bytes_in += len(data)
        events = proto.receive_data(data)
        if proto.owes_data:
            self._flush_owed(wait=False)
        for event in events:
            if type(event) is Message:
                if self.observer is not None and not self._closing_started:
                    payload = event.data
                    if type(payload) is bytes or payload.isascii():
                        size = len(payload)
                    else:
                        size = _payload_size(payload)
                    try:
                        if not self.observer.message_received(self, type(payload) is str, size):
                            continue  # dropped
                    except PolicyViolation as exc:
                        self._policy_violated(exc)
                        continue
                if not self._closing_started:
                    if not self._incoming:
                        self._incoming = deque()
                    self._incoming.append(event.data)
            elif type(event) is Pong:
                self._pong_arrived(event.payload)
                if self._ping_sent_at is not None:
                    self.latency = time.monotonic() - self._ping_sent_at
                    self._ping_sent_at = None
                    if self.observer is not None:
                        self.observer.pong_received(self, self.latency)
            elif type(event) is Close:
                self._peer_closed(event)
            elif type(event) is ProtocolFailure:
                logger.info("WebSocket %s failed (%d): %s", self._path(), event.code, event.reason)
                if self._incoming:
                    # Messages that came before the fault are delivered first (and may be
                    # answered); the connection fails once they are taken.
                    self._pending_failure = event
                else:
                    self._fail(event, reading=True)

    def _policy_violated(self, exc: PolicyViolation) -> None:
        """The observer refused a message: close with its code once earlier ones are taken."""
        failure = ProtocolFailure(exc.code, exc.reason)
        if self._incoming:  # delivered first, as with a protocol failure
            self._pending_failure = failure
            self._closing_started = True
        else:
            self._fail(failure, reading=True)

    def _fail(self, failure: ProtocolFailure, *, reading: bool = False) -> None:
        """Fail the connection: a close frame with the failure's code, then end TCP."""
        self._pending_failure = None
        proto = self._proto
        assert proto is not None
        if self._send_lock.acquire(timeout=self.close_timeout):
            try:
                frame = proto.send_close(failure.code, failure.reason)
                if frame:
                    self._write(frame)
            except ConnectionClosed:
                pass
            finally:
                self._send_lock.release()
        self._finish(failure.code, failure.reason, reading=reading)

    def _flush_owed(self, *, wait: bool) -> None:
        """Write the pongs or close reply the engine owes the peer.

        Without ``wait``, a busy send lock means a sender is writing: it flushes
        them when it is done (see :meth:`send`), and reading goes on meanwhile.
        """
        lock = self._send_lock
        if not (lock.acquire(timeout=self.close_timeout) if wait else lock.acquire(blocking=False)):
            return
        try:
            assert self._proto is not None
            owed = self._proto.data_to_send()
            if owed:
                self._write(owed)
        except ConnectionClosed:
            pass
        finally:
            lock.release()

    def _pong_arrived(self, payload: bytes) -> None:
        # A pong answers the ping with its payload and, implicitly, every earlier ping.
        waiters = self._pong_waiters
        for index, (expected, _) in enumerate(waiters):
            if expected == payload:
                for _, earlier in waiters[: index + 1]:
                    earlier.append(True)
                del waiters[: index + 1]
                break

    def _peer_closed(self, close: Close) -> None:
        proto = self._proto
        assert proto is not None
        if proto.owes_data:  # our close reply must go out before TCP ends
            self._flush_owed(wait=True)
        if proto.close_sent is not None and proto.close_sent.code not in (close.code, 1005):
            # We closed first: our code is the one that describes this connection.
            self._finish(proto.close_sent.code, proto.close_sent.reason, reading=True)
        else:
            self._finish(close.code, close.reason, reading=True)

    # -------------------------------------------------------------------- send

    def send(self, message: str | bytes | bytearray | memoryview) -> None:
        """Send one message: text for ``str``, binary for bytes-like."""
        proto = self._proto
        if proto is None:
            proto = self._ensure_open()
        with self._send_lock:
            try:
                parts = proto.send_message_parts(message)
            except RuntimeError:
                raise self._closed_exception() from None
            if len(parts) > 1:
                self._write_parts(parts)
            elif (
                self._incoming
                and self._raw_sock is not None
                and self._corked_size + len(parts[0]) <= _CORK_LIMIT
            ):
                self._cork(parts[0])
            else:
                self._write(parts[0])
        if self.observer is not None:
            text = type(message) is str
            if type(message) is bytes or (text and message.isascii()):  # type: ignore[union-attr]
                size = len(message)
            else:
                size = _payload_size(message)
            self.observer.message_sent(self, text, size)
        if proto.owes_data:  # a reader left pongs for us while we held the lock
            self._flush_owed(wait=False)

    def send_stream(self, chunks: Iterable[str | bytes]) -> None:
        """Send an iterable of chunks as one fragmented message (all ``str`` or all bytes).

        Other senders wait until the whole message is out, as the protocol requires.
        """
        proto = self._ensure_open()
        stream_broken = False
        try:
            with self._send_lock:
                previous: str | bytes | None = None
                kind: type | None = None
                try:
                    for chunk in chunks:
                        if kind is None:
                            kind = str if isinstance(chunk, str) else bytes
                        elif isinstance(chunk, str) != (kind is str):
                            raise TypeError("a streamed message mixes text and binary chunks")
                        if previous is not None:
                            self._write(proto.send_fragment(previous, fin=False))
                        previous = chunk
                    if previous is None:
                        previous = ""  # an empty iterable sends an empty text message
                    self._write(proto.send_fragment(previous, fin=True))
                except ConnectionClosed:
                    raise
                except BaseException:
                    if proto.close_sent is not None or self._closed:
                        raise self._closed_exception() from None
                    if proto.streaming:
                        # Half a message is on the wire and only its continuation may follow:
                        # the connection cannot go on. Say so, then end it.
                        stream_broken = True
                        try:
                            self._write(proto.send_close(CloseCode.INTERNAL_ERROR, "stream failed"))
                        except ConnectionClosed:
                            pass
                    raise
        finally:
            if stream_broken:
                self._finish(CloseCode.INTERNAL_ERROR, "a streamed message failed midway")

    def ping(self, payload: bytes = b"") -> PongWaiter:
        """Send a ping; the returned waiter's ``wait(timeout)`` is True once its pong came."""
        proto = self._ensure_open()
        flag: list[bool] = []
        with self._send_lock:
            try:
                frame = proto.send_ping(payload)
            except RuntimeError:
                raise self._closed_exception() from None
            self._pong_waiters.append((payload, flag))
            if self._ping_sent_at is None:
                self._ping_sent_at = time.monotonic()
            self._write(frame)
        return PongWaiter(self, flag)

    def _cork(self, frame: Buffer) -> None:
        """Hold ``frame`` back to go out with the next write; the send lock is held.

        Only while the handler still has received messages to take (it is answering
        a batch of pipelined messages): their replies then leave in one system call
        instead of one each. The next write, the next read from the socket, a fairness
        yield or, failing all those, a hub callback writes them.
        """
        if self._corked is None:
            self._corked = [frame]
            assert self._rt is not None
            self._rt.call_soon(self._cork_deadline)
        else:
            self._corked.append(frame)
        self._corked_size += len(frame)

    def _cork_deadline(self) -> None:
        # Runs in the event loop once this greenlet blocked or yielded: must not block here.
        if self._corked is not None and self._rt is not None:
            self._rt.spawn(self._flush_cork)

    def _flush_cork(self) -> None:
        try:
            with self._send_lock:
                if self._corked is not None:
                    self._write(b"")
        except ConnectionClosed:
            pass

    def _write(self, data: Buffer) -> None:
        """Write held-back frames, then all of ``data``; the send lock is held."""
        assert self._sock is not None
        if self._corked is not None:
            self._corked.append(data)
            data = b"".join(self._corked)
            self._corked = None
            self._corked_size = 0
        try:
            raw = self._raw_sock
            if raw is not None:
                try:
                    sent = raw.send(data)
                except BlockingIOError:
                    sent = 0
                if sent == len(data):
                    return
                data = memoryview(data)[sent:]  # the rest waits for room in the send buffer
            self._sock.sendall(data)
        except OSError as exc:
            self._connection_lost(f"socket error while sending: {exc}")
            raise self._closed_exception() from None

    def _write_parts(self, parts: list[Buffer]) -> None:
        """Write ``parts`` (a frame's header and payload, or several frames) without joining
        them; the send lock is held."""
        assert self._sock is not None
        if self._corked is not None:
            parts = [b"".join(self._corked), *parts]
            self._corked = None
            self._corked_size = 0
        raw = self._raw_sock
        try:
            for start in range(0, len(parts), _MAX_PARTS):
                group = parts[start : start + _MAX_PARTS]
                sent = 0
                if raw is not None:
                    try:
                        sent = raw.sendmsg(group)
                    except BlockingIOError:
                        pass
                for part in group:
                    size = len(part)
                    if sent >= size:
                        sent -= size
                        continue
                    self._sock.sendall(memoryview(part)[sent:] if sent else part)
                    sent = 0
        except OSError as exc:
            self._connection_lost(f"socket error while sending: {exc}")
            raise self._closed_exception() from None

    # ------------------------------------------------------------------- close

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close the connection: send a close frame, wait up to ``close_timeout``
        for the peer's, then end TCP. Does nothing if already closed."""
        if self._closed:
            return
        proto = self._ensure_open()
        if self._pending_failure is not None:
            self._fail(self._pending_failure)
            return
        deadline = time.monotonic() + self.close_timeout
        acquired = self._send_lock.acquire(timeout=self.close_timeout)
        if not acquired:
            # A send is stuck behind a peer that does not read: no clean close is possible.
            self._finish(CloseCode.ABNORMAL, "send blocked while closing")
            return
        try:
            frame = proto.send_close(code, reason)
            self._closing_started = True
            if frame:
                try:
                    self._write(frame)
                except ConnectionClosed:
                    return
        finally:
            self._send_lock.release()
        self._wait(lambda: self._closed, deadline)
        if not self._closed:
            self._finish(code, reason)

    def _wait(self, condition: Callable[[], bool], deadline: float) -> bool:
        """Read until ``condition()`` holds or ``deadline`` passes."""
        while not condition():
            if self._closed or time.monotonic() >= deadline:
                return condition()
            try:
                self._read(deadline)
            except ReceiveTimeout:
                return condition()
        return True

    def _finish(self, code: int, reason: str, *, reading: bool = False) -> None:
        """The WebSocket is over: record how, and end TCP.

        ``reading``: the caller holds the read lock (so it may drain the socket).
        """
        if self._closed:
            return
        we_closed_first = self._closing_started
        self._closed = True
        self._closing_started = True
        self.close_code = code
        self.close_reason = reason
        _drain.unregister(self)
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
            self._keepalive_timer = None
        self._run_close_callbacks()
        if self.observer is not None:
            proto = self._proto
            self.observer.closed(
                self,
                code,
                reason,
                "abnormal"
                if code == CloseCode.ABNORMAL
                else "local"
                if we_closed_first or proto is None or proto.close_received is None
                else "remote",
            )
        self._end_tcp(reading)

    def add_close_callback(self, callback: Callable[[WebSocket], object]) -> None:
        """Call ``callback(ws)`` once when the connection ends (at once if it has).

        Callbacks run in whichever greenlet or thread ends the connection and
        must not block; an exception in one is logged and the others still run.
        """
        if self._closed:
            self._call_close_callback(callback)
            return
        if self._close_callbacks is None:
            self._close_callbacks = []
        self._close_callbacks.append(callback)

    def remove_close_callback(self, callback: Callable[[WebSocket], object]) -> None:
        if self._close_callbacks and callback in self._close_callbacks:
            self._close_callbacks.remove(callback)

    def _run_close_callbacks(self) -> None:
        callbacks, self._close_callbacks = self._close_callbacks, None
        for callback in callbacks or ():
            self._call_close_callback(callback)

    def _call_close_callback(self, callback: Callable[[WebSocket], object]) -> None:
        try:
            callback(self)
        except Exception:
            logger.exception("close callback %r of WebSocket %s raised", callback, self._path())

    def _connection_lost(self, why: str, *, reading: bool = False) -> None:
        if not self._closed:
            logger.debug("WebSocket %s: %s", self._path(), why)
            self._finish(CloseCode.ABNORMAL, why, reading=reading)

    def _end_tcp(self, reading: bool) -> None:
        """End TCP without losing our close frame to a reset.

        The server ends TCP first (RFC 6455 7.1.1): it half-closes, then reads
        until the client's FIN, briefly. The client waits for the server's FIN
        (up to ``close_timeout``), then closes its socket. If another greenlet is
        reading the socket, we only shut it down, which wakes that reader.
        ``reading``: the caller holds the read lock.
        """
        sock = self._sock
        if sock is None:
            return
        server = self.role is Role.SERVER
        if server and self._proto is not None and self._proto.close_received is not None:
            # The peer sent its close frame, so it sends nothing more: no unread data can
            # turn our close into a reset. End at once (no half-close, no drain).
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if server:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                return
        may_read = reading or self._read_lock.acquire(blocking=False)
        try:
            if may_read:
                self._read_until_eof(
                    sock, min(self.close_timeout, 2.0) if server else self.close_timeout
                )
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            if not server and may_read:
                sock.close()  # the client owns its socket; a server's belongs to the WSGI server
        finally:
            if may_read and not reading:
                self._read_lock.release()

    def _read_until_eof(self, sock: socket.socket, seconds: float) -> None:
        """Read and drop whatever arrives until the peer's FIN or ``seconds`` pass."""
        assert self._rt is not None
        deadline = time.monotonic() + seconds
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._rt.recv(sock, _READ_SIZE, remaining):
                    return
        except (OSError, TimeoutError):
            pass

    def _closed_exception(self) -> ConnectionClosed:
        code = self.close_code if self.close_code is not None else CloseCode.ABNORMAL
        cls = ConnectionClosedOK if code in OK_CLOSE_CODES else ConnectionClosedError
        return cls(code, self.close_reason)

    @property
    def closed(self) -> bool:
        return self._closed

    # --------------------------------------------------------------- keepalive

    def _keepalive_ping(self) -> None:
        """Runs every ``ping_interval``: ping, then judge the peer after ``ping_timeout``."""
        if self._closed or self._proto is None:
            return
        self._keepalive_timer = None
        timeout = self.ping_timeout
        seen = self._bytes_in
        if not self._send_lock.acquire(timeout=timeout or self.ping_interval or 20.0):
            self._keepalive_failed("a send has been blocked longer than the keepalive timeout")
            return
        try:
            frame = self._proto.send_ping(b"")
            if self._ping_sent_at is None:
                self._ping_sent_at = time.monotonic()
            self._write(frame)
        except (RuntimeError, ConnectionClosed):
            return
        finally:
            self._send_lock.release()
        assert self._rt is not None
        if timeout:
            self._keepalive_timer = self._rt.call_later(
                timeout, lambda: self._keepalive_check(seen)
            )
        else:
            self._schedule_ping()

    def _keepalive_check(self, seen: int) -> None:
        if self._closed:
            return
        self._keepalive_timer = None
        if self._bytes_in == seen and self._read_lock.acquire(blocking=False):
            # Nobody is reading: look at what the peer sent without blocking.
            try:
                assert self._rt is not None and self._sock is not None
                if len(self._incoming) < 256:
                    data = self._rt.recv(self._sock, _READ_SIZE, 0.0)
                    if data:
                        self._feed(data)
                    else:
                        self._connection_lost(
                            "the peer closed TCP without a close frame", reading=True
                        )
                elif self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                    self._bytes_in += 1  # unread data proves the peer was alive
            except (OSError, TimeoutError):
                pass
            finally:
                self._read_lock.release()
        if self._closed:
            return
        if self._bytes_in == seen:
            self._keepalive_failed("no pong within the keepalive timeout")
        else:
            self._schedule_ping()

    def _schedule_ping(self) -> None:
        if not self._closed and self.ping_interval and self._rt is not None:
            self._keepalive_timer = self._rt.call_later(self.ping_interval, self._keepalive_ping)

    def _keepalive_failed(self, why: str) -> None:
        logger.info("WebSocket %s: %s; closing with 1011", self._path(), why)
        proto = self._proto
        assert proto is not None
        if self._send_lock.acquire(blocking=False):
            try:
                frame = proto.send_close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                if frame and self._sock is not None:
                    self._sock.settimeout(1.0)
                    self._sock.sendall(frame)
            except (OSError, RuntimeError):
                pass
            finally:
                self._send_lock.release()
        self._finish(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
        if self._sock is not None:
            try:  # wake a greenlet blocked on this socket
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ------------------------------------------------------------------- misc

    def _path(self) -> str:
        return str(self.environ.get("PATH_INFO", "")) or "(client)"

    @property
    def path(self) -> str:
        """The request path (``PATH_INFO``) of the upgrade request."""
        return str(self.environ.get("PATH_INFO", ""))

    def __enter__(self) -> WebSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._proto else "unaccepted"
        return f"<WebSocket {self._path()} {state}>"


class PongWaiter:
    """Returned by :meth:`WebSocket.ping`."""

    __slots__ = ("_flag", "_ws")

    def __init__(self, ws: WebSocket, flag: list[bool]) -> None:
        self._ws = ws
        self._flag = flag

    def wait(self, timeout: float | None = None) -> bool:
        """Wait (reading the connection if nobody else is) until the pong arrives."""
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        return self._ws._wait(lambda: bool(self._flag), deadline)


def _payload_size(data: str | bytes | bytearray | memoryview) -> int:
    if type(data) is str:
        return len(data) if data.isascii() else len(data.encode())
    return memoryview(data).nbytes if type(data) is memoryview else len(data)
