"""gunicorn configuration for the Django example.

    cd examples/django && python manage.py migrate && gunicorn -c gunicorn.conf.py

The same choices as the repository's top-level gunicorn.conf.py (which explains each).
"""

import os

# 1001 Going Away and a closing handshake for every open WebSocket on SIGTERM, SIGHUP
# and max_requests; 503 for upgrades meanwhile.
from wsgiws.gunicorn import post_worker_init  # noqa: F401  (a gunicorn server hook)

wsgi_app = "chatsite.wsgi:application"
bind = os.environ.get("WSGIWS_BIND", "127.0.0.1:8000")
worker_class = "gevent"  # a WebSocket costs a greenlet, not a thread
workers = int(os.environ.get("WSGIWS_WORKERS", "1"))
worker_connections = 10000  # per worker: open WebSockets (then 503), and HTTP requests
timeout = 30  # a heartbeat on the gevent worker, not a connection lifetime
graceful_timeout = 15
keepalive = 5
accesslog = "-"
