"""wsgiws fan-out: a Hub with one room; run as ``gunicorn -k gevent fanout_wsgiws:app``.

``/sub`` joins the room ``bench``, says ``ok`` once it is a member (with Redis: once
this worker's subscription is live), then only listens. ``/pub``: every message it
receives goes to the room with ``hub.send``. ``/echo`` echoes (the harness's probe).
``WSGIWS_REDIS_URL`` set: the hub spans every worker through Redis.

The hub's queue limit is raised to 4,096 messages per member so that the benchmark
measures speed, not the slow-consumer policy (the default, 256, would close a
subscriber that falls more than a burst behind). Keep-alive pings are off, as in the
peers (Node ws does not ping by default; the websockets server is set not to).
"""

import os
import time

from wsgiws import WebSocketMiddleware
from wsgiws.hub import Hub

ROOM = "bench"
hub = Hub.from_url(os.environ.get("WSGIWS_REDIS_URL"), max_queue=4096)


def not_found(environ, start_response):
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]


app = WebSocketMiddleware(not_found, max_message_size=16 << 20, ping_interval=None)


@app.route("/sub")
def subscriber(ws):
    hub.join(ws, ROOM)
    deadline = time.monotonic() + 10
    while not getattr(hub.backend, "subscribed", True) and time.monotonic() < deadline:
        time.sleep(0.01)
    ws.send("ok")
    for _ in ws:
        pass


@app.route("/pub")
def publisher(ws):
    for message in ws:
        hub.send(ROOM, message)


@app.route("/echo")
def echo(ws):
    for message in ws:
        ws.send(message)
