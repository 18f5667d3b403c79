"""The one HTTP/1.1 head parser (RFC 9112): request and response heads, sans-I/O.

The client handshake, the client's proxy tunnel and the in-process test server
read heads here; the servers' adapters that write a 101 themselves build it with
:func:`response_head`. A head is read up to its blank line (CRLF CRLF, or a bare
LF LF from lax peers), bounded in size and header count; malformed heads raise
:class:`HeadError` with a short reason. Bodies are the callers' business.

Our own parser rather than h11: wsgiws needs heads only (the body of a refused
handshake is read with a bound, a 101 hands the stream over), and this is about
a hundred lines against a dependency with a state machine we would not use.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_HEADERS",
    "MAX_HEAD_SIZE",
    "HeadError",
    "HeadReader",
    "RequestHead",
    "ResponseHead",
    "parse_request_head",
    "parse_response_head",
    "response_head",
]

#: Largest head (start line and headers) accepted.
MAX_HEAD_SIZE: Final = 64 * 1024
MAX_HEADERS: Final = 256

Headers = list[tuple[str, str]]


class HeadError(ValueError):
    """A malformed or oversized HTTP head."""


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    reason: str
    headers: Headers


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    target: str
    version: str
    headers: Headers


class HeadReader:
    """Collects bytes until a head is complete.

    ``feed(data)`` returns the head's text (latin-1 decoded, without the blank
    line) once complete, else None; :attr:`rest` then holds the bytes after it.
    """

    __slots__ = ("_buf", "max_size", "rest")

    def __init__(self, max_size: int = MAX_HEAD_SIZE) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self.rest = b""

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> str | None:
        buf = self._buf
        buf += data
        end = buf.find(b"\r\n\r\n")
        sep = 4
        lf_end = buf.find(b"\n\n")
        if lf_end != -1 and (end == -1 or lf_end < end):
            end, sep = lf_end, 2
        if end == -1:
            if len(buf) > self.max_size:
                raise HeadError(f"head longer than {self.max_size} bytes")
            return None
        if end > self.max_size:
            raise HeadError(f"head longer than {self.max_size} bytes")
        head = bytes(buf[:end]).decode("latin-1")
        self.rest = bytes(buf[end + sep :])
        buf.clear()
        return head


def _parse_headers(lines: list[str]) -> Headers:
    if len(lines) > MAX_HEADERS:
        raise HeadError(f"more than {MAX_HEADERS} headers")
    headers: Headers = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            raise HeadError("obsolete header line folding")
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or " " in name:
            raise HeadError(f"malformed header line: {line[:200]!r}")
        headers.append((name, value.strip(" \t")))
    return headers


def parse_response_head(head: str) -> ResponseHead:
    """``HTTP/1.x NNN reason`` and the headers (names as sent, values trimmed)."""
    lines = head.replace("\r\n", "\n").split("\n")
    status_line = lines[0]
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise HeadError(f"malformed HTTP status line: {status_line[:200]!r}")
    return ResponseHead(int(code), reason.strip(), _parse_headers(lines[1:]))


def parse_request_head(head: str) -> RequestHead:
    """``METHOD target HTTP/1.x`` and the headers."""
    lines = head.replace("\r\n", "\n").split("\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
        raise HeadError(f"malformed HTTP request line: {lines[0][:200]!r}")
    method, target, version = parts
    return RequestHead(method, target, version, _parse_headers(lines[1:]))


def response_head(status: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """An HTTP/1.1 response head: ``HTTP/1.1 <status>``, the header lines, the blank line."""
    lines = "".join([f"{name}: {value}\r\n" for name, value in headers])
    return f"HTTP/1.1 {status}\r\n{lines}\r\n".encode("latin-1")
