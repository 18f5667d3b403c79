"""gunicorn configuration for wsgiws apps (the documented production setup).

    gunicorn -c gunicorn.conf.py examples.echo:app

Every value can still be overridden on the command line. See docs/deploying.md.
"""

import os

# Closes every open WebSocket of a stopping worker with "1001 Going Away" and a
# completed closing handshake (SIGTERM, SIGHUP reload, max_requests), and refuses
# new upgrades with 503 meanwhile. If you have your own post_worker_init, call
# wsgiws.gunicorn.post_worker_init(worker) from it instead.
from wsgiws.gunicorn import post_worker_init  # noqa: F401  (a gunicorn server hook)

bind = os.environ.get("WSGIWS_BIND", "127.0.0.1:8000")

# The gevent worker runs each connection, WebSockets included, in a greenlet: an
# open WebSocket costs memory (tens of KiB), not a thread.
worker_class = "gevent"
workers = int(os.environ.get("WSGIWS_WORKERS", "1"))

# Each open WebSocket holds one connection slot for its whole life, so this is the
# per-worker ceiling on concurrent WebSockets plus ordinary requests. Keep it under
# the process's open-file limit (ulimit -n).
worker_connections = int(os.environ.get("WSGIWS_WORKER_CONNECTIONS", "10000"))

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
# a deploy. Jitter keeps the workers from all restarting at once.
# max_requests = 10000
# max_requests_jitter = 1000

# Behind a reverse proxy on the same host (examples/nginx.conf): trust its
# X-Forwarded-Proto so wsgi.url_scheme is "https" for wss:// requests.
forwarded_allow_ips = os.environ.get("WSGIWS_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

accesslog = "-"
