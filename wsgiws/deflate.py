"""Sans-I/O permessage-deflate (RFC 7692) for wsgiws.

This module negotiates the extension (server and client side) and compresses / decompresses
message payloads. It does no I/O and imports only the standard library; the protocol core calls it.

Division of labour with the protocol core
-----------------------------------------
* Receiving: a data frame that starts a message with RSV1 set means the message is compressed:
  call :meth:`PerMessageDeflate.begin_message`, then :meth:`PerMessageDeflate.decode` for the
  payload of that frame and of each continuation frame (``fin`` true on the last one). The core
  must fail the connection with 1002 when RSV1 is set on a control frame, on a continuation frame,
  or on any frame when the extension was not negotiated. Control frames never go through here.
* Sending: when :meth:`PerMessageDeflate.should_compress` agrees, set RSV1 on the *first* frame
  only and send :meth:`PerMessageDeflate.encode` (whole message) or, for a streamed message, the
  outputs of :meth:`PerMessageDeflate.encode_fragment` (one per frame, ``fin`` on the last).
  Uncompressed messages (RSV1 clear) may be mixed freely with compressed ones (RFC 7692 §6).
* :class:`DeflateError` carries the close code to fail the connection with.

Close codes
-----------
* 1009 (message too big) when inflating would exceed the allowed size. Inflation is bounded:
  zlib produces at most 64 KiB per call and stops once ``max_size + 1`` bytes came out, so a
  decompression bomb costs about the limit plus 64 KiB, never more (1 MiB limit, 10 MiB bomb:
  peak traced memory about 1.1 MiB).
* 1007 (invalid frame payload data) for corrupt compressed data. RFC 7692 does not name a code;
  RFC 6455 §7.4.1 defines 1007 for "data within a message that was not consistent with the type of
  the message", which is the closest fit, and it is what other implementations commonly send.
  1002 would suggest a framing error, which this is not.

Choices and measurements (zlib 1.2.13, CPython 3.11, ``tests/measure_deflate.py``)
-------------------------------------------------------------------------------------
Memory held per object after one message (tracemalloc, average over 1000 objects)::

    wbits memLevel  compressor  decompressor(window = wbits)
       15        8      262.0K       39.2K     (zlib defaults)
       15        5      150.0K       39.2K
       13        5       54.0K       15.2K
       12        5       38.0K       11.2K     <- our default
       11        4       22.0K        9.2K
       10        3       14.0K        8.2K
        9        1        9.0K        7.7K

On JSON-like messages (74 B to 15 KB) 12/5 compresses within 0.1% of 15/8, so the defaults are
window bits 12 (both directions, when the peer lets us choose) and memLevel 5: about 49 KB per
connection instead of about 301 KB. Level 6 (zlib's default) is kept: on a 15 KB message it
costs 112 us against 42 us for level 1 but produces 1486 bytes instead of 1886; below 1 KB the
difference is under 3 us.

With context takeover even 16 to 64 byte messages of similar shape shrink to 25-40% of their
size, without it they barely shrink below 128 bytes (0.91 at 64 B, 0.56 at 128 B), and a
non-compressible 5 byte message grows to 7 bytes. Hence the default threshold below which
messages are sent uncompressed: 32 bytes with context takeover, 128 bytes without.

When our side must not use context takeover, a fresh compressor is made for each message and
dropped afterwards (about 1 us more per message than a reused compressor with Z_FULL_FLUSH), so
idle connections hold no compressor memory. Likewise the inflater is dropped after each message
when the peer does not use context takeover.

zlib quirks
-----------
* zlib refuses window bits 8 for raw deflate streams. When we are limited to 8 bits
  (``server_max_window_bits=8`` offered to our server, or ``client_max_window_bits=8`` imposed on
  our client) we still accept, but :meth:`PerMessageDeflate.should_compress` always answers False
  and :meth:`PerMessageDeflate.encode` falls back to stored (level 0) blocks, which contain no
  back-references and are valid for any window. Incoming messages can still be compressed.
* The inflater uses the negotiated window of the peer but at least 9 bits: some zlib-based
  peers asked for 8 bits silently use 9, and a larger inflate window is always safe. Always
  inflating with 15 bits would also be safe but would cost 39.2K instead of 11.2K per connection
  with the default 12. A peer that exceeds the window it agreed to gets 1007 ("invalid distance
  too far back") when zlib notices, i.e. when a reference reaches before data kept from earlier
  calls; within one call zlib resolves it from its output buffer. Output is never wrong.

Case sensitivity: extension and parameter names are compared exactly (they are registered in
lower case; RFC 6455 §9.1 gives no case-insensitive rule for them), like mainstream
implementations. ``Permessage-Deflate`` is therefore an unknown extension and is ignored.
"""

