"""gunicorn configuration for wsgiws apps: ``gunicorn -c gunicorn.conf.py examples.echo:app``."""

import os

bind = os.environ.get("WSGIWS_BIND", "127.0.0.1:8000")
# The gevent worker runs each connection, WebSockets included, in a greenlet.
worker_class = "gevent"
workers = int(os.environ.get("WSGIWS_WORKERS", "1"))
# Each open WebSocket holds one connection slot for its whole life.
worker_connections = 10000
# On async workers `timeout` is the worker's heartbeat, not a request deadline: a
# WebSocket may live for hours. Anything that blocks the event loop this long
# gets the whole worker killed.
timeout = 30
# Seconds a stopping worker waits for open connections to finish.
graceful_timeout = 30
# How long an idle keep-alive HTTP connection waits for its next request.
keepalive = 5
accesslog = "-"
