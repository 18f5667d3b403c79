"""The connection layer: a :class:`WebSocket` over a (green) socket.

One instance is one connection. The sans-I/O engine (:mod:`wsgiws.protocol`)
decides what goes on the wire and when the connection is over; this layer moves
bytes, arms timers and ends the socket. Reading happens in whichever greenlet
asks for something (a message, a pong, the peer's close), under a read lock, so
an idle connection costs no greenlet of its own; keepalive uses timers
(:mod:`wsgiws.keepalive`). Everything written leaves through :meth:`WebSocket._send`
and :meth:`WebSocket._flush`, under the send lock, through one
:class:`~wsgiws.writer.Writer`.
"""

from __future__ import annotations

import enum
import json
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final
from typing import Protocol as _Interface

from . import connlog
from ._runtime import Lock, Runtime, Timer, has_unread_data, runtime_for
from .exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidState,
    PolicyViolation,
    ReceiveTimeout,
)
from .keepalive import Keepalive
from .observer import ConnectionObserver
from .protocol import (
    OK_CLOSE_CODES,
    Close,
    CloseCode,
    Extension,
    FramedMessage,
    Message,
    Pong,
    Protocol,
    ProtocolFailure,
    Role,
    State,
)
from .writer import Writer

__all__ = ["ConnectionState", "Opener", "PongWaiter", "WebSocket"]


class Opener(_Interface):
    """Opens a server-side connection when it is accepted (the middleware's).

    Called with the WebSocket: answers the handshake and returns the socket, any
    bytes the peer sent behind its handshake that were already read, and the ``101``
    head when it is for the connection to write (as its first bytes; ``b""`` when the
    server wrote it). Writing it with the connection's own writer costs no second one.
    """

    def __call__(self, ws: WebSocket) -> tuple[socket.socket, bytes, bytes]: ...


class ConnectionState(enum.Enum):
    UNACCEPTED = "unaccepted"  #: server side, before the 101: still HTTP
    OPEN = "open"
    CLOSING = "closing"  #: a close frame went out or came in; the end is near
    CLOSED = "closed"  #: over: ``close_code`` says how


_READ_SIZE: Final = 65536
#: Messages kept for receive() that arrive after our close frame.
_CLOSING_BACKLOG: Final = 64
_MAX_READ_SIZE: Final = 1 << 18  # one read of a large frame's payload takes at most this
_YIELD_EVERY: Final = 16  # messages handed out between forced yields to other connections
#: Received messages kept unread beyond which keepalive stops reading (it only looks).
_KEEPALIVE_READ_LIMIT: Final = 256
# (Bound once: a member lookup on its enum class is slow on Python 3.11; see protocol.py.)
_CLOSED: Final = State.CLOSED
_OPEN: Final = State.OPEN
_SERVER: Final = Role.SERVER
_NORMAL: Final = CloseCode.NORMAL


def _payload_size(data: str | bytes | bytearray | memoryview) -> int:
    if isinstance(data, str):
        return len(data) if data.isascii() else len(data.encode("utf-8"))
    return data.nbytes if isinstance(data, memoryview) else len(data)