from __future__ import annotations

import re
import sys
import zlib
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_MEM_LEVEL",
    "DEFAULT_THRESHOLD",
    "DEFAULT_THRESHOLD_NO_CONTEXT_TAKEOVER",
    "DEFAULT_WINDOW_BITS",
    "EXTENSION_NAME",
    "DeflateError",
    "DeflateOptions",
    "NegotiationError",
    "PerMessageDeflate",
    "client_accept",
    "client_offer",
    "parse_extensions",
    "server_negotiate",
]

EXTENSION_NAME = "permessage-deflate"

DEFAULT_WINDOW_BITS = 12
DEFAULT_MEM_LEVEL = 5
DEFAULT_LEVEL = 6
DEFAULT_THRESHOLD = 32
DEFAULT_THRESHOLD_NO_CONTEXT_TAKEOVER = 128

_TRAILER = b"\x00\x00\xff\xff"
_SYNC = zlib.Z_SYNC_FLUSH
_NEVER = sys.maxsize
_CHUNK = 64 * 1024  # bound on one zlib output buffer while inflating

CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009


class DeflateError(Exception):
    """A compressed message cannot be accepted; fail the connection with :attr:`code`.

    ``code`` is 1009 (message too big) or 1007 (corrupt compressed data); ``reason`` is a short
    text suitable for the close frame.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class NegotiationError(ValueError):
    """The server's ``Sec-WebSocket-Extensions`` response is invalid: the client must fail."""


def _check_wbits(name: str, value: int | None) -> None:
    if value is not None and not 8 <= value <= 15:
        raise ValueError(f"{name} must be between 8 and 15, got {value!r}")


@dataclass(frozen=True)
class DeflateOptions:
    """User configuration of permessage-deflate, for a server or a client.

    ``compress_threshold``: messages shorter than this many bytes are sent uncompressed.
    None picks 32 bytes with context takeover, 128 bytes without (see module docstring).

    ``level``: zlib compression level (0 to 9, or -1 for zlib's default, which is 6).

    ``mem_level``: zlib memLevel (1 to 9) of the compressor.

    ``server_max_window_bits`` (8 to 15 or None):
        server: the window the server compresses with (None: 12); a smaller value offered by the
        client wins. It is announced in the response when below 15 or when the client asked.
        client: when set, the offer asks the server to compress with at most this window.

    ``client_max_window_bits`` (8 to 15 or None):
        server: when the client says it supports the parameter, ask it to compress with at most
        this window (None: 12); a smaller value offered by the client wins.
        client: offered with this value (we then compress with at most it); None offers the bare
        parameter, i.e. we accept whatever window the server imposes.

    ``server_no_context_takeover``:
        server: always answer with it (the server compresses each message independently).
        client: ask the server for it.

    ``client_no_context_takeover``:
        server: always answer with it (the client must compress each message independently,
        and we drop the inflater between messages). It is also answered when the client offers it.
        client: offer it (we compress each message independently).
    """

    compress_threshold: int | None = None
    level: int = DEFAULT_LEVEL
    mem_level: int = DEFAULT_MEM_LEVEL
    server_max_window_bits: int | None = None
    client_max_window_bits: int | None = None
    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False

    def __post_init__(self) -> None:
        if self.compress_threshold is not None and self.compress_threshold < 0:
            raise ValueError("compress_threshold must be >= 0")
        if not -1 <= self.level <= 9:
            raise ValueError(f"level must be between -1 and 9, got {self.level!r}")
        if not 1 <= self.mem_level <= 9:
            raise ValueError(f"mem_level must be between 1 and 9, got {self.mem_level!r}")
        _check_wbits("server_max_window_bits", self.server_max_window_bits)
        _check_wbits("client_max_window_bits", self.client_max_window_bits)


