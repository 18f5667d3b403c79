"""The sans-I/O WebSocket protocol engine (RFC 6455 sections 5 to 7): one connection's life.

Bytes from the peer go in through :meth:`Protocol.receive_data` (and the end of
its stream through :meth:`Protocol.receive_eof`); events come out. Everything
this side puts on the wire -- data frames, pings, pongs, close frames, and the
end of our stream -- leaves through one output, :meth:`Protocol.data_to_send`.
The engine decides what the closing handshake sends and which code describes
the end (RFC 6455 7.1); the I/O layer only moves bytes, arms timers and ends
sockets. Nothing here touches a socket, a clock or a greenlet, so the same
engine serves the server, the client and the in-process test client, and tests
can feed it one byte at a time. Frame encoding lives in :mod:`wsgiws.frames`.
"""

from __future__ import annotations

import codecs
import enum
import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Final, Literal
from typing import Protocol as _Interface

from .exceptions import InvalidState
from .frames import (
    MAX_CONTROL_PAYLOAD,
    OK_CLOSE_CODES,
    Buffer,
    CloseCode,
    FrameError,
    Opcode,
    _apply_mask_python,
    apply_mask,
    check_header,
    encode_close_payload,
    frame,
    frame_header,
    is_valid_close_code,
    parse_close_payload,
    short_frame_header,
)

__all__ = [
    "END_OF_STREAM",
    "OK_CLOSE_CODES",
    "Buffer",
    "Close",
    "CloseCode",
    "Event",
    "Extension",
    "FramedMessage",
    "InvalidState",
    "Message",
    "Opcode",
    "Ping",
    "Pong",
    "Protocol",
    "ProtocolFailure",
    "Role",
    "State",
    "_apply_mask_python",
    "apply_mask",
    "encode_close_payload",
    "is_valid_close_code",
]

logger = logging.getLogger("wsgiws")

#: In :meth:`Protocol.data_to_send`'s output: end our side of TCP (half-close) here.
#: Frames are never empty, so an empty buffer cannot be mistaken for one.
END_OF_STREAM: Final = b""


class Role(enum.Enum):
    SERVER = "server"
    CLIENT = "client"


class State(enum.Enum):
    """Where the closing handshake stands (the opening one is done before an engine exists)."""

    OPEN = 1  #: data flows both ways; from us only once the peer's close came (close_pending)
    CLOSING = 2  #: we sent a close frame and await the peer's
    CLOSED = 3  #: both close frames were exchanged, the connection failed, or TCP ended


#: Who ended a connection (see :class:`wsgiws.observer.CloseInitiator`).
Initiator = Literal["local", "remote", "abnormal"]


@dataclass(frozen=True, slots=True, repr=False, init=False)
class Message:
    """A complete data message: ``str`` for text, ``bytes`` for binary."""

    data: str | bytes

    def __init__(self, data: str | bytes) -> None:
        # One per message: the frozen dataclass's own __init__ goes through
        # object.__setattr__, about three times the cost of setting the slot directly.
        _set_message_data(self, data)

    def __repr__(self) -> str:
        return f"Message({self.data[:40]!r}{'...' if len(self.data) > 40 else ''})"


_set_message_data: Final[Callable[[Message, str | bytes], None]] = vars(Message)["data"].__set__


@dataclass(frozen=True, slots=True)
class Ping:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """A close frame: the peer's (``code`` is 1005 when it carried none), or ours."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class ProtocolFailure:
    """The peer broke the protocol; input stops here.

    The engine fails the connection when the I/O layer calls :meth:`Protocol.fail`
    with this code and reason, which it does once the messages that came before
    the fault were delivered (they may still be answered).
    """

    code: int
    reason: str


Event = Message | Ping | Pong | Close | ProtocolFailure


class Extension(_Interface):
    """What the engine needs of a negotiated extension (permessage-deflate is the one).

    ``decode`` reports bad input by raising an exception with ``code`` and ``reason``
    attributes (:class:`wsgiws.deflate.DeflateError`); any other exception is a bug:
    it is logged and the connection fails with 1011.
    """

    rsv1: ClassVar[int]

    def begin_message(self) -> None:
        """A message whose first frame carried RSV1 starts."""

    def decode(self, payload: bytes, fin: bool, max_size: int | None) -> bytes:
        """One frame's payload of such a message, decoded; at most ``max_size`` bytes."""

    def should_compress(self, size: int) -> bool:
        """Whether an outgoing message of ``size`` bytes is worth encoding."""

    def encode(self, data: bytes) -> bytes:
        """A whole outgoing message, encoded."""

    def encode_fragment(self, data: bytes, fin: bool) -> bytes:
        """One piece of a streamed outgoing message, encoded."""


