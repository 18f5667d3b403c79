"""The sans-I/O WebSocket protocol engine (RFC 6455 sections 5 to 7).

Bytes go in through :meth:`Protocol.receive_data`, events come out; frames to
write come back from the ``send_*`` methods and :meth:`Protocol.data_to_send`.
Nothing here touches a socket, a clock or a greenlet, so the same engine serves
the server, the client and the in-process test client, and tests can feed it
one byte at a time.
"""

from __future__ import annotations

import codecs
import enum
import os
import struct
from collections.abc import Callable
from typing import ClassVar, Final
from typing import Protocol as _Interface

__all__ = [
    "OK_CLOSE_CODES",
    "Close",
    "CloseCode",
    "Event",
    "Extension",
    "Message",
    "Opcode",
    "Ping",
    "Pong",
    "Protocol",
    "ProtocolFailure",
    "Role",
    "State",
    "apply_mask",
    "is_valid_close_code",
]


class Opcode(enum.IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(enum.IntEnum):
    """Close codes of RFC 6455 section 7.4.1 and the IANA registry."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005  # never on the wire: the close frame had no code
    ABNORMAL = 1006  # never on the wire: the TCP connection ended without a close frame
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015  # never on the wire


#: Close codes that end a connection normally (iteration stops without an error).
OK_CLOSE_CODES: Final = frozenset({1000, 1001, 1005})


def is_valid_close_code(code: int) -> bool:
    """True for a code that may appear in a close frame on the wire."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class Role(enum.Enum):
    SERVER = "server"
    CLIENT = "client"


class State(enum.IntEnum):
    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


class Message:
    """A complete data message: ``str`` for text, ``bytes`` for binary."""

    __slots__ = ("data",)

    def __init__(self, data: str | bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"Message({self.data[:40]!r}{'...' if len(self.data) > 40 else ''})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and other.data == self.data

    __hash__ = None  # type: ignore[assignment]


class Ping:
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def __repr__(self) -> str:
        return f"Ping({self.payload!r})"


class Pong:
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def __repr__(self) -> str:
        return f"Pong({self.payload!r})"


class Close:
    """The peer's close frame arrived (``code`` is 1005 when it carried none)."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason

    def __repr__(self) -> str:
        return f"Close({self.code}, {self.reason!r})"


class ProtocolFailure:
    """The peer broke the protocol; a close frame with ``code`` is queued to send."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason

    def __repr__(self) -> str:
        return f"ProtocolFailure({self.code}, {self.reason!r})"


Event = Message | Ping | Pong | Close | ProtocolFailure


class Extension(_Interface):
    """What the engine needs of a negotiated extension (permessage-deflate is the one)."""

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


class _Fail(Exception):
    """Raised inside the parser; turned into a ProtocolFailure event."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


def _apply_mask_python(data: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:
    """XOR ``data`` with the 4-byte ``mask``, in C-speed big-integer arithmetic."""
    n = len(data)
    if n == 0:
        return b""
    key = (mask * ((n >> 2) + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


apply_mask: Callable[[bytes | bytearray | memoryview, bytes | bytearray], bytes]
try:  # An optional C accelerator; the pure-Python version stays the reference.
    if os.environ.get("WSGIWS_NO_EXTENSIONS", "") not in ("", "0"):
        raise ImportError("C extensions disabled by WSGIWS_NO_EXTENSIONS")
    from ._speedups import apply_mask  # type: ignore[import-not-found,no-redef,unused-ignore]
except ImportError:  # pragma: no cover - depends on the build
    apply_mask = _apply_mask_python


_UTF8_DECODER: Final = codecs.getincrementaldecoder("utf-8")
_PACK_H: Final = struct.Struct("!H").pack
_PACK_Q: Final = struct.Struct("!Q").pack
_UNPACK_H: Final = struct.Struct("!H").unpack_from
_UNPACK_Q: Final = struct.Struct("!Q").unpack_from
_MAX_CONTROL_PAYLOAD: Final = 125
#: Outgoing payloads up to this size are copied behind their header (one buffer).
_JOIN_LIMIT: Final = 16384
#: A buffer to write: ``bytes``, or a ``memoryview`` of a large payload.
Buffer = bytes | memoryview
#: Server frame headers of final text/binary frames (RSV1 or not) with 7-bit lengths.
_SHORT_HEADERS: Final = {
    rsv | opcode: tuple(bytes((0x80 | rsv | opcode, n)) for n in range(126))
    for rsv in (0x00, 0x40)
    for opcode in (0x1, 0x2)
}
_OPEN: Final = State.OPEN
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


def encode_close_payload(code: int, reason: str) -> bytes:
    if code == CloseCode.NO_STATUS:
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent on the wire")
    payload = _PACK_H(code) + reason.encode("utf-8")
    if len(payload) > _MAX_CONTROL_PAYLOAD:
        raise ValueError("close reason is longer than 123 bytes in UTF-8")
    return payload


class Protocol:
    """One endpoint of a WebSocket connection after the opening handshake.

    ``max_message_size`` bounds a message's payload (after decompression) and is
    enforced from frame headers before the payload is buffered; ``None`` lifts it.
    ``max_fragments`` bounds the frames of one message (default: enough for
    64-byte fragments of a maximal message).
    """

    __slots__ = (
        "_allowed_rsv",
        "_buf",
        "_decoder",
        "_expect_mask",
        "_frame_fin",
        "_frame_key",
        "_frame_left",
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
        "close_received",
        "close_sent",
        "extension",
        "failure",
        "fragment_size",
        "max_fragments",
        "max_message_size",
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
        self.state = State.OPEN
        self.max_message_size = max_message_size
        if max_fragments is None and max_message_size is not None:
            max_fragments = max(1024, max_message_size // 64)
        self.max_fragments = max_fragments
        self.extension = extension
        self.fragment_size = fragment_size
        self._is_client = role is Role.CLIENT
        # Incoming: frames from the peer are masked iff we are the server.
        self._expect_mask = 0x80 if role is Role.SERVER else 0x00
        self._allowed_rsv = extension.rsv1 if extension is not None else 0
        self._buf: bytes | bytearray = b""  # unparsed input (b"" while empty: no allocation)
        self._need = 2  # bytes the parser needs before it can make progress
        # The fragmented message being received: opcode 0 when none.
        # The data frame whose payload is arriving.
        self._frame_left = 0
        self._frame_fin = False
        self._frame_offset = 0
        self._frame_key: bytes | None = None
        self._msg_opcode = 0
        self._msg_compressed = False
        self._msg_size = 0
        self._msg_frames = 0
        self._msg_parts: list[bytes] = []
        self._text_parts: list[str] = []
        self._decoder: codecs.IncrementalDecoder | None = None
        # Outgoing.
        self._out = b""  # pongs and a close reply owed to the peer
        self._pending_pongs: list[bytes] = []
        self._out_fragmenting = False
        self._out_compressed = False
        self.close_sent: Close | None = None
        self.close_received: Close | None = None
        self.failure: ProtocolFailure | None = None

    # ------------------------------------------------------------------ receive

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed bytes from the peer; return the events they complete.

        After a :class:`ProtocolFailure` event the engine ignores further input;
        the caller sends a close with the failure's code (:meth:`send_close`),
        after delivering the messages that came before it, and ends TCP.
        """
        if self.close_received is not None or self.failure is not None:
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
        except _Fail as exc:
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
        while pos < end:
            left = self._frame_left
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
                self._frame_left = left = left - take
                self._message_chunk(chunk, not left and self._frame_fin, events)
                continue
            if end - pos < 2:
                self._need = 2
                return pos
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if b1 & 0x80 != expect_mask:
                raise _Fail(
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
                    raise _Fail(CloseCode.PROTOCOL_ERROR, "frame length has the top bit set")
            # 0x81 / 0x82: a final text / binary frame without RSV bits, the usual frame.
            whole = b0 == 0x81 or b0 == 0x82
            if whole and not self._msg_opcode:
                if limit is not None and length > limit:
                    raise _Fail(CloseCode.MESSAGE_TOO_BIG, f"message exceeds {limit} bytes")
            else:
                self._check_header(b0, b0 & 0x0F, b0 & 0x80, length)
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
                if b0 == 0x81:
                    try:
                        events.append(Message(payload.decode("utf-8")))
                    except UnicodeDecodeError:
                        raise _Fail(
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
        self._need = 1 if self._frame_left else 2
        return pos

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
            if opcode == Opcode.TEXT:
                self._decoder = _UTF8_DECODER()
        self._msg_frames += 1
        if self.max_fragments is not None and self._msg_frames > self.max_fragments:
            raise _Fail(CloseCode.MESSAGE_TOO_BIG, f"message has over {self.max_fragments} frames")
        self._frame_left = length
        self._frame_fin = bool(fin)
        self._frame_offset = 0

    def _check_header(self, b0: int, opcode: int, fin: int, length: int) -> None:
        """Validate a frame from its header alone, before its payload is buffered."""
        rsv = b0 & 0x70
        if opcode >= 8:
            if opcode > 0xA:
                raise _Fail(CloseCode.PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
            if rsv:
                raise _Fail(CloseCode.PROTOCOL_ERROR, "reserved bits set on a control frame")
            if not fin:
                raise _Fail(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
            if length > _MAX_CONTROL_PAYLOAD:
                raise _Fail(CloseCode.PROTOCOL_ERROR, "control frame payload over 125 bytes")
            return
        if opcode > 2:
            raise _Fail(CloseCode.PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
        if rsv & ~self._allowed_rsv:
            raise _Fail(CloseCode.PROTOCOL_ERROR, "reserved bits set with no extension negotiated")
        if opcode == 0:
            if not self._msg_opcode:
                raise _Fail(CloseCode.PROTOCOL_ERROR, "continuation frame without a message")
            if rsv:
                raise _Fail(CloseCode.PROTOCOL_ERROR, "RSV1 set on a continuation frame")
        elif self._msg_opcode:
            raise _Fail(CloseCode.PROTOCOL_ERROR, "new message inside a fragmented message")
        limit = self.max_message_size
        # A compressed payload is bounded again after inflation; its wire size cannot exceed it.
        if limit is not None and (self._msg_size if opcode == 0 else 0) + length > limit:
            raise _Fail(CloseCode.MESSAGE_TOO_BIG, f"message exceeds {limit} bytes")

    def _control_frame(self, opcode: int, payload: bytes, events: list[Event]) -> None:
        if opcode == Opcode.PING:
            if self.close_sent is None:
                self._pending_pongs.append(payload)
            events.append(Ping(payload))
        elif opcode == Opcode.PONG:
            events.append(Pong(payload))
        else:
            close = self._parse_close(payload)
            self.close_received = close
            # Echo the peer's code (RFC 6455 5.5.1); an empty close gets an empty reply.
            self._queue_close(close.code, "")
            self.state = State.CLOSED
            events.append(close)

    @staticmethod
    def _parse_close(payload: bytes) -> Close:
        n = len(payload)
        if n == 0:
            return Close(CloseCode.NO_STATUS, "")
        if n == 1:
            raise _Fail(CloseCode.PROTOCOL_ERROR, "close frame with a 1-byte payload")
        (code,) = _UNPACK_H(payload, 0)
        if not is_valid_close_code(code):
            raise _Fail(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
        try:
            reason = payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise _Fail(CloseCode.PROTOCOL_ERROR, "close reason is not valid UTF-8") from None
        return Close(code, reason)

    def _message_chunk(self, chunk: bytes, last: bool, events: list[Event]) -> None:
        """A piece of the current message's payload; ``last`` ends the message."""
        if self._msg_compressed:
            assert self.extension is not None
            limit = self.max_message_size
            try:
                chunk = self.extension.decode(
                    chunk, last, None if limit is None else limit - self._msg_size
                )
            except Exception as exc:  # DeflateError carries its code; anything else is corrupt
                code = getattr(exc, "code", CloseCode.INVALID_DATA)
                raise _Fail(code, getattr(exc, "reason", "invalid compressed data")) from None
        self._msg_size += len(chunk)
        decoder = self._decoder
        if decoder is not None:
            try:
                text = decoder.decode(chunk, last)
            except UnicodeDecodeError:
                raise _Fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text message") from None
            if not last and not _partial_utf8_ok(decoder.getstate()[0]):
                raise _Fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text message")
            if text:
                self._text_parts.append(text)
            if last:
                events.append(Message("".join(self._text_parts)))
                self._reset_message()
        else:
            if chunk:
                self._msg_parts.append(chunk)
            if last:
                events.append(Message(b"".join(self._msg_parts)))
                self._reset_message()

    def _reset_message(self) -> None:
        self._msg_opcode = 0
        self._msg_compressed = False
        self._msg_size = 0
        self._msg_frames = 0
        self._msg_parts = []
        self._text_parts = []
        self._decoder = None
        self._frame_left = 0

    @property
    def payload_pending(self) -> int:
        """Bytes of the current frame's payload not received yet (0 between frames).

        Lets the caller read a large payload in few, large reads.
        """
        return self._frame_left

    def receive_eof(self) -> None:
        """The peer closed its side of the TCP connection."""
        self.state = State.CLOSED

    # --------------------------------------------------------------------- send

    def _header(self, b0: int, n: int) -> bytes:
        """A frame header: first byte ``b0``, payload length ``n``, mask bit for a client."""
        mask_bit = 0x80 if self._is_client else 0
        if n < 126:
            return bytes((b0, mask_bit | n))
        if n < 65536:
            return bytes((b0, mask_bit | 126)) + _PACK_H(n)
        return bytes((b0, mask_bit | 127)) + _PACK_Q(n)

    def _frame(self, opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> bytes:
        header = self._header((0x80 if fin else 0) | rsv | opcode, len(payload))
        if self._is_client:
            key = os.urandom(4)
            return header + key + apply_mask(payload, key)
        return header + payload

    def _check_can_send(self) -> None:
        if self.state is not State.OPEN or self.close_sent is not None:
            raise RuntimeError(f"cannot send data in state {self.state.name}")

    def send_message(self, data: str | bytes | bytearray | memoryview) -> bytes:
        """Frame a whole message (text for ``str``, binary otherwise); return the bytes to write."""
        return b"".join(self.send_message_parts(data))

    def send_message_parts(self, data: str | bytes | bytearray | memoryview) -> list[Buffer]:
        """Like :meth:`send_message`, but return the buffers to write, in order, unjoined.

        A large payload is not copied behind its header: a caller with vectored
        writes (``sendmsg``) saves a copy of the whole message.
        """
        if self.state is not _OPEN or self._out_fragmenting:
            self._check_can_send()
            raise RuntimeError("a streamed message is in progress")
        if isinstance(data, str):
            opcode = 0x1
            payload = data.encode()
        else:
            opcode = 0x2
            payload = data if type(data) is bytes else bytes(data)
        n = len(payload)
        rsv = 0
        ext = self.extension
        if ext is not None and ext.should_compress(n):
            payload = ext.encode(payload)
            n = len(payload)
            rsv = ext.rsv1
        if self._is_client or n > self.fragment_size:
            if n > self.fragment_size:
                return self._fragment_parts(opcode, payload, rsv)
            return [self._frame(opcode, payload, True, rsv)]
        if n < 126:
            return [_SHORT_HEADERS[rsv | opcode][n] + payload]
        header = self._header(0x80 | rsv | opcode, n)
        if n <= _JOIN_LIMIT:
            return [header + payload]
        return [header, payload]

    def _fragment_parts(self, opcode: int, payload: bytes, rsv: int) -> list[Buffer]:
        size = self.fragment_size
        total = len(payload)
        view = memoryview(payload)
        parts: list[Buffer] = []
        for i in range(0, total, size):
            piece = view[i : i + size]
            b0 = (0x80 if i + size >= total else 0) | (rsv | opcode if i == 0 else 0)
            if self._is_client:
                key = os.urandom(4)
                parts.append(self._header(b0, len(piece)) + key + apply_mask(piece, key))
            else:
                parts += (self._header(b0, len(piece)), piece)
        return parts

    def send_fragment(self, data: str | bytes | bytearray | memoryview, fin: bool) -> bytes:
        """Frame one piece of a streamed message; the first piece decides text or binary."""
        self._check_can_send()
        payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
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
        return self._frame(opcode, payload, fin, rsv)

    def send_ping(self, payload: bytes = b"") -> bytes:
        self._check_can_send()
        if len(payload) > _MAX_CONTROL_PAYLOAD:
            raise ValueError("ping payload over 125 bytes")
        return self._frame(Opcode.PING, payload)

    def send_pong(self, payload: bytes = b"") -> bytes:
        self._check_can_send()
        if len(payload) > _MAX_CONTROL_PAYLOAD:
            raise ValueError("pong payload over 125 bytes")
        return self._frame(Opcode.PONG, payload)

    def send_close(self, code: int = CloseCode.NORMAL, reason: str = "") -> bytes:
        """Start the closing handshake; return the close frame (``b""`` if one was sent already)."""
        payload = encode_close_payload(code, reason)
        if self.close_sent is not None or self.state is State.CLOSED:
            return b""
        self.close_sent = Close(code, reason)
        self.state = State.CLOSED if self.close_received is not None else State.CLOSING
        return self._frame(Opcode.CLOSE, payload)

    def _queue_close(self, code: int, reason: str) -> None:
        if self.close_sent is not None:
            return
        self._take_pongs()  # pings that came before the close still get their pongs, first
        self._out += self.send_close(code, reason)

    def _take_pongs(self) -> None:
        pongs = self._pending_pongs
        if pongs:
            if self.close_sent is None:
                for payload in pongs:
                    self._out += self._frame(Opcode.PONG, payload)
            pongs.clear()

    def data_to_send(self) -> bytes:
        """Bytes the engine owes the peer: pongs, a close reply.

        Every ping answered here gets its pong; pongs not taken before the next
        :meth:`receive_data` call are superseded by newer pings (RFC 6455 5.5.3).
        """
        if self._pending_pongs:
            self._take_pongs()
        if not self._out:
            return b""
        out = self._out
        self._out = b""
        return out

    @property
    def owes_data(self) -> bool:
        """True when :meth:`data_to_send` has something."""
        return bool(self._out or self._pending_pongs)

    @property
    def streaming(self) -> bool:
        """True while a streamed (fragmented) outgoing message is unfinished."""
        return self._out_fragmenting

    @property
    def closed(self) -> bool:
        """True once both close frames were exchanged or the connection failed."""
        return self.state is State.CLOSED or self.failure is not None