class PerMessageDeflate:
    """Negotiated per-connection state for one endpoint (server or client).

    "local" is the direction we compress (our sending side), "remote" the one we inflate.
    Build it with :func:`server_negotiate` or :func:`client_accept`; the constructor is public
    for tests and for cores that negotiate by other means.
    """

    rsv1: ClassVar[int] = 0x40

    __slots__ = (
        "_deflater",
        "_inflate_wbits",
        "_inflater",
        "compress_threshold",
        "level",
        "local_max_window_bits",
        "local_no_context_takeover",
        "mem_level",
        "remote_max_window_bits",
        "remote_no_context_takeover",
    )

    def __init__(
        self,
        *,
        local_max_window_bits: int = 15,
        remote_max_window_bits: int = 15,
        local_no_context_takeover: bool = False,
        remote_no_context_takeover: bool = False,
        level: int = DEFAULT_LEVEL,
        mem_level: int = DEFAULT_MEM_LEVEL,
        compress_threshold: int | None = None,
    ) -> None:
        _check_wbits("local_max_window_bits", local_max_window_bits)
        _check_wbits("remote_max_window_bits", remote_max_window_bits)
        self.local_max_window_bits = local_max_window_bits
        self.remote_max_window_bits = remote_max_window_bits
        self.local_no_context_takeover = local_no_context_takeover
        self.remote_no_context_takeover = remote_no_context_takeover
        self.level = level
        self.mem_level = mem_level
        if compress_threshold is None:
            compress_threshold = (
                DEFAULT_THRESHOLD_NO_CONTEXT_TAKEOVER
                if local_no_context_takeover
                else DEFAULT_THRESHOLD
            )
        if local_max_window_bits == 8:
            compress_threshold = _NEVER  # zlib cannot compress with a 256 byte window
        self.compress_threshold = compress_threshold
        self._inflate_wbits = -max(remote_max_window_bits, 9)
        self._inflater: zlib._Decompress | None = None
        self._deflater: zlib._Compress | None = None

    def __repr__(self) -> str:
        return (
            f"PerMessageDeflate(local_max_window_bits={self.local_max_window_bits}, "
            f"remote_max_window_bits={self.remote_max_window_bits}, "
            f"local_no_context_takeover={self.local_no_context_takeover}, "
            f"remote_no_context_takeover={self.remote_no_context_takeover})"
        )

    # -- receiving -------------------------------------------------------------------------

    def begin_message(self) -> None:
        """A compressed message starts (RSV1 was set on its first frame)."""
        if self._inflater is None:
            self._inflater = zlib.decompressobj(self._inflate_wbits)

    def decode(self, payload: bytes, fin: bool, max_size: int | None) -> bytes:
        """Inflate the payload of one frame of a compressed message.

        ``fin``: this is the last frame; the RFC 7692 §7.2.2 trailer is appended and the message
        is finished. ``max_size``: inflated bytes still allowed for this message (None: no
        limit). Raises :class:`DeflateError` with 1009 past the limit, 1007 on corrupt data.
        """
        d = self._inflater
        if d is None:
            d = self._inflater = zlib.decompressobj(self._inflate_wbits)
        try:
            if max_size is None:
                out = d.decompress(payload)
                if fin:
                    tail = d.decompress(_TRAILER)
                    if tail:
                        out += tail
            else:
                # Inline fast path of _inflate_rest (most messages fit in one zlib call).
                if max_size < 0:
                    max_size = 0
                limit = max_size + 1 if max_size < _CHUNK else _CHUNK
                out = d.decompress(payload, limit)
                if len(out) == limit:
                    out = _inflate_rest(d, out, max_size)
                if fin:
                    room = max_size - len(out)
                    limit = room + 1 if room < _CHUNK else _CHUNK
                    tail = d.decompress(_TRAILER, limit)
                    if tail:
                        if len(tail) == limit:
                            tail = _inflate_rest(d, tail, room)
                        out += tail
        except zlib.error as exc:
            self._inflater = None
            raise DeflateError(CLOSE_INVALID_DATA, f"invalid compressed data: {exc}") from None
        except DeflateError:
            self._inflater = None
            raise
        if fin and (self.remote_no_context_takeover or d.eof):
            # After a block with BFINAL set (RFC 7692 §7.2.3.4) the stream cannot continue: a
            # new inflater is needed. What follows that block (the appended trailer, and in the
            # RFC's example one more octet) is ignored, as zlib leaves it in unused_data.
            self._inflater = None
        return out

    # -- sending ---------------------------------------------------------------------------

    def should_compress(self, data_len: int) -> bool:
        """Whether an outgoing message of ``data_len`` bytes is worth compressing."""
        return data_len >= self.compress_threshold

    def _new_deflater(self) -> zlib._Compress:
        if self.local_max_window_bits == 8:
            # Stored blocks only: no back-references, so valid for a 256 byte window.
            return zlib.compressobj(0, zlib.DEFLATED, -9, self.mem_level)
        return zlib.compressobj(
            self.level, zlib.DEFLATED, -self.local_max_window_bits, self.mem_level
        )

    def encode(self, data: bytes) -> bytes:
        """Compress a whole outgoing message; the result is the payload (trailer removed)."""
        c = self._deflater
        if c is None:
            c = self._new_deflater()
            if not self.local_no_context_takeover:
                self._deflater = c
        head = c.compress(data)
        tail = c.flush(_SYNC)
        if self.local_no_context_takeover:
            self._deflater = None
        if head:
            return b"".join((head, memoryview(tail)[:-4]))
        return tail[:-4]

    @property
    def shared_encoding(self) -> tuple[int, int, int, int] | None:
        """What alone decides the bytes :meth:`encode` makes, when every message is compressed
        on its own (``local_no_context_takeover``): connections with equal values can share
        one compressed payload (a broadcast compresses once for them). None with context
        takeover, where each payload depends on the messages before it on this connection.
        """
        if not self.local_no_context_takeover:
            return None
        return self.local_max_window_bits, self.level, self.mem_level, self.compress_threshold

    def shared_encoder(self) -> PerMessageDeflate:
        """A new instance that compresses as this one does and holds no state of its own
        connection: the one encoder of everyone with this :attr:`shared_encoding`."""
        return PerMessageDeflate(
            local_max_window_bits=self.local_max_window_bits,
            local_no_context_takeover=True,
            level=self.level,
            mem_level=self.mem_level,
            compress_threshold=self.compress_threshold,
        )

    def encode_fragment(self, data: bytes, fin: bool) -> bytes:
        """Compress one frame of a streamed outgoing message.

        Every fragment is flushed so the peer can inflate it at once; only the last one
        (``fin``) has the ``00 00 ff ff`` trailer removed.
        """
        c = self._deflater
        if c is None:
            c = self._deflater = self._new_deflater()
        head = c.compress(data)
        tail = c.flush(_SYNC)
        if not fin:
            return head + tail if head else tail
        if self.local_no_context_takeover:
            self._deflater = None
        if head:
            return b"".join((head, memoryview(tail)[:-4]))
        return tail[:-4]


