"""gunicorn's own HTTP workers (``-k gevent``, ``gthread``, ``sync``).

gunicorn puts the socket in ``gunicorn.socket``; bytes read past the request
headers stay in its parser's unreader, behind ``wsgi.input``.

On the ``-k gevent`` worker, once :func:`wsgiws.gunicorn.post_worker_init` turned
it on, an upgraded connection leaves gunicorn's request at the 101 (see
:func:`detacher`): it then holds none of gunicorn's per-request objects.

On the ``sync`` worker (a standard socket, ``wsgi.multithread`` false) one
WebSocket takes the whole worker, and the arbiter kills the worker, with its
socket, once it has been busy for ``timeout`` seconds: the first upgrade logs a
warning saying so (:func:`wsgiws.gunicorn.post_worker_init` says it at start-up).
"""

from __future__ import annotations

import contextvars
import io
import logging
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import gevent
import greenlet
from gevent import socket as gsocket

from ..http import response_head
from ._hijack import ENVIRON_START_RESPONSE, Hijack, is_socket

logger = logging.getLogger("wsgiws")

SYNC_WORKER_WARNING = (
    "gunicorn's sync worker serves one connection at a time and kills the worker "
    "(every open WebSocket with it) after `timeout` seconds (%s) of one request: "
    "a WebSocket there lives at most `timeout` seconds and blocks all other requests. "
    "Use -k gevent (or -k gthread) for WebSockets."
)
_warned_sync = False


def is_sync_worker(environ: Mapping[str, Any]) -> bool:
    """gunicorn's sync worker: a standard socket and a single-threaded environ."""
    sock = environ.get("gunicorn.socket")
    return isinstance(sock, socket.socket) and not environ.get("wsgi.multithread")


def warn_sync_worker(
    timeout: object = "see --timeout", log: Callable[..., object] | None = None
) -> None:
    """Log :data:`SYNC_WORKER_WARNING` once per process (with ``log``, e.g. gunicorn's)."""
    global _warned_sync
    if not _warned_sync:
        _warned_sync = True
        (log or logger.warning)("wsgiws: " + SYNC_WORKER_WARNING, timeout)


# ------------------------------------------------- leaving gunicorn's request at the 101

#: Set by :func:`wsgiws.gunicorn.post_worker_init` in a ``-k gevent`` worker.
_detaching = False

#: environ key of the :class:`_Handoff` while an upgrade request runs detachable.
ENVIRON_HANDOFF = "wsgiws.gunicorn.handoff"

#: ``wsgi.input`` once the connection is ours: the request had no body, and gunicorn's
#: reader (with its parser and buffers) must not stay alive through the environ.
_NO_BODY = io.BytesIO(b"")
_shared_errors: dict[str, Any] = {}


def enable_detach(enabled: bool = True) -> None:
    """Let upgraded connections of this (``-k gevent``) worker leave gunicorn's request."""
    global _detaching
    _detaching = enabled


def detacher(environ: Mapping[str, Any]) -> Callable[..., Iterable[bytes]] | None:
    # A plain gevent socket only: a TLS socket cannot be detached from its SSL state.
    if _detaching and type(environ.get("gunicorn.socket")) is gsocket.socket:
        return serve_detached
    return None


def serve_detached(
    environ: dict[str, Any],
    start_response: Callable[..., Any],
    serve: Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]],
) -> Iterable[bytes]:
    """Run the upgrade request in a greenlet of its own; gunicorn's greenlet waits for the
    outcome and gets back either the HTTP answer (a refusal, an ordinary response) or,
    once the 101 is out, nothing to write.

    gunicorn's request then ends as for any upgrade: it writes nothing more (the 101 head
    was ours), logs the access line (its time is the handshake's), runs ``post_request``,
    and closes its socket object, the one the connection goes on with: a file object of
    ours on it defers that close until the connection ends (:meth:`_Handoff.detach`).
    Its greenlet, frames and Request/Response/parser objects (about 5 KiB per connection)
    go; so does the connection's slot in gunicorn's pool, which is why the limit and the
    wait at shutdown are wsgiws's (see :mod:`wsgiws.gunicorn`).
    """
    waiting = greenlet.getcurrent()
    handoff = _Handoff(environ, start_response, waiting)
    environ[ENVIRON_HANDOFF] = handoff
    runner = _idle_runners.pop() if _idle_runners else None
    if runner is None or runner.dead:
        runner = greenlet.greenlet(_run_sessions, parent=gevent.get_hub())
    # The request's context (contextvars an outer middleware set) goes with it.
    runner.gr_context = contextvars.copy_context()
    # Straight into the runner, not through the event loop: it runs until the 101 or
    # its first wait, and switches back here once the outcome is in handoff.outcome.
    _jobs.append((handoff, serve))
    try:
        runner.switch()
        while handoff.outcome is _PENDING:  # woken by something else: wait for the runner
            gevent.get_hub().switch()
    except BaseException:  # killed while waiting (the worker stopping): nobody to answer
        handoff.waiting = None
        raise
    outcome, handoff.outcome = handoff.outcome, None
    if isinstance(outcome, _Failed):
        raise outcome.exc  # still HTTP: gunicorn answers it (a 500)
    return outcome  # type: ignore[return-value]  # (what run() returned: the HTTP answer or [])


