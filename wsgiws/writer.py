"""Writing a connection's frames to its socket: whole buffers, vectored writes, corking.

One :class:`Writer` per connection; its caller holds the connection's send lock.
A write always completes (``sendall`` semantics) or raises ``OSError``.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Final

from .frames import Buffer

__all__ = ["CORK_LIMIT", "Writer"]

#: Most bytes of frames held back to go out with the next write (see Writer.hold).
CORK_LIMIT: Final = 65536
#: Buffers per sendmsg call (the system's limit, IOV_MAX, is 1024 on Linux).
_MAX_PARTS: Final = 256


class Writer:
    """Writes buffers to ``sock``; ``raw`` is the non-blocking OS socket under a gevent
    socket (tried first: no gevent machinery when the kernel takes everything), or None."""

    __slots__ = ("_held", "_held_size", "_raw", "_sock", "ended", "holding")

    def __init__(self, sock: socket.socket, raw: socket.socket | None) -> None:
        self._sock = sock
        self._raw = raw
        self._held: list[Buffer] | None = None
        self._held_size = 0
        #: Are frames held back, waiting for the next write or :meth:`flush`? (An attribute,
        #: not a property: the connection looks at it for every read and every send.)
        self.holding = False
        #: Has our side of TCP been ended (the protocol's end-of-stream marker written)?
        self.ended = False

    def hold(self, part: Buffer) -> int:
        """Hold ``part`` back to go out with the next write, if it fits: 0 when it does not
        (only with a raw socket, within the limit), 1 when it is the first held, else 2.

        Corking: replies to a batch of pipelined messages then leave in one system
        call instead of one each. The caller arranges for a flush soon.
        """
        if self._raw is None or self._held_size + len(part) > CORK_LIMIT:
            return 0
        return 1 if self._keep(part) else 2

    def _keep(self, part: Buffer) -> bool:
        """Keep ``part`` to go out before anything else; True if it is the first held."""
        self._held_size += len(part)
        if self._held is None:
            self._held = [part]
            self.holding = True
            return True
        self._held.append(part)
        return False

    def write_nowait(self, parts: Sequence[Buffer]) -> bool:
        """Write what the raw socket takes now, without waiting, and keep the rest
        (whatever its size: it must not be lost or reordered) for the next write.

        Only with a raw socket and nothing held (the caller checks). True when a rest
        was kept: the caller arranges for a flush soon. Raises ``OSError``.
        """
        raw = self._raw
        assert raw is not None and self._held is None
        if len(parts) == 1:
            # A broadcast's usual case (one small frame, all taken): no loop over the parts.
            data = parts[0]
            try:
                sent = raw.send(data)
            except BlockingIOError:
                sent = 0
            if sent == len(data):
                return False
        else:
            try:
                sent = raw.sendmsg(parts[:_MAX_PARTS])
            except BlockingIOError:
                sent = 0
        kept = False
        for part in parts:
            size = len(part)
            if sent >= size:
                sent -= size
                continue
            kept = self._keep(memoryview(part)[sent:] if sent else part) or kept
            sent = 0
        return kept

    def flush(self) -> None:
        if self._held is not None:
            self.write([])

    def write(self, parts: list[Buffer]) -> None:
        """Write held-back frames, then ``parts``, in order; an empty part (the protocol's
        end-of-stream marker) ends our side of TCP after what precedes it."""
        if len(parts) == 1 and self._held is None and parts[0]:
            # The common case: one frame, nothing held. Written here, not in a helper: a
            # call less for every frame.
            data = parts[0]
            raw = self._raw
            if raw is not None:
                try:
                    sent = raw.send(data)
                except BlockingIOError:
                    sent = 0
                if sent == len(data):
                    return
                data = memoryview(data)[sent:]  # the rest waits for room in the send buffer
            self._sock.sendall(data)
            return
        end_stream = bool(parts) and not parts[-1]
        if end_stream:
            parts = parts[:-1]
        held = self._held
        if held is not None:
            self._held = None
            self._held_size = 0
            self.holding = False
            if len(parts) == 1 and len(parts[0]) <= CORK_LIMIT:
                held.append(parts[0])  # the usual end of a burst: its last reply
                parts = [b"".join(held)]
            else:
                parts = [b"".join(held), *parts]
        if len(parts) == 1:
            self.write(parts)  # (nothing is held now: the common case above)
        elif parts:
            self._write_many(parts)
        if end_stream:
            self.ended = True
            try:
                # The OS socket's: nobody else writes (the caller holds the send lock), so
                # there is no gevent waiter to wake.
                (self._raw or self._sock).shutdown(socket.SHUT_WR)
            except OSError:
                pass  # already gone: the peer has nothing more to read from us either way

    def _write_many(self, parts: list[Buffer]) -> None:
        """Without joining them: a large payload is not copied behind its header."""
        raw = self._raw
        sock = self._sock
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
                sock.sendall(memoryview(part)[sent:] if sent else part)
                sent = 0
