"""WebSocket frames (RFC 6455 section 5): opcodes, close codes, headers, masking, close payloads.

Pure functions and constants, no state: :mod:`wsgiws.protocol` builds the
connection's state machine on them.
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Callable
from typing import Final

__all__ = [
    "MAX_CONTROL_PAYLOAD",
    "OK_CLOSE_CODES",
    "Buffer",
    "CloseCode",
    "FrameError",
    "Opcode",
    "apply_mask",
    "check_header",
    "encode_close_payload",
    "frame",
    "frame_header",
    "is_valid_close_code",
    "parse_close_payload",
    "short_frame_header",
]

#: A buffer to write: ``bytes``, or a ``memoryview`` of a large payload.
Buffer = bytes | memoryview


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

#: "All control frames MUST have a payload length of 125 bytes or less" (RFC 6455 5.5).
MAX_CONTROL_PAYLOAD: Final = 125


class FrameError(Exception):
    """Bytes from the peer break RFC 6455; the connection fails with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


def is_valid_close_code(code: int) -> bool:
    """True for a code that may appear in a close frame on the wire."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


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


#: (Bound once: a member lookup on its enum class is slow on Python 3.11; see protocol.py.)
_NO_STATUS: Final = CloseCode.NO_STATUS
_PACK_H: Final = struct.Struct("!H").pack
_PACK_Q: Final = struct.Struct("!Q").pack
_UNPACK_H: Final = struct.Struct("!H").unpack_from

#: Unmasked headers of final text/binary frames (RSV1 or not) with 7-bit lengths.
_SHORT_HEADERS: Final = {
    rsv | opcode: tuple(bytes((0x80 | rsv | opcode, n)) for n in range(126))
    for rsv in (0x00, 0x40)
    for opcode in (0x1, 0x2)
}


def short_frame_header(first: int, n: int) -> bytes:
    """The (cached) unmasked header of a final data frame: ``first`` is RSV | opcode, n < 126."""
    return _SHORT_HEADERS[first][n]


def frame_header(b0: int, n: int, masked: bool) -> bytes:
    """A frame header without the masking key: first byte ``b0``, payload length ``n``."""
    mask_bit = 0x80 if masked else 0
    if n < 126:
        return bytes((b0, mask_bit | n))
    if n < 65536:
        return bytes((b0, mask_bit | 126)) + _PACK_H(n)
    return bytes((b0, mask_bit | 127)) + _PACK_Q(n)


def frame(
    opcode: int,
    payload: bytes | bytearray | memoryview,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = False,
) -> bytes:
    """A whole frame; ``masked`` (client frames, RFC 6455 5.3) with a fresh random key."""
    header = frame_header((0x80 if fin else 0) | rsv | opcode, len(payload), masked)
    if masked:
        key = os.urandom(4)
        return header + key + apply_mask(payload, key)
    return header + payload


def encode_close_payload(code: int, reason: str) -> bytes:
    """A close frame's payload: the code (none for 1005) and the UTF-8 reason (RFC 6455 5.5.1)."""
    if code == _NO_STATUS:
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent on the wire")
    payload = _PACK_H(code) + reason.encode("utf-8")
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise ValueError("close reason is longer than 123 bytes in UTF-8")
    return payload


def parse_close_payload(payload: bytes) -> tuple[int, str]:
    """A received close frame's code (1005 when absent) and reason; FrameError when invalid."""
    n = len(payload)
    if n == 0:
        return _NO_STATUS, ""
    if n == 1:
        raise FrameError(CloseCode.PROTOCOL_ERROR, "close frame with a 1-byte payload")
    (code,) = _UNPACK_H(payload, 0)
    if not is_valid_close_code(code):
        raise FrameError(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(CloseCode.PROTOCOL_ERROR, "close reason is not valid UTF-8") from None
    return code, reason


def check_header(b0: int, length: int, allowed_rsv: int, in_message: bool) -> None:
    """Validate a frame from its first byte and length alone (RFC 6455 5.2, 5.4, 5.5).

    ``in_message``: a fragmented message is being received (only continuations
    and control frames may come).
    """
    opcode = b0 & 0x0F
    rsv = b0 & 0x70
    if opcode >= 8:
        if opcode > 0xA:
            raise FrameError(CloseCode.PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
        if rsv:
            raise FrameError(CloseCode.PROTOCOL_ERROR, "reserved bits set on a control frame")
        if not b0 & 0x80:
            raise FrameError(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
        if length > MAX_CONTROL_PAYLOAD:
            raise FrameError(CloseCode.PROTOCOL_ERROR, "control frame payload over 125 bytes")
        return
    if opcode > 2:
        raise FrameError(CloseCode.PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
    if rsv & ~allowed_rsv:
        raise FrameError(CloseCode.PROTOCOL_ERROR, "reserved bits set with no extension negotiated")
    if opcode == 0:
        if not in_message:
            raise FrameError(CloseCode.PROTOCOL_ERROR, "continuation frame without a message")
        if rsv:
            raise FrameError(CloseCode.PROTOCOL_ERROR, "RSV1 set on a continuation frame")
    elif in_message:
        raise FrameError(CloseCode.PROTOCOL_ERROR, "new message inside a fragmented message")
