"""The gunicorn floor: the least any WSGI WebSocket library can do inside gunicorn's gevent worker.

A bare WSGI app (no library): it answers the upgrade through gunicorn's own
``start_response`` (status line and accept key only, no validation), takes
``gunicorn.socket`` and runs the bound's frame loop on it. Whatever separates
it from the bound is gunicorn's own cost (accept, HTTP parsing, environ,
response, connection bookkeeping), which wsgiws under gunicorn pays too.
Run as ``gunicorn -k gevent floor_gunicorn:app``.
"""

import base64
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bound import GUID, echo_frames


def app(environ, start_response):
    key = environ["HTTP_SEC_WEBSOCKET_KEY"].encode("ascii")
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode("ascii")
    write = start_response(
        "101 Switching Protocols",
        [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept)],
    )
    write(b"")
    sock = environ["gunicorn.socket"]
    rfile = sock.makefile("rb", buffering=65536)
    try:
        echo_frames(sock, rfile)
    finally:
        rfile.close()
    return []