_PENDING = object()


class _Failed:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


#: Runner greenlets waiting for their next upgrade request. A greenlet is reused, not
#: made per connection: making one (its first Python frame maps a fresh data stack) and
#: a round trip through the event loop cost more than the rest of the hand-off.
_idle_runners: list[greenlet.greenlet] = []
MAX_IDLE_RUNNERS = 64
#: The job being handed to a runner (at most one, only during the switch). Not passed as
#: the switch's argument: a greenlet's first arguments stay referenced for its life.
_jobs: list[tuple[_Handoff, Callable[..., Iterable[bytes]]]] = []


def _run_sessions() -> None:
    """A runner: serves upgrade requests one after another, parked in between.

    Parked means suspended in a switch; whoever has a job for it puts it in ``_jobs``
    and switches straight into it (:func:`serve_detached`). Nothing of a finished
    request stays referenced from here while parked.
    """
    me = greenlet.getcurrent()
    hub = gevent.get_hub()
    while _jobs:  # none: something left behind woke us by mistake; leave, serve nothing
        handoff, serve = _jobs.pop()
        outcome = handoff.run(serve)
        waiting = handoff.waiting  # None once the 101 let gunicorn's greenlet go
        if waiting is not None:
            handoff.outcome = outcome
        del outcome
        del handoff, serve
        me.gr_context = None  # the next request brings its own
        if len(_idle_runners) >= MAX_IDLE_RUNNERS:
            hub.loop.run_callback(_resume, waiting)
            return
        _idle_runners.append(me)
        try:
            (waiting if waiting is not None and not waiting.dead else hub).switch()
        except BaseException:  # something left behind woke us with an exception
            break
        finally:
            del waiting
    if me in _idle_runners:
        _idle_runners.remove(me)


def _resume(waiting: greenlet.greenlet | None) -> None:
    if waiting is not None and not waiting.dead:
        waiting.switch()