class WebSocket:
    """A WebSocket connection, handed to handlers (server) or returned by ``connect`` (client).

    Thread- and greenlet-safe: several greenlets may send, receive and ping at once.

    Server-side a handler's WebSocket starts unaccepted: the first ``receive``,
    ``send`` or ``ping`` accepts it (answers ``101``), or call :meth:`accept`
    explicitly, e.g. to pick a subprotocol. Until then a handler may still
    refuse the request with an HTTP response (``raise Reject(403)``, or
    ``abort(403)`` in Flask). Constructing one does no I/O.
    """

    # Slots keep an idle connection small; ``__dict__`` still takes any other attribute
    # (an application's own, or one added here without a slot).
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_bytes_in",
        "_close_callbacks",
        "_close_timer",
        "_drained",
        "_finished",
        "_handed_out",
        "_incoming",
        "_keepalive",
        "_leftover",
        "_opener",
        "_pending_failure",
        "_pong_waiters",
        "_proto",
        "_raw_sock",
        "_read_lock",
        "_read_waiters",
        "_rt",
        "_send_lock",
        "_sock",
        "_watch",
        "_writer",
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
        #: Told about this connection's life (see :mod:`wsgiws.observer`); set it before accepting.
        self.observer = observer
        #: Seconds the last keepalive (or ``ping()``) round trip took; 0.0 until one was measured.
        self.latency = 0.0
        #: Close code and reason once closed (see :class:`ConnectionClosed` for their meaning).
        self.close_code: int | None = None
        self.close_reason: str = ""
        self._opener = opener
        self._sock: socket.socket | None = None
        self._raw_sock: socket.socket | None = None  # see Runtime.raw_socket
        # The last recv on the raw socket returned less than it asked for (see _recv);
        # True at first: the peer's first frame comes after our 101, not with it.
        self._drained = True
        self._writer: Writer
        self._proto: Protocol | None = None
        # The observer when it wants a call per message (see ConnectionObserver.per_message).
        self._watch: ConnectionObserver | None = None
        self._rt: Runtime | None = None
        self._finished = False
        # Messages received, not yet handed out: () while there are none to save memory.
        self._incoming: deque[str | bytes] | tuple[()] = ()
        self._leftover = b""  # bytes read with the handshake, parsed by the first read
        self._bytes_in = 0
        self._handed_out = 0
        # A failure found behind messages not yet handed out: applied once they are taken.
        self._pending_failure: ProtocolFailure | None = None
        self._read_waiters = 0
        self._pong_waiters: list[tuple[bytes, float, list[bool]]] = []
        self._keepalive: Keepalive | None = None
        self._close_callbacks: list[Callable[[WebSocket], object]] | None = None
        self._close_timer: Timer | None = None  # bounds the wait for our close reply
        self._read_lock: Lock
        self._send_lock: Lock
        if sock is not None:
            self._open(sock, leftover)

    # ----------------------------------------------------------------- opening

    @property
    def state(self) -> ConnectionState:
        if self._finished:
            return ConnectionState.CLOSED
        if self._proto is None:
            return ConnectionState.UNACCEPTED
        proto = self._proto
        if proto.state is _OPEN and proto.close_received is None:
            return ConnectionState.OPEN
        return ConnectionState.CLOSING

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
            raise InvalidState("this WebSocket has no handshake to answer")
        if subprotocol is not None:
            if subprotocol not in self.offered_subprotocols:
                raise ValueError(f"the client did not offer subprotocol {subprotocol!r}")
            self.subprotocol = subprotocol
        opener, self._opener = self._opener, None
        sock, leftover, head = opener(self)
        self._open(sock, leftover, head)

    def _open(self, sock: socket.socket, leftover: bytes, head: bytes = b"") -> None:
        rt = runtime_for(sock)
        self._rt = rt
        self._read_lock = rt.lock()
        self._send_lock = rt.lock()
        self._sock = sock
        self._raw_sock = rt.raw_socket(sock)
        self._writer = Writer(sock, self._raw_sock)
        if head:
            # Before the engine exists: a peer gone meanwhile fails accept() with OSError,
            # and the connection was never open.
            self._writer.write([head])
        self._leftover = leftover
        self._proto = Protocol(
            self.role,
            max_message_size=self.max_message_size,
            max_fragments=self.max_fragments,
            extension=self.extension,
        )
        if self.ping_interval:
            self._keepalive = Keepalive(rt, self, self.ping_interval, self.ping_timeout)
            self._keepalive.start()
        observer = self.observer
        if observer is not None:
            observer.opened(self)
            if getattr(observer, "per_message", True):
                self._watch = observer

    @property
    def traffic(self) -> Protocol:
        """What passed so far, counted by the engine: ``messages_in``, ``bytes_in``,
        ``messages_out``, ``bytes_out`` (data messages, payload bytes before deflate).
        Open connections only."""
        if self._proto is None:
            raise InvalidState("the WebSocket is not accepted yet")
        return self._proto

    def _ensure_open(self) -> Protocol:
        if self._proto is None:
            self.accept()
        assert self._proto is not None
        return self._proto

    def spawn(self, func: Callable[[], object]) -> None:
        """Run ``func()`` in a new greenlet or thread, the way this connection does I/O.

        For code that acts on a connection from elsewhere (the hub's senders, the
        drain's closes) and must not block its caller. The connection must be open.
        """
        if self._rt is None:
            raise InvalidState("the WebSocket is not accepted yet")
        self._rt.spawn(func)

    # ----------------------------------------------------------------- receive

    def receive(self, timeout: float | None = None) -> str | bytes:
        """The next message: ``str`` for text, ``bytes`` for binary.

        Raises :class:`ReceiveTimeout` after ``timeout`` seconds without one (the
        connection stays usable), :class:`ConnectionClosedOK` after a normal
        close and :class:`ConnectionClosedError` after any other end.

        When the peer closes, the messages it sent before come first; reaching its
        close sends our reply (until then, sends still go out: the answers to them).
        """
        message = self._next_message(timeout)
        if message is None:
            raise self._closed_exception()
        return message

    def _next_message(self, timeout: float | None) -> str | bytes | None:
        """:meth:`receive`, but None once the connection is over: ending a loop over the
        messages costs no exception."""
        incoming = self._incoming
        if not incoming:
            incoming = ()  # holds no reference to a deque while blocked in _read
            proto = self._proto
            if proto is None:
                proto = self._ensure_open()
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._incoming:
                if self._finished:
                    return None
                if self._pending_failure is not None:
                    self._fail(self._pending_failure.code, self._pending_failure.reason)
                    continue
                if proto.close_pending:
                    # Everything the peer sent before its close is taken: answer it now.
                    self._send_close(proto, _NORMAL, "")
                    continue
                self._read(deadline, receiving=True)
            incoming = self._incoming
        message = incoming.popleft()  # before yielding: another receiver may run meanwhile
        self._handed_out += 1
        if self._handed_out >= _YIELD_EVERY:
            # A peer that keeps our buffer full never makes recv block; yield anyway.
            self._handed_out = 0
            if self._writer.holding:
                self._flush()
            assert self._rt is not None
            self._rt.cooperate()
        return message

    def receive_json(self, timeout: float | None = None) -> Any:
        """The next message (text or binary), decoded as JSON; ``ValueError`` if it is not."""
        return json.loads(self.receive(timeout))

    def __iter__(self) -> Iterator[str | bytes]:
        """Messages until the connection closes; a normal close ends the loop quietly."""
        while True:
            message = self._next_message(None)
            if message is None:
                if self._ending_code() in OK_CLOSE_CODES:
                    return  # (no exception object made just to be dropped)
                raise self._closed_exception()
            yield message

    def _read(self, deadline: float | None, receiving: bool = False) -> None:
        """Read once from the socket (or wait for the greenlet that is reading);
        ``receiving``: for :meth:`receive`, which takes what it reads next."""
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
            if self._incoming or self._finished or self._pending_failure is not None:
                return
            assert self._proto is not None
            if self._proto.close_pending:
                return  # nothing more counts from the peer; the reply is the receiver's to send
            if self._writer.holding:
                self._flush()  # replies must not wait for the peer's next message
            data: bytes | None = self._leftover
            if data:
                self._leftover = b""
            else:
                data = self._recv(deadline)
                if data is None:
                    return
            if not data:
                self._lost("the peer closed TCP without a close frame", reading=True)
                return
            self._feed(data, receiving)
        finally:
            lock.release()
            if self._read_waiters and self._rt is not None:
                self._rt.cooperate()  # hand the lock over to the waiting greenlet

    def _recv(self, deadline: float | None) -> bytes | None:
        """One recv (the read lock is held): None when the connection was lost meanwhile."""
        assert self._rt is not None and self._sock is not None and self._proto is not None
        raw = self._raw_sock
        size = _READ_SIZE
        pending = self._proto.payload_pending
        if pending > _READ_SIZE:
            size = min(pending, _MAX_READ_SIZE)
        try:
            if raw is None:
                timeout = None if deadline is None else deadline - time.monotonic()
                return self._rt.recv(self._sock, size, timeout)
            # After a short read the kernel had no more, so a recv now would most likely
            # fail, and a failing recv costs an exception (whose traceback would keep this
            # frame's frame object alive while the connection idles): wait first. The wait
            # is level-triggered: it returns at once if data came meanwhile. Not with a
            # deadline: a timeout of 0 must still find data that is already there.
            drained = self._drained and deadline is None
            while True:
                if not drained:
                    try:
                        data = raw.recv(size)
                    except BlockingIOError:
                        pass
                    else:
                        self._drained = len(data) < size
                        return data
                drained = False
                self._handed_out = 0  # we wait: other connections get their turn
                self._incoming = ()  # and may stay idle: drop the empty deque
                timeout = None if deadline is None else deadline - time.monotonic()
                self._rt.wait_readable(self._sock, timeout)
        except TimeoutError:
            raise ReceiveTimeout from None
        except OSError as exc:
            self._lost(f"socket error: {exc}", reading=True)
            return None

    def _feed(self, data: bytes, receiving: bool = False) -> None:
        """Bytes from the peer into the engine; its events to their places (read lock held)."""
        proto = self._proto
        assert proto is not None
        self._bytes_in += len(data)
        keep = proto.close_sent is None  # after our close, only a bounded few (see below)
        observer = self._watch
        for event in proto.receive_data(data):
            if type(event) is Message:
                if observer is not None:
                    try:
                        if not observer.message_received(
                            self, type(event.data) is str, _payload_size(event.data)
                        ):
                            continue
                    except PolicyViolation as exc:
                        self._failed(ProtocolFailure(exc.code, exc.reason), "policy violation")
                        break
                # Messages the peer sent before it saw our close frame (they cross on the
                # wire; RFC 6455 5.5.1 lets it finish sending first) still reach a reader,
                # a bounded few: nobody may be reading any more.
                if keep or len(self._incoming) < _CLOSING_BACKLOG:
                    if not self._incoming:
                        self._incoming = deque()
                    self._incoming.append(event.data)
            elif type(event) is Pong:
                self._pong_arrived(event.payload)
            elif type(event) is Close and proto.close_pending:
                if not receiving or self._incoming:  # else receive() replies right away
                    self._bound_close_reply()
            elif type(event) is ProtocolFailure:
                self._failed(event, "failed")
        self._settle(reading=True)

    def _failed(self, failure: ProtocolFailure, what: str) -> None:
        connlog.log(self, logging.INFO, "%s (%d): %s", what, failure.code, failure.reason)
        if self._incoming:
            # Messages that came before the fault are delivered first (and may be
            # answered); the connection fails once they are taken.
            self._pending_failure = failure
        else:
            assert self._proto is not None
            self._proto.fail(failure.code, failure.reason)

    def _pong_arrived(self, payload: bytes) -> None:
        # A pong answers the ping with its payload and, implicitly, every earlier ping.
        waiters = self._pong_waiters
        for index, (expected, sent_at, _) in enumerate(waiters):
            if expected == payload:
                for _, _, earlier in waiters[: index + 1]:
                    earlier.append(True)
                del waiters[: index + 1]
                self.latency = time.monotonic() - sent_at
                if self.observer is not None:
                    self.observer.pong_received(self, self.latency)
                break

    # -------------------------------------------------------------------- send

    def send(self, message: str | bytes | bytearray | memoryview) -> None:
        """Send one message: text for ``str``, binary for bytes-like."""
        proto = self._proto
        if proto is None:
            proto = self._ensure_open()
        # Replies to pipelined messages the handler has yet to take may go out together.
        self._send(proto.send_message, (message,), None, bool(self._incoming))
        if self._watch is not None:
            self._watch.message_sent(self, isinstance(message, str), _payload_size(message))

    def send_json(self, obj: Any) -> None:
        """Send ``obj`` as JSON in a text message (compact: no spaces after separators)."""
        self.send(json.dumps(obj, separators=(",", ":")))

    def send_stream(self, chunks: Iterable[str | bytes]) -> None:
        """Send an iterable of chunks as one fragmented message (all ``str`` or all bytes).

        Other senders wait until the whole message is out, as the protocol requires.
        If the iterable raises midway, half a message is on the wire and only its
        continuation may follow: the connection fails with 1011 and the error propagates.
        """
        proto = self._ensure_open()
        size = 0
        kind: type | None = None
        closed = False
        self._send_lock.acquire()
        try:
            previous: str | bytes | None = None
            try:
                for chunk in chunks:
                    if kind is None:
                        kind = str if isinstance(chunk, str) else bytes
                    elif isinstance(chunk, str) != (kind is str):
                        raise TypeError("a streamed message mixes text and binary chunks")
                    if previous is not None:
                        proto.send_fragment(previous, fin=False)
                        self._write(proto.data_to_send())
                    size += _payload_size(chunk)
                    previous = chunk
                if previous is None:
                    previous = ""  # an empty iterable sends an empty text message
                proto.send_fragment(previous, fin=True)
                self._write(proto.data_to_send())
            except (InvalidState, ConnectionClosed):
                closed = True
            except BaseException:
                if proto.streaming:
                    proto.fail(CloseCode.INTERNAL_ERROR, "stream failed")
                    try:
                        self._write(proto.data_to_send())
                    except ConnectionClosed:
                        pass
                raise
        finally:
            self._send_lock.release()
            self._settle()
        if closed:
            raise self._closed_exception()
        if self._watch is not None:
            self._watch.message_sent(self, kind is not bytes, size)

    # ------------------------------------------- sends that must not wait (the hub's)

    def try_send(self, messages: Sequence[str | bytes | FramedMessage]) -> bool:
        """Send ``messages`` now, in one write, if that cannot wait: for a sender that must
        not block (a broadcast writing to many sockets from one greenlet).

        True: the connection took them -- written, or the part the socket could not take
        yet held back to go out before anything else (a flush is arranged). False: nothing
        was sent, because that would wait (the send lock is busy, frames are held back
        already, the socket is not a non-blocking one), or the connection is not open or
        just failed: send it with :meth:`send_many`, which waits, and raises
        ``ConnectionClosed`` for a connection that is over.
        """
        raw = self._raw_sock
        proto = self._proto
        if raw is None or proto is None:
            return False
        lock = self._send_lock
        if not lock.acquire(False):  # positional: a keyword costs more, for every socket
            return False
        try:
            writer = self._writer
            if writer.holding:
                return False
            try:
                if len(messages) == 1 and type(messages[0]) is FramedMessage:
                    out = proto.send_framed_now(messages[0])  # a broadcast's case: calls count
                else:
                    self._queue_messages(proto, messages)
                    out = proto.data_to_send()
            except InvalidState:
                return False
            try:
                if len(out) == 1:
                    # One frame, a broadcast's case: written here, not by the writer (a call
                    # less for each of many sockets); a rest the socket did not take is kept.
                    data = out[0]
                    try:
                        sent = raw.send(data)
                    except BlockingIOError:
                        sent = 0
                    kept = sent != len(data) and writer.write_nowait([memoryview(data)[sent:]])
                else:
                    kept = writer.write_nowait(out)
                if kept:
                    assert self._rt is not None
                    self._rt.call_soon(self._hold_deadline)
            except OSError as exc:
                proto.abort(f"socket error while sending: {exc}")
                return False  # the waiting send meets the closed engine and ends the connection
        finally:
            lock.release()
        if self._watch is not None:
            self._observe_sent(self._watch, messages)
        return True

    def send_many(self, messages: Sequence[str | bytes | FramedMessage]) -> None:
        """Send ``messages`` in order, in as few writes as the socket allows (vectored)."""
        proto = self._ensure_open()
        self._send(self._queue_messages, (proto, messages))
        if self._watch is not None:
            self._observe_sent(self._watch, messages)

    @staticmethod
    def _queue_messages(proto: Protocol, messages: Iterable[str | bytes | FramedMessage]) -> None:
        for message in messages:
            if isinstance(message, FramedMessage):
                proto.send_framed(message)
            else:
                proto.send_message(message)

    def _observe_sent(
        self, observer: ConnectionObserver, messages: Iterable[str | bytes | FramedMessage]
    ) -> None:
        for message in messages:
            if isinstance(message, FramedMessage):
                observer.message_sent(self, isinstance(message.data, str), message.size)
            else:
                observer.message_sent(self, isinstance(message, str), _payload_size(message))

    def ping(self, payload: bytes = b"") -> PongWaiter:
        """Send a ping; the returned waiter's ``wait(timeout)`` is True once its pong came."""
        proto = self._ensure_open()
        flag: list[bool] = []
        self._ping(proto, payload, flag, None)
        return PongWaiter(self, flag)

    def _ping(
        self, proto: Protocol, payload: bytes, flag: list[bool], deadline: float | None
    ) -> bool:
        waiter = (payload, time.monotonic(), flag)
        self._pong_waiters.append(waiter)  # before the ping leaves: its pong may come at once
        try:
            sent = self._send(proto.send_ping, (payload,), deadline)
        except BaseException:
            if waiter in self._pong_waiters:
                self._pong_waiters.remove(waiter)
            raise
        if not sent and waiter in self._pong_waiters:
            self._pong_waiters.remove(waiter)
        return sent

    def _send(
        self,
        queue: Callable[..., None],
        args: tuple[Any, ...],
        deadline: float | None = None,
        hold: bool = False,
    ) -> bool:
        """The one way frames are sent: ``queue(*args)`` adds them to the engine's output,
        which is written under the send lock; then the connection settles.

        Waits for the send lock until ``deadline`` (None: as long as it takes); False
        when it passed. Raises ``ConnectionClosed`` when the engine no longer sends.
        ``hold``: a single frame may be held back for the next write (corking).
        """
        proto = self._proto
        assert proto is not None
        lock = self._send_lock
        if deadline is None:
            lock.acquire()
        elif not (
            lock.acquire(False) or lock.acquire(timeout=max(0.0, deadline - time.monotonic()))
        ):
            return False
        closed = False
        try:
            queue(*args)
            self._write(proto.data_to_send(), hold)
        except (InvalidState, ConnectionClosed):
            closed = True
        finally:
            lock.release()
        if proto.state is _CLOSED or proto.has_output:
            self._settle()
        if closed:
            raise self._closed_exception()
        return True

    def _flush(self, timeout: float = 0.0) -> None:
        """Write the engine's output (pongs, a close reply, held-back frames) under the send lock.

        ``timeout`` 0: only if the lock is free; its holder writes what is queued when
        it is done (it looks again after releasing the lock).
        """
        proto = self._proto
        assert proto is not None
        lock = self._send_lock
        while True:
            if not (lock.acquire(timeout=timeout) if timeout else lock.acquire(blocking=False)):
                return
            try:
                self._write(proto.data_to_send())
            except ConnectionClosed:
                pass
            finally:
                lock.release()
            if not proto.has_output:
                return

    def _write(self, parts: list[Any], hold: bool = False) -> None:
        """Write ``parts`` (the send lock is held); ``ConnectionClosed`` if the socket failed."""
        writer = self._writer
        if hold and len(parts) == 1:
            held = writer.hold(parts[0])
            if held:
                if held == 1:
                    assert self._rt is not None
                    self._rt.call_soon(self._hold_deadline)
                return
        try:
            writer.write(parts)
        except OSError as exc:
            assert self._proto is not None
            self._proto.abort(f"socket error while sending: {exc}")
            raise ConnectionClosed(CloseCode.ABNORMAL) from None

    def _hold_deadline(self) -> None:
        # Runs in the event loop once this greenlet blocked or yielded: must not block here.
        # Failing every other flush (the next write or read, a fairness yield), this one.
        if self._writer.holding and self._rt is not None:
            self._rt.spawn(self._flush)

    def _settle(self, *, reading: bool = False) -> None:
        """After any engine call: write what it queued; finish once it says it is over."""
        proto = self._proto
        assert proto is not None
        if proto.has_output:
            self._flush()
        if proto.state is _CLOSED and not self._finished:
            self._finish(reading=reading)

    # ------------------------------------------------------------------- close

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close the connection: send a close frame, wait up to ``close_timeout``
        for the peer's, then end TCP. Does nothing if already closed.

        If the peer closed first, this sends the reply (echoing the peer's code) and
        the connection is over; messages from the peer not taken yet can still be
        received."""
        if self._finished:
            return
        proto = self._ensure_open()
        if self._pending_failure is not None:
            self._fail(self._pending_failure.code, self._pending_failure.reason)
            return
        deadline = time.monotonic() + self.close_timeout
        if not self._send_close(proto, code, reason, deadline):
            return
        self._wait(lambda: self._finished, deadline)
        if not self._finished:
            proto.abort("no close frame from the peer within close_timeout")
            self._finish()

    def _send_close(
        self, proto: Protocol, code: int, reason: str, deadline: float | None = None
    ) -> bool:
        """Send our close, or our reply to the peer's; False when the connection is over.

        Waits for the send lock until ``deadline`` (default: ``close_timeout`` from now).
        """
        if deadline is None:
            deadline = time.monotonic() + self.close_timeout
        try:
            sent = self._send(proto.send_close, (code, reason), deadline)
        except ConnectionClosed:
            return False
        if not sent:
            # A send is stuck behind a peer that does not read: no clean close is possible.
            self._give_up("send blocked while closing")
        return sent

    def _bound_close_reply(self) -> None:
        """The peer closed: our reply waits for the application to take the messages
        before that close (receive) or to close, but not beyond ``close_timeout``.

        RFC 6455 5.5.1 wants the reply "as soon as practical" and lets an endpoint delay
        it only "until its current message is sent"; 7.1.1 and 7.1.7 make the peer wait
        for it. A handler that stopped reading (one that only sends, or is stuck) must not
        keep the connection half-open: ``close_timeout``, the wait we allow the peer for
        its reply to our close, is the wait it gets for ours.
        """
        if self._rt is not None and self._close_timer is None:
            self._close_timer = self._rt.call_later(self.close_timeout, self._close_reply_due)

    def _close_reply_due(self) -> None:
        # A timer callback, on a greenlet or thread of its own: it may block on the send lock.
        self._close_timer = None
        proto = self._proto
        if self._finished or proto is None or not proto.close_pending:
            return
        connlog.log(self, logging.INFO, "peer's close unanswered after close_timeout: replying")
        self._send_close(proto, CloseCode.NORMAL, "")

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection: the engine queues the close; it goes out, then TCP ends."""
        self._pending_failure = None
        assert self._proto is not None
        self._proto.fail(code, reason)
        self._flush(timeout=self.close_timeout)
        self._finish()

    def _give_up(self, why: str) -> None:
        """End the connection without writing anything more (the writer is stuck)."""
        assert self._proto is not None
        self._proto.fail(CloseCode.ABNORMAL, why)
        self._finish(write=False)

    def _wait(self, condition: Callable[[], bool], deadline: float) -> bool:
        """Read until ``condition()`` holds or ``deadline`` passes."""
        assert self._proto is not None
        while not condition():
            if self._finished or self._proto.close_pending or time.monotonic() >= deadline:
                return condition()  # (after the peer's close nothing more comes)
            try:
                self._read(deadline)
            except ReceiveTimeout:
                return condition()
        return True

    def _lost(self, why: str, *, reading: bool = False) -> None:
        connlog.log(self, logging.DEBUG, "%s", why)
        assert self._proto is not None
        self._proto.receive_eof(why)
        self._settle(reading=reading)

    def _finish(self, *, reading: bool = False, write: bool = True) -> None:
        """The WebSocket is over (the engine said so): record how, tell, and end TCP.

        ``reading``: the caller holds the read lock (so it may drain the socket).
        ``write``: what the engine still has queued (a close reply) goes out first.
        """
        if self._finished:
            return
        self._finished = True
        proto = self._proto
        assert proto is not None
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if write and (proto.has_output or self._writer.holding):
            self._flush(timeout=self.close_timeout)
        self.close_code = proto.close_code
        self.close_reason = proto.close_reason
        if self._keepalive is not None:
            self._keepalive.stop()
            self._keepalive = None
        if self._close_callbacks is not None:
            self._run_close_callbacks()
        if self.observer is not None:
            try:
                self.observer.closed(
                    self,
                    proto.close_code or CloseCode.ABNORMAL,
                    proto.close_reason,
                    proto.close_initiator or "abnormal",
                )
            except Exception:
                connlog.log(self, logging.ERROR, "observer raised", exc_info=True)
        self._end_tcp(reading)

    def add_close_callback(self, callback: Callable[[WebSocket], object]) -> None:
        """Call ``callback(ws)`` once when the connection ends (at once if it has).

        Callbacks run in whichever greenlet or thread ends the connection and
        must not block; an exception in one is logged and the others still run.
        """
        if self._finished:
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
            connlog.log(self, logging.ERROR, "close callback %r raised", callback, exc_info=True)

    def _end_tcp(self, reading: bool) -> None:
        """End TCP without losing our close frame to a reset (RFC 6455 7.1.1).

        The engine already ended our side when it is ours to end first (a
        server's). While it expects the peer to end TCP (``close_expected``), we
        read and drop what comes until the peer's FIN: briefly for a server, up to
        ``close_timeout`` for a client. If another greenlet is reading the socket,
        we only shut it down, which wakes that reader. ``reading``: the caller
        holds the read lock.
        """
        sock = self._sock
        proto = self._proto
        assert sock is not None and proto is not None
        server = self.role is _SERVER
        may_read = reading or self._read_lock.acquire(blocking=False)
        try:
            if may_read and proto.close_expected():
                self._read_until_eof(min(self.close_timeout, 2.0) if server else self.close_timeout)
            # Sends our FIN if the engine's end of stream did not, and wakes any other
            # greenlet reading; neither is left to do when we are the reader and it did.
            if not (may_read and self._writer.ended):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            if not server and may_read:
                sock.close()  # the client owns its socket; a server's belongs to the WSGI server
        finally:
            if may_read and not reading:
                self._read_lock.release()

    def _read_until_eof(self, seconds: float) -> None:
        """Read and drop whatever arrives until the peer's FIN or ``seconds`` pass."""
        assert self._rt is not None and self._sock is not None and self._proto is not None
        deadline = time.monotonic() + seconds
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                if not self._rt.recv(self._sock, _READ_SIZE, remaining):
                    self._proto.receive_eof()
                    self._flush()  # a client ends its side in turn
                    return
        except (OSError, TimeoutError):
            pass

    def _ending_code(self) -> int:
        """The close code a closed connection reports."""
        code = self.close_code
        if code is None:  # the engine closed; finishing is under way in another greenlet
            assert self._proto is not None
            code = self._proto.close_code or CloseCode.ABNORMAL
        return code

    def _closed_exception(self) -> ConnectionClosed:
        code = self._ending_code()
        cls = ConnectionClosedOK if code in OK_CLOSE_CODES else ConnectionClosedError
        return cls(code, self.close_reason if self.close_code is not None else "")

    @property
    def closed(self) -> bool:
        return self._finished

    # --------------------------------------------------------------- keepalive
    # What wsgiws.keepalive.Keepalive asks of its connection (the Pinged interface).

    @property
    def bytes_received(self) -> int:
        """Bytes received from the peer so far."""
        return self._bytes_in

    def keepalive_ping(self, timeout: float) -> bool:
        if self._finished or self._proto is None or self._proto.close_pending:
            return False  # after the peer's close, the close timer bounds the connection
        try:
            sent = self._ping(self._proto, b"", [], time.monotonic() + timeout)
        except ConnectionClosed:
            return False
        if not sent:
            self.keepalive_failed("a send has been blocked longer than the keepalive timeout")
        return sent

    def keepalive_poll(self) -> None:
        if self._finished or not self._read_lock.acquire(blocking=False):
            return  # a reader is at work: what it reads counts
        try:
            assert self._rt is not None and self._sock is not None
            if len(self._incoming) < _KEEPALIVE_READ_LIMIT:
                data = self._leftover or self._rt.recv(self._sock, _READ_SIZE, 0.0)
                self._leftover = b""
                if data:
                    self._feed(data)
                else:
                    self._lost("the peer closed TCP without a close frame", reading=True)
            elif has_unread_data(self._sock):
                self._bytes_in += 1  # unread data proves the peer alive; the handler reads it
        except (OSError, TimeoutError):
            pass
        finally:
            self._read_lock.release()

    def keepalive_failed(self, why: str) -> None:
        connlog.log(self, logging.INFO, "%s; closing with 1011", why)
        if self._sock is not None:
            # A peer that stopped reading must not hold the close frame's write forever.
            self._sock.settimeout(1.0)
        assert self._proto is not None
        self._proto.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
        self._flush()
        self._finish(write=False)

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
        return f"<WebSocket {self._path()} {self.state.value}>"


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
