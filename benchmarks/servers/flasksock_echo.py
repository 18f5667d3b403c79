"""flask-sock echo (simple-websocket underneath) on gevent.pywsgi, monkey-patched."""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import MAX_MESSAGE, parse_args  # noqa: E402
from flask import Flask  # noqa: E402
from flask_sock import Sock  # noqa: E402

app = Flask(__name__)
# no keep-alive pings (the load generator never pings either); 16 MiB messages
app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": None, "max_message_size": MAX_MESSAGE}
sock = Sock(app)


@sock.route("/echo")
def echo(ws):
    while True:
        ws.send(ws.receive())


def main():
    from gevent.pywsgi import WSGIServer

    args = parse_args(__doc__.splitlines()[0])
    WSGIServer((args.host, args.port), app, log=None, backlog=2048).serve_forever()


if __name__ == "__main__":
    main()