def _inflate_rest(d: zlib._Decompress, first: bytes, room: int) -> bytes:
    """Continue inflating after ``first`` filled a whole zlib output buffer.

    At most ``room`` bytes in total are allowed, else DeflateError(1009). zlib is asked for at
    most ``_CHUNK`` bytes at a time and for one byte more than allowed (``max_length=0`` would
    mean "unlimited"), so a bomb costs about ``room + _CHUNK`` bytes before it is detected.
    """
    parts = [first]
    total = len(first)
    while True:
        if total > room:
            raise DeflateError(CLOSE_TOO_BIG, "message too big")
        limit = min(room + 1 - total, _CHUNK)
        # Continue with the unconsumed input (possibly empty: zlib may still hold the output
        # of a long match).
        out = d.decompress(d.unconsumed_tail, limit)
        parts.append(out)
        total += len(out)
        if len(out) < limit:
            return b"".join(parts)


# -- header parsing ----------------------------------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_QUOTED = re.compile(r'"((?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*)"')
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_WBITS_VALUE = re.compile(r"(?:[89]|1[0-5])\Z")

Params = list[tuple[str, str | None]]


def _skip_ows(s: str, pos: int) -> int:
    n = len(s)
    while pos < n and (s[pos] == " " or s[pos] == "\t"):
        pos += 1
    return pos