class _Handoff:
    """The upgrade request's ``start_response`` while it may still leave gunicorn's request."""

    __slots__ = ("environ", "keeper", "outcome", "start_response", "waiting")

    def __init__(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        waiting: greenlet.greenlet,
    ) -> None:
        self.environ = environ
        self.start_response: Callable[..., Any] | None = start_response
        #: gunicorn's greenlet, until the 101 lets it go
        self.waiting: greenlet.greenlet | None = waiting
        #: what gunicorn's greenlet gets: the HTTP answer, a _Failed, or [] after a 101
        self.outcome: object = _PENDING
        #: once detached: the socket, whose close by gunicorn must not end the connection
        self.keeper: socket.socket | None = None

    def __call__(self, *args: Any) -> Callable[[bytes], object]:
        if self.start_response is None:
            return _left_gunicorn(*args)
        return cast("Callable[[bytes], object]", self.start_response(*args))

    def run(self, serve: Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]) -> object:
        """Serve the request; what gunicorn's greenlet gets (unused once it was let go)."""
        try:
            result = serve(self.environ, self)
        except BaseException as exc:
            if self.waiting is not None:
                return _Failed(exc)
            if not isinstance(exc, gevent.GreenletExit):
                logger.exception("wsgiws: upgrade request for %s", self.environ.get("PATH_INFO"))
            return None
        finally:
            self._end()
        if self.waiting is not None:
            return result
        close = getattr(result, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                logger.exception(
                    "wsgiws: closing the response for %s", self.environ.get("PATH_INFO")
                )
        return None

    def _end(self) -> None:
        # The connection is over: closes the socket, unless gunicorn has not closed its
        # side yet (then its close does).
        keeper, self.keeper = self.keeper, None
        if keeper is not None:
            keeper._decref_socketios()  # type: ignore[attr-defined]

    def detach(self) -> socket.socket:
        """The 101 is out: let gunicorn's request finish and keep its socket for the
        connection."""
        environ = self.environ
        sock: socket.socket = environ["gunicorn.socket"]
        # gunicorn closes its socket object when its request ends. The connection goes
        # on on that very object (a new one would cost its event watchers and five
        # system calls): a reference like a file object's defers the close (makefile:
        # "the underlying socket is closed when all file objects are closed and close()
        # was called") until the connection ends (_end). It is the count a file object
        # takes (socket.py's SocketIO contract, which gevent's socket keeps), without the
        # file object. gunicorn writes nothing more on it: the head is ours (find).
        sock._io_refs += 1  # type: ignore[attr-defined]
        self.keeper = sock
        # What would keep gunicorn's Request, Response, parser and greenlet alive:
        environ["wsgi.input"] = _NO_BODY
        environ.pop("wsgi.early_hints", None)  # a closure over them; no 103 after a 101
        environ[ENVIRON_START_RESPONSE] = _left_gunicorn
        # One per request, all alike (gunicorn's error log): share the first.
        environ["wsgi.errors"] = _shared_errors.setdefault("wsgi.errors", environ["wsgi.errors"])
        del environ[ENVIRON_HANDOFF]
        self.start_response = None
        # gunicorn's greenlet finishes its request (nothing to write) once we next wait.
        waiting, self.waiting = self.waiting, None
        self.outcome = []
        gevent.get_hub().loop.run_callback(_resume, waiting)
        return sock


def _left_gunicorn(*args: Any) -> Callable[[bytes], object]:
    raise RuntimeError("wsgiws: start_response after the connection left gunicorn's request")


def find(environ: Mapping[str, Any]) -> Hijack | None:
    sock = environ.get("gunicorn.socket")
    if not is_socket(sock):
        return None
    # This request is the connection's last: once the app returns, gunicorn must not
    # parse a next request from a socket we closed (a Request, a parser and a read per
    # connection for nothing).
    start_response = environ.get(ENVIRON_START_RESPONSE)
    if isinstance(start_response, _Handoff):
        start_response = start_response.start_response
    response = getattr(start_response, "__self__", None)
    force_close = getattr(response, "force_close", None)
    if callable(force_close):
        force_close()
    handoff = environ.get(ENVIRON_HANDOFF)
    if handoff is None and is_sync_worker(environ):  # (a handoff: the gevent worker)
        warn_sync_worker()
    body = environ.get("wsgi.input")
    unreader = getattr(getattr(body, "reader", None), "unreader", None)

    def take_buffered() -> bytes:
        if unreader is None:
            return b""
        take = getattr(unreader, "take_buffered", None)
        if take is not None:
            return bytes(take())
        buf = getattr(unreader, "buf", None)  # older gunicorn: a BytesIO
        if buf is None:
            return b""
        data = bytes(buf.getvalue())
        buf.seek(0)
        buf.truncate()
        return data

    detach = handoff.detach if isinstance(handoff, _Handoff) else None
    send_head = _head_sender(response) if _sends_own_head(response) else None
    return Hijack(sock, take_buffered, send_head=send_head, detach=detach)


def _sends_own_head(response: object) -> bool:
    """Can we write the 101 ourselves and keep gunicorn from writing anything after it?"""
    return (
        callable(getattr(response, "start_response", None))
        and hasattr(response, "status")
        and hasattr(response, "headers_sent")
        and hasattr(response, "chunked")
    )


def _head_sender(response: Any) -> Callable[[str, Sequence[tuple[str, str]]], bytes]:
    def send_head(status: str, headers: Sequence[tuple[str, str]]) -> bytes:
        # gunicorn's write would add Server and Date lines and go through gevent's
        # sendall, and gunicorn 22 and 23 frame a 101 as chunked, ending it with a last
        # chunk on the WebSocket's stream: written by the connection (its first write),
        # the head is what RFC 6455 4.2.2 asks for and nothing more.
        # What gunicorn's start_response would record, for its access log line (101) and
        # statsd; set here, since its validation of our own headers is all it would add.
        response.status = status
        response.status_code = int(status[:3])
        response.headers = list(headers)
        response.headers_sent = True  # gunicorn writes no head of its own
        response.chunked = False  # nor a last chunk
        return response_head(status, headers)

    return send_head
