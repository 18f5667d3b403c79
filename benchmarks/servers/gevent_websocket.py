"""gevent-websocket echo: WebSocketServer (gevent.pywsgi) with its WebSocketHandler.

The module also exposes a WSGI ``app`` so the same echo can be served by
gunicorn with gevent-websocket's own worker class:
    gunicorn -k geventwebsocket.gunicorn.workers.GeventWebSocketWorker gevent_websocket:app
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import parse_args  # noqa: E402


def app(environ, start_response):
    ws = environ.get("wsgi.websocket")
    if ws is None:
        start_response("400 Bad Request", [("Content-Type", "text/plain")])
        return [b"websocket only\n"]
    while True:
        msg = ws.receive()
        if msg is None:
            break
        ws.send(msg, binary=not isinstance(msg, str))
    return []


def main():
    from geventwebsocket.handler import WebSocketHandler
    from geventwebsocket.server import WebSocketServer

    args = parse_args(__doc__.splitlines()[0])
    server = WebSocketServer(
        (args.host, args.port), app, handler_class=WebSocketHandler, log=None, backlog=2048
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