_UTF8_DECODER: Final = codecs.getincrementaldecoder("utf-8")
_UNPACK_H: Final = struct.Struct("!H").unpack_from
_UNPACK_Q: Final = struct.Struct("!Q").unpack_from
#: Outgoing payloads up to this size are copied behind their header (one buffer).
_JOIN_LIMIT: Final = 16384
# Enum members the engine reads per connection or per message, bound once: on Python
# 3.11 looking a member up on its class costs as much as ten dict lookups (the enum
# metaclass's __getattr__ keeps the attribute cache away).
_OPEN: Final = State.OPEN
_CLOSING: Final = State.CLOSING
_CLOSED: Final = State.CLOSED
_CLIENT: Final = Role.CLIENT
_TEXT: Final = Opcode.TEXT
_CLOSE: Final = Opcode.CLOSE
_PING: Final = Opcode.PING
_PONG: Final = Opcode.PONG
_NO_STATUS: Final = CloseCode.NO_STATUS
_DEFAULT_FRAGMENT_SIZE: Final = 1 << 20


def _partial_utf8_ok(pending: bytes) -> bool:
    """Can ``pending`` (the 1 to 3 bytes an incremental decoder holds) still become valid UTF-8?

    CPython's decoder already rejects most impossible prefixes as soon as it sees
    them, but it waits for the third byte of a surrogate (ED A0..BF). RFC 6455
    wants the failure in the frame where the sequence goes wrong.
    """
    if len(pending) < 2:
        return True
    lead, second = pending[0], pending[1]
    if lead == 0xED:
        return second <= 0x9F
    if lead == 0xE0:
        return second >= 0xA0
    if lead == 0xF0:
        return second >= 0x90
    if lead == 0xF4:
        return second <= 0x8F
    return True