def parse_extensions(header: str) -> list[tuple[str, Params]]:
    """Parse a ``Sec-WebSocket-Extensions`` value (RFC 6455 §9.1) into (name, params) pairs.

    Several header lines must be joined with ", " by the caller. Quoted-string values are
    unescaped; a parameter without value has None. Empty list elements are tolerated
    (RFC 7230 §7). Raises ValueError on a syntax error.
    """
    result: list[tuple[str, Params]] = []
    n = len(header)
    pos = _skip_ows(header, 0)
    while pos < n:
        if header[pos] == ",":
            pos = _skip_ows(header, pos + 1)
            continue
        m = _TOKEN.match(header, pos)
        if m is None:
            raise ValueError(f"expected an extension name at {pos} in {header!r}")
        name = m.group()
        params: Params = []
        pos = _skip_ows(header, m.end())
        while pos < n and header[pos] == ";":
            pos = _skip_ows(header, pos + 1)
            m = _TOKEN.match(header, pos)
            if m is None:
                raise ValueError(f"expected a parameter name at {pos} in {header!r}")
            pname = m.group()
            value: str | None = None
            pos = _skip_ows(header, m.end())
            if pos < n and header[pos] == "=":
                pos = _skip_ows(header, pos + 1)
                m = _TOKEN.match(header, pos)
                if m is not None:
                    value = m.group()
                else:
                    m = _QUOTED.match(header, pos)
                    if m is None:
                        raise ValueError(f"expected a parameter value at {pos} in {header!r}")
                    value = _QUOTED_PAIR.sub(r"\1", m.group(1))
                pos = _skip_ows(header, m.end())
            params.append((pname, value))
        result.append((name, params))
        if pos < n:
            if header[pos] != ",":
                raise ValueError(f"unexpected {header[pos]!r} at {pos} in {header!r}")
            pos = _skip_ows(header, pos + 1)
    return result


@dataclass
class _Params:
    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int | None = None
    client_max_window_bits: int | None = None
    client_max_window_bits_present: bool = False


def _parse_params(params: Params, *, response: bool) -> _Params:
    """Validate permessage-deflate parameters (RFC 7692 §7.1); ValueError if invalid."""
    p = _Params()
    seen: set[str] = set()
    for name, value in params:
        if name in seen:
            raise ValueError(f"duplicate parameter {name}")
        seen.add(name)
        if name == "server_no_context_takeover" or name == "client_no_context_takeover":
            if value is not None:
                raise ValueError(f"{name} takes no value")
            setattr(p, name, True)
        elif name == "server_max_window_bits" or name == "client_max_window_bits":
            if value is None:
                if name == "server_max_window_bits" or response:
                    raise ValueError(f"{name} needs a value")
            elif _WBITS_VALUE.match(value) is None:
                raise ValueError(f"invalid {name} value {value!r}")
            else:
                setattr(p, name, int(value))
            if name == "client_max_window_bits":
                p.client_max_window_bits_present = True
        else:
            raise ValueError(f"unknown parameter {name}")
    return p


# -- negotiation -------------------------------------------------------------------------------


def _accept_offer(p: _Params, options: DeflateOptions) -> tuple[str, PerMessageDeflate]:
    parts = [EXTENSION_NAME]
    server_nct = p.server_no_context_takeover or options.server_no_context_takeover
    # A client offering client_no_context_takeover promises it; confirming it costs nothing and
    # lets us drop the inflater between messages.
    client_nct = p.client_no_context_takeover or options.client_no_context_takeover
    if server_nct:
        parts.append("server_no_context_takeover")
    if client_nct:
        parts.append("client_no_context_takeover")

    server_wbits = options.server_max_window_bits or DEFAULT_WINDOW_BITS
    if p.server_max_window_bits is not None:
        server_wbits = min(server_wbits, p.server_max_window_bits)
    if server_wbits < 15 or p.server_max_window_bits is not None:
        parts.append(f"server_max_window_bits={server_wbits}")

    client_wbits = 15  # a client that did not offer the parameter may use any window
    if p.client_max_window_bits_present:
        client_wbits = options.client_max_window_bits or DEFAULT_WINDOW_BITS
        if p.client_max_window_bits is not None:
            client_wbits = min(client_wbits, p.client_max_window_bits)
        if client_wbits < 15:
            parts.append(f"client_max_window_bits={client_wbits}")

    ext = PerMessageDeflate(
        local_max_window_bits=server_wbits,
        remote_max_window_bits=client_wbits,
        local_no_context_takeover=server_nct,
        remote_no_context_takeover=client_nct,
        level=options.level,
        mem_level=options.mem_level,
        compress_threshold=options.compress_threshold,
    )
    return "; ".join(parts), ext


