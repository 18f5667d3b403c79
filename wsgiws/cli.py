"""``python -m wsgiws ws://host/path``: a command-line WebSocket client.

Interactive: prints every incoming message and sends each line typed (text;
``--binary`` sends the line's UTF-8 bytes as a binary message, ``--hex`` reads
lines as hex). End with Ctrl-D or Ctrl-C: both close the connection properly.
At the end of piped input (``printf 'one\ntwo\n' | python -m wsgiws URI``) the
closing handshake completes and every reply the server sent before its close
frame is still printed.

One-shot, for scripts: ``-m MESSAGE`` (repeatable) sends the messages, prints
that many replies (``--replies N`` to change; ``--replies -1`` reads until the
server closes), closes and exits.

Exit status: 0 after a normal close (1000, 1001, or a close frame without code),
1 when the connection could not be opened (refused, DNS, TLS, rejected
handshake), 2 for usage errors, 3 when the connection ended with any other close
code (printed on stderr), 4 when ``--timeout`` passed waiting for a reply.
"""

from __future__ import annotations

import argparse
import binascii
import ssl
import sys
import threading
from collections.abc import Sequence
from typing import TextIO

from .client import ClientWebSocket, connect
from .exceptions import ConnectionClosed, HandshakeRejected, ReceiveTimeout, WebSocketError
from .protocol import OK_CLOSE_CODES

__all__ = ["main"]

EXIT_OK = 0
EXIT_CONNECT = 1
EXIT_USAGE = 2
EXIT_CLOSE_CODE = 3
EXIT_TIMEOUT = 4


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsgiws",
        description="Talk to a WebSocket server: interactive, or one-shot with -m.",
        epilog="Exit status: 0 normal close, 1 could not connect, 2 usage, "
        "3 other close code, 4 timeout waiting for replies.",
    )
    parser.add_argument("uri", help="ws:// or wss:// URI")
    parser.add_argument(
        "-m",
        "--message",
        action="append",
        default=[],
        metavar="MESSAGE",
        help="one-shot mode: send MESSAGE (repeatable), print the replies, exit",
    )
    parser.add_argument(
        "-n",
        "--replies",
        type=int,
        default=None,
        help="one-shot: replies to wait for (default: one per message; -1: until the server "
        "closes)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--binary", action="store_true", help="send messages as binary (UTF-8)")
    mode.add_argument(
        "--hex", action="store_true", help="messages are hex, sent as binary; binary shown as hex"
    )
    parser.add_argument(
        "-p", "--subprotocol", action="append", default=[], help="offer a subprotocol (repeatable)"
    )
    parser.add_argument(
        "-H", "--header", action="append", default=[], metavar="NAME: VALUE", help="extra header"
    )
    parser.add_argument("--origin", help="Origin header")
    parser.add_argument("--proxy", help="http://host:port proxy (CONNECT)")
    parser.add_argument("--no-compression", action="store_true", help="do not offer deflate")
    parser.add_argument("--insecure", action="store_true", help="wss: do not verify certificates")
    parser.add_argument("--cafile", help="wss: trust the CA certificates in this file")
    parser.add_argument(
        "--max-size", type=int, default=16 << 20, help="largest incoming message (bytes)"
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait to connect and for replies"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print only messages, no status lines"
    )
    return parser


def _payload(line: str, args: argparse.Namespace) -> str | bytes:
    if args.hex:
        return binascii.unhexlify("".join(line.split()))
    if args.binary:
        return line.encode("utf-8")
    return line


def _show(message: str | bytes, hex_binary: bool) -> str:
    if isinstance(message, str):
        return message
    if hex_binary:
        return message.hex()
    return f"[binary {len(message)} bytes] {message.hex()}"


def _status(args: argparse.Namespace, text: str, err: TextIO) -> None:
    if not args.quiet:
        print(text, file=err, flush=True)


