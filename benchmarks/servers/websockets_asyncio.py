"""websockets (asyncio) echo and fan-out on the default asyncio event loop.

``/echo`` (and any other path) echoes; ``/sub`` is added to the subscribers and
told ``ok``; ``/pub``: every message goes to them with ``broadcast()``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import MAX_MESSAGE, asyncio_main
from websockets.asyncio.server import broadcast, serve

subscribers = set()


async def handler(ws):
    path = ws.request.path
    if path.startswith("/sub"):
        subscribers.add(ws)
        try:
            await ws.send("ok")
            await ws.wait_closed()
        finally:
            subscribers.discard(ws)
    elif path.startswith("/pub"):
        async for message in ws:
            broadcast(subscribers, message)
    else:
        async for message in ws:
            await ws.send(message)


async def run(host, port):
    async with serve(
        handler,
        host,
        port,
        max_size=MAX_MESSAGE,
        ping_interval=None,
        compression=None,
        backlog=4096,
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio_main(__doc__.splitlines()[0], run)