def server_negotiate(
    offer: str, options: DeflateOptions | None = None
) -> tuple[str, PerMessageDeflate] | None:
    """Accept the first acceptable permessage-deflate offer of a client.

    ``offer`` is the request's ``Sec-WebSocket-Extensions`` value (several header lines joined
    with ", "). Returns (response header value, extension state), or None when no offer is
    acceptable. Unknown extensions and invalid offers are skipped; a syntax error in the header
    declines everything.
    """
    if options is None:
        options = DeflateOptions()
    try:
        extensions = parse_extensions(offer)
    except ValueError:
        return None
    for name, params in extensions:
        if name != EXTENSION_NAME:
            continue
        try:
            p = _parse_params(params, response=False)
        except ValueError:
            continue
        return _accept_offer(p, options)
    return None


def client_offer(options: DeflateOptions | None = None) -> str:
    """The client's ``Sec-WebSocket-Extensions`` request value for ``options``."""
    if options is None:
        options = DeflateOptions()
    parts = [EXTENSION_NAME]
    if options.server_no_context_takeover:
        parts.append("server_no_context_takeover")
    if options.client_no_context_takeover:
        parts.append("client_no_context_takeover")
    if options.server_max_window_bits is not None:
        parts.append(f"server_max_window_bits={options.server_max_window_bits}")
    if options.client_max_window_bits is not None:
        parts.append(f"client_max_window_bits={options.client_max_window_bits}")
    else:
        parts.append("client_max_window_bits")
    return "; ".join(parts)


def client_accept(response: str, options: DeflateOptions | None = None) -> PerMessageDeflate:
    """Validate the server's ``Sec-WebSocket-Extensions`` response to :func:`client_offer`.

    Call it only when the response has the header (absent header: no extension in use).
    Raises :class:`NegotiationError` (a ValueError) when the client must fail the connection.
    """
    if options is None:
        options = DeflateOptions()
    try:
        extensions = parse_extensions(response)
    except ValueError as exc:
        raise NegotiationError(f"malformed Sec-WebSocket-Extensions: {exc}") from None
    if not extensions:
        raise NegotiationError("empty Sec-WebSocket-Extensions response")
    for name, _ in extensions:
        if name != EXTENSION_NAME:
            raise NegotiationError(f"server accepted an extension that was not offered: {name}")
    if len(extensions) > 1:
        raise NegotiationError("server accepted permessage-deflate more than once")
    try:
        p = _parse_params(extensions[0][1], response=True)
    except ValueError as exc:
        raise NegotiationError(str(exc)) from None

    if options.server_no_context_takeover and not p.server_no_context_takeover:
        raise NegotiationError("server did not confirm server_no_context_takeover")
    remote_wbits = 15
    if p.server_max_window_bits is not None:
        remote_wbits = p.server_max_window_bits
    if options.server_max_window_bits is not None and (
        p.server_max_window_bits is None
        or p.server_max_window_bits > options.server_max_window_bits
    ):
        raise NegotiationError(
            f"server did not confirm server_max_window_bits<={options.server_max_window_bits}"
        )
    local_wbits = options.client_max_window_bits or 15
    if p.client_max_window_bits is not None:
        # Our offer always carries client_max_window_bits, so the server may answer with it.
        if p.client_max_window_bits > local_wbits:
            raise NegotiationError(
                f"client_max_window_bits={p.client_max_window_bits} exceeds offered {local_wbits}"
            )
        local_wbits = p.client_max_window_bits
    local_nct = p.client_no_context_takeover or options.client_no_context_takeover
    return PerMessageDeflate(
        local_max_window_bits=local_wbits,
        remote_max_window_bits=remote_wbits,
        local_no_context_takeover=local_nct,
        remote_no_context_takeover=p.server_no_context_takeover,
        level=options.level,
        mem_level=options.mem_level,
        compress_threshold=options.compress_threshold,
    )
