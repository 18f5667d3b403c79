"""The recommended gunicorn settings for wsgiws apps, from the installed package.

    gunicorn -c python:wsgiws.gunicorn_conf app:app
    gunicorn -c python:wsgiws.gunicorn_conf -b 0.0.0.0:8080 -w 4 app:app

Address and worker count are left to gunicorn, so ``-b``/``--bind``,
``-w``/``--workers``, ``GUNICORN_CMD_ARGS``, ``PORT`` and ``WEB_CONCURRENCY``
work as everywhere (defaults: 127.0.0.1:8000, one worker); every value below
can be overridden the same way. With a config file of your own, import what
you want from here (``from wsgiws.gunicorn_conf import *``) or add the one
hook line below to it. See docs/deploying.md.
"""

# Closes every open WebSocket of a stopping worker with "1001 Going Away" and a
# completed closing handshake (SIGTERM, SIGHUP reload, max_requests), and refuses
# new upgrades with 503 meanwhile. If you have your own post_worker_init, call
# wsgiws.gunicorn.post_worker_init(worker) from it instead.
from wsgiws.gunicorn import post_worker_init

__all__ = [
    "accesslog",
    "graceful_timeout",
    "keepalive",
    "post_worker_init",
    "timeout",
    "worker_class",
    "worker_connections",
]

# The gevent worker runs each connection, WebSockets included, in a greenlet: an
# open WebSocket costs memory (tens of KiB), not a thread.
worker_class = "gevent"

# The per-worker ceiling on ordinary requests in progress and, separately, on open
# WebSockets: with the hook below, a WebSocket leaves gunicorn's request (and its
# connection slot) at its 101, and past this many open WebSockets an upgrade gets 503
# with Retry-After (unless the app sets max_connections). Keep twice this under the
# process's open-file limit (ulimit -n).
worker_connections = 10000

# On async workers `timeout` is not a request deadline: it is the heartbeat the
# worker must give the arbiter. A WebSocket may stay open for hours; what gets a
# worker killed (with every socket in it) is code that blocks the gevent loop for
# `timeout` seconds (CPU-bound work, a C library call that does not yield).
timeout = 30

# How long a stopping worker (deploy, reload, max_requests) may take. The drain
# sends 1001 at once and waits at most graceful_timeout - 2 s (capped at 10 s) for
# each client's close frame; the worker exits as soon as the last one is closed,
# typically within a second or two.
graceful_timeout = 15

# How long an idle keep-alive HTTP connection waits for its next request. It has
# no effect on WebSockets (their liveness is checked by wsgiws's own pings,
# `ping_interval`/`ping_timeout`); keep it short so idle HTTP connections do not
# hold connection slots, but above the 60 s idle timeout of most load balancers
# only if the balancer talks straight to gunicorn (behind nginx, 5 s is fine).
keepalive = 5

# Recycling workers (max_requests) is safe: their WebSockets are drained like on
# a deploy; add --max-requests 10000 --max-requests-jitter 1000 to recycle.

# Behind a reverse proxy (examples/nginx.conf), gunicorn believes X-Forwarded-Proto
# (wsgi.url_scheme "https" for wss://) from forwarded_allow_ips: 127.0.0.1 and ::1
# by default, or --forwarded-allow-ips / FORWARDED_ALLOW_IPS.

accesslog = "-"