class Protocol:
    """One endpoint of a WebSocket connection after the opening handshake.

    ``max_message_size`` bounds a message's payload (after decompression) and is
    enforced from frame headers before the payload is buffered; ``None`` lifts it.
    ``max_fragments`` bounds the frames of one message (default: enough for
    64-byte fragments of a maximal message).

    Once :attr:`state` is CLOSED, :attr:`close_code`, :attr:`close_reason` and
    :attr:`close_initiator` say how the connection ended.
    """

    __slots__ = (
        "_allowed_rsv",
        "_buf",
        "_decoder",
        "_eof_queued",
        "_expect_mask",
        "_frame_fin",
        "_frame_key",
        "_frame_offset",
        "_is_client",
        "_msg_compressed",
        "_msg_frames",
        "_msg_opcode",
        "_msg_parts",
        "_msg_size",
        "_need",
        "_out",
        "_out_compressed",
        "_out_fragmenting",
        "_pending_pongs",
        "_text_parts",
        "bytes_in",
        "bytes_out",
        "close_code",
        "close_initiator",
        "close_pending",
        "close_reason",
        "close_received",
        "close_sent",
        "eof_received",
        "extension",
        "failure",
        "fragment_size",
        "max_fragments",
        "max_message_size",
        "messages_in",
        "messages_out",
        "payload_pending",
        "role",
        "state",
    )

    def __init__(
        self,
        role: Role,
        *,
        max_message_size: int | None = 1 << 20,
        max_fragments: int | None = None,
        extension: Extension | None = None,
        fragment_size: int = _DEFAULT_FRAGMENT_SIZE,
    ) -> None:
        self.role = role
        self.state = _OPEN
        self.max_message_size = max_message_size
        if max_fragments is None and max_message_size is not None:
            max_fragments = max(1024, max_message_size // 64)
        self.max_fragments = max_fragments
        self.extension = extension
        self.fragment_size = fragment_size
        self._is_client = role is _CLIENT
        # Incoming: frames from the peer are masked iff we are the server.
        self._expect_mask = 0x00 if self._is_client else 0x80
        self._allowed_rsv = extension.rsv1 if extension is not None else 0
        self._buf: bytes | bytearray = b""  # unparsed input (b"" while empty: no allocation)
        self._need = 2  # bytes the parser needs before it can make progress
        # The data frame whose payload is arriving.
        #: Bytes of the current frame's payload not received yet (0 between frames): lets
        #: the caller read a large payload in few, large reads.
        self.payload_pending = 0
        self._frame_fin = False
        self._frame_offset = 0
        self._frame_key: bytes | None = None
        # The message being received: opcode 0 when none.
        self._msg_opcode = 0
        self._msg_compressed = False
        self._msg_size = 0
        self._msg_frames = 0
        # Pieces of a fragmented message; () until the first (no lists for an idle connection).
        self._msg_parts: list[bytes] | tuple[()] = ()
        self._text_parts: list[str] | tuple[()] = ()
        self._decoder: codecs.IncrementalDecoder | None = None
        # Outgoing: the one output, and pings not answered yet.
        self._out: list[Buffer] = []
        self._pending_pongs: list[bytes] = []
        self._out_fragmenting = False
        self._out_compressed = False
        self._eof_queued = False
        self.close_sent: Close | None = None
        self.close_received: Close | None = None
        #: True while the peer's close awaits our reply (:meth:`send_close` sends it): it
        #: came while we were OPEN. An attribute, not a property: the I/O layer asks on
        #: every read.
        #:
        #: RFC 6455 5.5.1: the endpoint receiving a close "MUST send a Close frame in
        #: response ... as soon as practical" and "MAY delay sending a Close frame until
        #: its current message is sent". The engine leaves the moment to the I/O layer:
        #: when the application has taken the messages that preceded the close, it may
        #: answer them first, so the data in flight is not lost (1.4). Until the reply the
        #: engine still sends data frames; it ignores anything more from the peer.
        self.close_pending = False
        self.eof_received = False
        self.failure: ProtocolFailure | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.close_initiator: Initiator | None = None
        # What passed, counted here (a few additions per message) so that observers need
        # no call per message just to count: data messages and their payload bytes
        # (received: after inflation; sent: before compression).
        self.messages_in = self.bytes_in = self.messages_out = self.bytes_out = 0

    # ------------------------------------------------------------------ receive

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed bytes from the peer; return the events they complete.

        After a :class:`ProtocolFailure` event the engine ignores further input
        (RFC 6455 7.1.7: "MUST NOT continue to attempt to process data"); the
        I/O layer calls :meth:`fail` with its code once the messages before it
        are delivered.
        """
        if self.close_received is not None or self.failure is not None or self.state is _CLOSED:
            return []  # nothing the peer sends after its close (or a failure) counts
        buf: bytes | bytearray
        if self._buf:
            buf = self._buf
            buf += data  # a bytearray: extended in place
        else:
            # Parse straight from the caller's bytes; only a remainder gets copied.
            buf = data if isinstance(data, bytes) else bytes(data)
        if len(buf) < self._need:
            if buf is not self._buf:
                self._buf = bytearray(buf)
            return []
        pongs = self._pending_pongs
        stale = len(pongs)
        events: list[Event] = []
        try:
            pos = self._parse(buf, events)
        except FrameError as exc:
            failure = ProtocolFailure(exc.code, exc.reason)
            self.failure = failure
            self._buf = b""
            self._need = 2
            self._reset_message()
            events.append(failure)
            return events
        finally:
            if stale > 1 or (stale and len(pongs) > stale):
                # Pongs still unsent when new pings come: answer the latest ping only.
                del pongs[: stale if len(pongs) > stale else stale - 1]
        if buf is self._buf:
            if pos == len(buf):
                self._buf = b""
            elif pos:
                del buf[:pos]  # type: ignore[union-attr]
        elif pos < len(buf):
            self._buf = bytearray(buf[pos:])
        return events

    def _parse(self, buf: bytes | bytearray, events: list[Event]) -> int:
        """Handle what ``buf`` holds; return how many bytes were used."""
        pos = 0
        end = len(buf)
        expect_mask = self._expect_mask
        limit = self.max_message_size
        count = size = 0  # whole one-frame messages: counted here, stored once
        try:
            while pos < end:
                left = self.payload_pending
                if left:
                    # Inside a data frame's payload: take what is here, validate it now.
                    take = min(left, end - pos)
                    chunk = buf[pos : pos + take]
                    pos += take
                    key = self._frame_key
                    if key is not None:
                        offset = self._frame_offset & 3
                        chunk = apply_mask(chunk, key[offset:] + key[:offset] if offset else key)
                    else:
                        chunk = bytes(chunk)
                    self._frame_offset += take
                    self.payload_pending = left = left - take
                    self._message_chunk(chunk, not left and self._frame_fin, events)
                    continue
                if end - pos < 2:
                    self._need = 2
                    return pos
                b0 = buf[pos]
                b1 = buf[pos + 1]
                if b1 & 0x80 != expect_mask:
                    raise FrameError(
                        CloseCode.PROTOCOL_ERROR,
                        "client frames must be masked"
                        if expect_mask
                        else "server frames must not be masked",
                    )
                length = b1 & 0x7F
                header = 2
                if length == 126:
                    header = 4
                    if end - pos < 4:
                        self._need = 4
                        return pos
                    (length,) = _UNPACK_H(buf, pos + 2)
                elif length == 127:
                    header = 10
                    if end - pos < 10:
                        self._need = 10
                        return pos
                    (length,) = _UNPACK_Q(buf, pos + 2)
                    if length >> 63:
                        raise FrameError(
                            CloseCode.PROTOCOL_ERROR, "frame length has the top bit set"
                        )
                # 0x81 / 0x82: a final text / binary frame without RSV bits, the usual frame.
                whole = b0 == 0x81 or b0 == 0x82
                if whole and not self._msg_opcode:
                    if limit is not None and length > limit:
                        raise FrameError(
                            CloseCode.MESSAGE_TOO_BIG, f"message exceeds {limit} bytes"
                        )
                else:
                    self._check_header(b0, length)
                if expect_mask:
                    header += 4
                start = pos + header
                if start > end:
                    self._need = header
                    return pos
                stop = start + length
                if whole and stop <= end:
                    # The common case: a whole message in one frame, all here.
                    if expect_mask:
                        payload = apply_mask(buf[start:stop], buf[start - 4 : start])
                    else:
                        payload = bytes(buf[start:stop])
                    pos = stop
                    count += 1
                    size += length
                    if b0 == 0x81:
                        try:
                            events.append(Message(payload.decode("utf-8")))
                        except UnicodeDecodeError:
                            raise FrameError(
                                CloseCode.INVALID_DATA, "invalid UTF-8 in a text message"
                            ) from None
                    else:
                        events.append(Message(payload))
                    continue
                opcode = b0 & 0x0F
                fin = b0 & 0x80
                if opcode >= 8:
                    # Control frames are small: wait for the whole frame.
                    if stop > end:
                        self._need = header + length
                        return pos
                    pos = stop
                    if expect_mask:
                        payload = apply_mask(buf[start:pos], buf[start - 4 : start])
                    else:
                        payload = bytes(buf[start:pos])
                    self._control_frame(opcode, payload, events)
                    if self.close_received is not None:
                        self._need = 2
                        return end  # whatever follows the peer's close is ignored
                    continue
                pos = start
                self._start_frame(b0, opcode, fin, length)
                self._frame_key = bytes(buf[start - 4 : start]) if expect_mask else None
                if not length:
                    self._message_chunk(b"", bool(fin), events)
            self._need = 1 if self.payload_pending else 2
            return pos
        finally:
            if count:
                self.messages_in += count
                self.bytes_in += size

    def _start_frame(self, b0: int, opcode: int, fin: int, length: int) -> None:
        if opcode:  # the first frame of a message
            compressed = bool(b0 & 0x40) and self.extension is not None
            self._msg_opcode = opcode
            self._msg_compressed = compressed
            self._msg_size = 0
            self._msg_frames = 0
            if compressed:
                assert self.extension is not None
                self.extension.begin_message()
            if opcode == _TEXT:
                self._decoder = _UTF8_DECODER()
        self._msg_frames += 1
        if self.max_fragments is not None and self._msg_frames > self.max_fragments:
            raise FrameError(
                CloseCode.MESSAGE_TOO_BIG, f"message has over {self.max_fragments} frames"
            )
        self.payload_pending = length
        self._frame_fin = bool(fin)
        self._frame_offset = 0

    def _check_header(self, b0: int, length: int) -> None:
        """Validate a frame from its header alone, before its payload is buffered."""
        check_header(b0, length, self._allowed_rsv, bool(self._msg_opcode))
        limit = self.max_message_size
        opcode = b0 & 0x0F
        # A compressed payload is bounded again after inflation; its wire size cannot exceed it.
        if (
            opcode < 8
            and limit is not None
            and (self._msg_size if opcode == 0 else 0) + length > limit
        ):
            raise FrameError(CloseCode.MESSAGE_TOO_BIG, f"message exceeds {limit} bytes")

    def _control_frame(self, opcode: int, payload: bytes, events: list[Event]) -> None:
        if opcode == _PING:
            if self.close_sent is None:
                self._pending_pongs.append(payload)
            events.append(Ping(payload))
        elif opcode == _PONG:
            events.append(Pong(payload))
        else:
            close = Close(*parse_close_payload(payload))
            self.close_received = close
            events.append(close)
            if self.close_sent is None:
                self.close_pending = True
                # The peer closes first. Our reply waits until the application has taken
                # the messages that came before this close (they follow it in ``events``):
                # until then it may still answer them (see send_close, close_pending).
                return
            # The reply to our close. Our code describes the connection unless the peer
            # answered with the same one (or none): then its reason is the fuller one.
            ours = self.close_sent
            if ours.code in (close.code, _NO_STATUS):
                self._end(close.code, close.reason, "local")
            else:
                self._end(ours.code, ours.reason, "local")

    def _message_chunk(self, chunk: bytes, last: bool, events: list[Event]) -> None:
        """A piece of the current message's payload; ``last`` ends the message."""
        if self._msg_compressed:
            assert self.extension is not None
            limit = self.max_message_size
            try:
                chunk = self.extension.decode(
                    chunk, last, None if limit is None else limit - self._msg_size
                )
            except Exception as exc:
                code = getattr(exc, "code", None)
                reason = getattr(exc, "reason", None)
                if isinstance(code, int) and isinstance(reason, str):
                    raise FrameError(code, reason) from None  # bad input (DeflateError)
                # Not the peer's fault: a bug must not pass for corrupt data (1007).
                logger.exception("WebSocket extension %r failed", self.extension)
                raise FrameError(CloseCode.INTERNAL_ERROR, "internal error in extension") from None
        self._msg_size += len(chunk)
        if last:
            self.messages_in += 1
            self.bytes_in += self._msg_size
        decoder = self._decoder
        if decoder is not None:
            try:
                text = decoder.decode(chunk, last)
            except UnicodeDecodeError:
                raise FrameError(
                    CloseCode.INVALID_DATA, "invalid UTF-8 in a text message"
                ) from None
            if not last and not _partial_utf8_ok(decoder.getstate()[0]):
                raise FrameError(CloseCode.INVALID_DATA, "invalid UTF-8 in a text message")
            if text:
                if self._text_parts:
                    self._text_parts.append(text)
                else:
                    self._text_parts = [text]
            if last:
                events.append(Message("".join(self._text_parts)))
                self._reset_message()
        else:
            if chunk:
                if self._msg_parts:
                    self._msg_parts.append(chunk)
                else:
                    self._msg_parts = [chunk]
            if last:
                events.append(Message(b"".join(self._msg_parts)))
                self._reset_message()

    def _reset_message(self) -> None:
        self._msg_opcode = 0
        self._msg_compressed = False
        self._msg_size = 0
        self._msg_frames = 0
        self._msg_parts = ()
        self._text_parts = ()
        self._decoder = None
        self.payload_pending = 0

    def receive_eof(self, reason: str = "the peer closed TCP without a close frame") -> None:
        """The peer's stream ended: its FIN, or a lost connection (``reason`` says which).

        Before the closing handshake completed this ends the connection (see
        :meth:`abort`). A client ends its own side in turn: the server closes TCP
        first (RFC 6455 7.1.1).
        """
        self.eof_received = True
        self.abort(reason)
        if self._is_client:
            self._queue_eof()

    def abort(self, reason: str) -> None:
        """End the connection without (the rest of) a closing handshake: the I/O layer gave
        up (a close timeout, a socket error). A no-op once closed.

        Our close's code describes the end if we had sent one, else the peer's if it had
        closed; else it is 1006 (abnormal).
        """
        if self.state is _CLOSED:
            return
        self._pending_pongs.clear()
        ours = self.close_sent
        if ours is not None:
            self._end(ours.code, ours.reason, "local")
        elif self.close_received is not None:
            # Before our reply: "the status code contained in the first Close control frame
            # received" describes the end (RFC 6455 7.1.5), not 1006.
            theirs = self.close_received
            self._end(theirs.code, theirs.reason, "remote")
        else:
            self._end(CloseCode.ABNORMAL, reason, "abnormal")

    # --------------------------------------------------------------------- send

    def _check_can_send(self) -> None:
        if self.state is not _OPEN:
            raise InvalidState(f"cannot send in state {self.state.name}")

    def send_message(self, data: str | bytes | bytearray | memoryview) -> None:
        """Queue a whole message (text for ``str``, binary otherwise).

        A large payload is not copied behind its header: its frames leave as
        separate buffers, for a writer with vectored writes (``sendmsg``).
        """
        if self.state is not _OPEN or self._out_fragmenting:
            self._check_can_send()
            raise InvalidState("a streamed message is in progress")
        if isinstance(data, str):
            opcode = 0x1
            payload = data.encode()
        else:
            opcode = 0x2
            payload = data if type(data) is bytes else bytes(data)
        n = len(payload)
        self.messages_out += 1
        self.bytes_out += n
        rsv = 0
        ext = self.extension
        if ext is not None and ext.should_compress(n):
            payload = ext.encode(payload)
            n = len(payload)
            rsv = ext.rsv1
        out = self._out
        if n > self.fragment_size:
            self._fragment(opcode, payload, rsv)
        elif self._is_client:
            out.append(frame(opcode, payload, rsv=rsv, masked=True))
        elif n < 126:
            out.append(short_frame_header(rsv | opcode, n) + payload)
        elif n <= _JOIN_LIMIT:
            out.append(frame_header(0x80 | rsv | opcode, n, False) + payload)
        else:
            out += (frame_header(0x80 | rsv | opcode, n, False), payload)

    def _fragment(self, opcode: int, payload: bytes, rsv: int) -> None:
        size = self.fragment_size
        total = len(payload)
        view = memoryview(payload)
        out = self._out
        client = self._is_client
        for i in range(0, total, size):
            piece = view[i : i + size]
            b0 = (0x80 if i + size >= total else 0) | (rsv | opcode if i == 0 else 0)
            if client:
                out.append(frame(b0 & 0x0F, piece, fin=bool(b0 & 0x80), rsv=b0 & 0x70, masked=True))
            else:
                out += (frame_header(b0, len(piece), False), piece)

    def send_framed(self, message: FramedMessage) -> None:
        """Queue a whole message framed once for many connections (:meth:`FramedMessage.frame`).

        The same checks as :meth:`send_message`: nothing after our close, nothing inside a
        streamed message (RFC 6455 5.4: a data frame may not interleave its fragments).
        """
        if self.state is not _OPEN or self._out_fragmenting:
            self._check_can_send()
            raise InvalidState("a streamed message is in progress")
        if self._is_client:
            # "The masking key MUST be derived from a strong source of entropy" for each
            # frame (RFC 6455 5.3): a client's frames cannot be shared.
            raise ValueError("a client masks every frame: it cannot send shared frames")
        if message.compressed and self.extension is None:
            raise ValueError("a compressed frame for a connection without compression")
        self._out += message.frames
        self.messages_out += 1
        self.bytes_out += message.size

    def send_framed_now(self, message: FramedMessage) -> Sequence[Buffer]:
        """:meth:`send_framed`, then :meth:`data_to_send`, in one call: a broadcast writes
        one message to many sockets, and this is its step per socket.

        With nothing else queued, the result is ``message.frames`` itself (shared: the
        writer must not change it).
        """
        if (
            self.state is not _OPEN
            or self._out_fragmenting
            or self._is_client
            or self._out
            or self._pending_pongs
        ):
            self.send_framed(message)  # its checks raise; or the frames join what is queued
            return self.data_to_send()
        if message.compressed and self.extension is None:
            raise ValueError("a compressed frame for a connection without compression")
        self.messages_out += 1
        self.bytes_out += message.size
        return message.frames

    def send_fragment(self, data: str | bytes | bytearray | memoryview, fin: bool) -> None:
        """Queue one piece of a streamed message; the first piece decides text or binary."""
        self._check_can_send()
        payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        self.bytes_out += len(payload)
        if fin:
            self.messages_out += 1
        rsv = 0
        ext = self.extension
        if self._out_fragmenting:
            opcode = Opcode.CONTINUATION
        else:
            opcode = Opcode.TEXT if isinstance(data, str) else Opcode.BINARY
            self._out_compressed = ext is not None
            if ext is not None:
                rsv = ext.rsv1
        if self._out_compressed:
            assert ext is not None
            payload = ext.encode_fragment(payload, fin)
        self._out_fragmenting = not fin
        self._out.append(frame(opcode, payload, fin=fin, rsv=rsv, masked=self._is_client))

    def send_ping(self, payload: bytes = b"") -> None:
        self._check_can_send()
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise ValueError("ping payload over 125 bytes")
        self._out.append(frame(_PING, payload, masked=self._is_client))

    def send_close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake (RFC 6455 7.1.2), or answer the peer's close when it
        started it (:attr:`close_pending`); a no-op once closing or closed.

        The answer echoes the peer's code, whatever ``code`` says: "the endpoint typically
        echos the status code it received" (5.5.1), and that code describes the end
        (7.1.5); then the connection is closed. A streamed message still unfinished
        cannot be completed: the close goes out anyway (a control frame may come between
        fragments, 5.4).
        """
        payload = encode_close_payload(code, reason)  # validate before changing anything
        if self.state is not _OPEN:
            return
        self._take_pongs()  # pings that came before our close still get their pongs, first
        theirs = self.close_received
        if theirs is not None:
            self._queue_close(theirs.code, "")  # an empty close gets an empty reply
            self._end(theirs.code, theirs.reason, "remote")
            return
        self._queue_close(code, reason, payload)
        self.state = _CLOSING

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): a close with ``code`` unless one was sent,
        then the server ends TCP without waiting (7.1.1); a client waits for the server's FIN.

        ``code`` 1006 sends no close frame (there is no way to write one). Input
        is ignored from now on; a no-op once closed.
        """
        if self.state is _CLOSED:
            return
        self._pending_pongs.clear()
        if self.close_sent is None and code != CloseCode.ABNORMAL:
            self._queue_close(code, reason)
        self._end(code, reason, "abnormal" if code == CloseCode.ABNORMAL else "local")

    def _queue_close(self, code: int, reason: str, payload: bytes | None = None) -> None:
        # ``payload``: encode_close_payload(code, reason), when the caller has it already.
        if payload is None:
            payload = encode_close_payload(code, reason)
        self.close_sent = Close(code, reason)
        self._out.append(frame(_CLOSE, payload, masked=self._is_client))

    def _take_pongs(self) -> None:
        pongs = self._pending_pongs
        if pongs:
            if self.state is _OPEN:
                masked = self._is_client
                self._out += [frame(_PONG, payload, masked=masked) for payload in pongs]
            pongs.clear()

    def _queue_eof(self) -> None:
        if not self._eof_queued:
            self._eof_queued = True
            self._out.append(END_OF_STREAM)

    def _end(self, code: int, reason: str, initiator: Initiator) -> None:
        """The connection is over: record how; a server ends TCP first (RFC 6455 7.1.1)."""
        self.state = _CLOSED
        self.close_pending = False
        self.close_code = code
        self.close_reason = reason
        self.close_initiator = initiator
        if not self._is_client:
            self._queue_eof()

    def data_to_send(self) -> list[Buffer]:
        """Everything to write, in order; :data:`END_OF_STREAM` (last) means half-close TCP.

        Pings received are answered here; pongs not taken before the next
        :meth:`receive_data` call are superseded by newer pings (RFC 6455 5.5.3).
        """
        if self._pending_pongs:
            self._take_pongs()
        out = self._out
        if not out:
            return out
        self._out = []
        return out

    @property
    def has_output(self) -> bool:
        """True when :meth:`data_to_send` has something."""
        return bool(self._out or self._pending_pongs)

    def close_expected(self) -> bool:
        """Should the I/O layer wait (at most its close timeout) for the peer to end TCP?

        True while our close awaits the peer's (CLOSING); once CLOSED, for a
        client until the server's FIN, and for a server that failed or closed
        before hearing the peer's close (it reads what comes until the peer's FIN,
        so its close frame is not lost to a reset).
        """
        if self.state is _OPEN or self.eof_received:
            return False
        if self.state is _CLOSING:
            return True
        return self._is_client or self.close_received is None

    @property
    def streaming(self) -> bool:
        """True while a streamed (fragmented) outgoing message is unfinished."""
        return self._out_fragmenting

    @property
    def closed(self) -> bool:
        return self.state is _CLOSED


@dataclass(frozen=True, slots=True, repr=False)
class FramedMessage:
    """A whole data message framed once, to be sent on many server connections.

    Server frames are unmasked (RFC 6455 5.1), so a message's frames are the same bytes
    on every connection with the same compression settings: a broadcast frames each
    message once per such setting and every connection queues the shared buffers
    (:meth:`Protocol.send_framed`). ``data`` is the message as given; ``frames`` its
    wire form; ``size`` its payload bytes before compression (what the counters add);
    ``compressed`` whether its frames are (RSV1 set: only for connections that negotiated
    compression).
    """

    data: str | bytes
    frames: tuple[Buffer, ...]
    size: int
    compressed: bool = False

    @classmethod
    def frame(cls, data: str | bytes, extension: Extension | None = None) -> FramedMessage:
        """``data`` framed exactly as a server's :meth:`Protocol.send_message` frames it.

        ``extension`` compresses: only one that compresses each message on its own (no
        context takeover) gives bytes that are right for every connection sharing them.
        """
        framer = Protocol(Role.SERVER, max_message_size=None, extension=extension)
        framer.send_message(data)
        frames = tuple(framer.data_to_send())
        return cls(data, frames, framer.bytes_out, bool(frames[0][0] & 0x40))

    def __repr__(self) -> str:
        return f"FramedMessage({self.data[:40]!r}, {len(self.frames)} buffers)"