def _close_status(ws: ClientWebSocket, args: argparse.Namespace, err: TextIO) -> int:
    code = ws.close_code
    reason = f" {ws.close_reason}" if ws.close_reason else ""
    _status(args, f"closed: {code}{reason}", err)
    return EXIT_OK if code in OK_CLOSE_CODES else EXIT_CLOSE_CODE


def _context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not (args.insecure or args.cafile):
        return None
    context = ssl.create_default_context(cafile=args.cafile)
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def main(
    argv: Sequence[str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the command line; returns the exit status."""
    stdin = stdin or sys.stdin
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    args = _parser().parse_args(argv)
    headers = []
    for header in args.header:
        name, colon, value = header.partition(":")
        if not colon:
            print(f"wsgiws: bad header {header!r} (expected 'Name: value')", file=err)
            return EXIT_USAGE
        headers.append((name.strip(), value.strip()))
    try:
        payloads = [_payload(m, args) for m in args.message]
    except (binascii.Error, ValueError) as exc:
        print(f"wsgiws: bad hex message: {exc}", file=err)
        return EXIT_USAGE
    try:
        ws = connect(
            args.uri,
            subprotocols=args.subprotocol or None,
            headers=headers,
            origin=args.origin,
            ssl_context=_context(args),
            open_timeout=args.timeout,
            max_message_size=args.max_size,
            compression=None if args.no_compression else "deflate",
            proxy=args.proxy,
        )
    except HandshakeRejected as exc:
        print(f"wsgiws: {exc}", file=err)
        for name, value in exc.headers:
            print(f"  {name}: {value}", file=err)
        return EXIT_CONNECT
    except (OSError, WebSocketError, ValueError) as exc:
        print(f"wsgiws: cannot connect to {args.uri}: {exc}", file=err)
        return EXIT_CONNECT
    extension = f", extension {ws.extension!r}" if ws.extension is not None else ""
    protocol = f", subprotocol {ws.subprotocol}" if ws.subprotocol else ""
    _status(args, f"connected to {ws.uri}{protocol}{extension}", err)
    if args.message or args.replies is not None:
        return _one_shot(ws, payloads, args, out, err)
    return _interactive(ws, args, stdin, out, err)


def _one_shot(
    ws: ClientWebSocket,
    payloads: list[str | bytes],
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
) -> int:
    replies = len(payloads) if args.replies is None else args.replies
    try:
        for payload in payloads:
            ws.send(payload)
        received = 0
        while replies < 0 or received < replies:
            message = ws.receive(timeout=args.timeout)
            print(_show(message, args.hex), file=out, flush=True)
            received += 1
    except ReceiveTimeout:
        _status(args, f"timed out after {args.timeout} s waiting for a reply", err)
        ws.close(1000)
        return EXIT_TIMEOUT
    except ConnectionClosed:
        return _close_status(ws, args, err)
    except KeyboardInterrupt:
        ws.close(1000)
        return _close_status(ws, args, err)
    ws.close(1000)
    return _close_status(ws, args, err)


def _interactive(
    ws: ClientWebSocket, args: argparse.Namespace, stdin: TextIO, out: TextIO, err: TextIO
) -> int:
    prefix = "< " if stdin.isatty() else ""

    def printer() -> None:
        try:
            for message in ws:
                print(prefix + _show(message, args.hex), file=out, flush=True)
        except ConnectionClosed:
            pass
        except Exception as exc:  # pragma: no cover - unexpected
            print(f"wsgiws: {exc}", file=err, flush=True)

    reader = threading.Thread(target=printer, daemon=True, name="wsgiws-cli-reader")
    reader.start()
    try:
        for line in stdin:
            line = line.rstrip("\r\n")
            if ws.closed:
                break
            try:
                ws.send(_payload(line, args))
            except (binascii.Error, ValueError) as exc:
                _status(args, f"not sent (bad hex: {exc})", err)
            except ConnectionClosed:
                break
        ws.close(1000)
    except KeyboardInterrupt:
        ws.close(1000)
    reader.join(ws.close_timeout)
    return _close_status(ws, args, err)
