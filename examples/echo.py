"""The echo example: a plain WSGI app with WebSocket endpoints.

    gunicorn -c gunicorn.conf.py examples.echo:app
    python examples/echo.py --port 8000          # gevent.pywsgi on 127.0.0.1

``/`` is a page that talks to the socket from a browser, ``/echo`` echoes every
message with its type, ``/proto`` speaks the subprotocols ``chat`` and
``superchat`` (preferring ``chat``) and echoes too. Messages up to 16 MiB.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import Any

from wsgiws import WebSocket, WebSocketMiddleware

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>wsgiws echo</title></head>
<body>
<h1>wsgiws echo</h1>
<form id="f"><input id="msg" autocomplete="off" value="hello"><button>Send</button></form>
<pre id="log"></pre>
<script>
const log = (line) => { document.getElementById("log").textContent += line + "\\n"; };
const scheme = location.protocol === "https:" ? "wss://" : "ws://";
const ws = new WebSocket(scheme + location.host + "/echo");
ws.onopen = () => {
  log("open (extensions: " + (ws.extensions || "none") + ")");
  // /?send=text sends a message as soon as the socket opens (handy for scripted checks).
  const first = new URLSearchParams(location.search).get("send");
  if (first !== null) { ws.send(first); log("> " + first); }
};
ws.onmessage = (event) => log("< " + event.data);
ws.onclose = (event) => log("closed " + event.code + " " + event.reason);
document.getElementById("f").onsubmit = (event) => {
  event.preventDefault();
  const text = document.getElementById("msg").value;
  ws.send(text);
  log("> " + text);
};
</script>
</body></html>
"""


def index(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") != "/":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    start_response(
        "200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(PAGE)))]
    )
    return [PAGE]


app = WebSocketMiddleware(index, max_message_size=16 << 20)


@app.route("/echo")
def echo(ws: WebSocket) -> None:
    for message in ws:
        ws.send(message)


@app.route("/proto", subprotocols=["chat", "superchat"])
def proto(ws: WebSocket) -> None:
    for message in ws:
        ws.send(message)


def main() -> None:
    from gevent.pywsgi import WSGIServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    server = WSGIServer((args.host, args.port), app)
    print(f"serving on http://{args.host}:{args.port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
