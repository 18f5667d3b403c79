"""tests.ops_app under gevent.pywsgi, handshake timeout 0.5 s: python -m tests.ops_pywsgi PORT."""

from __future__ import annotations

import sys

from gevent.pywsgi import WSGIServer

from tests.ops_app import app
from wsgiws.pywsgi_handler import HandshakeTimeoutHandler


class QuickTimeout(HandshakeTimeoutHandler):
    handshake_timeout = 0.5


if __name__ == "__main__":
    WSGIServer(("127.0.0.1", int(sys.argv[1])), app, handler_class=QuickTimeout).serve_forever()
