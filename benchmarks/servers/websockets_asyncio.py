"""websockets (asyncio implementation) echo on the default asyncio event loop."""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import MAX_MESSAGE, parse_args
from websockets.asyncio.server import serve


async def echo(ws):
    async for msg in ws:
        await ws.send(msg)


async def run(host, port):
    async with serve(
        echo,
        host,
        port,
        max_size=MAX_MESSAGE,
        ping_interval=None,
        compression=None,
        backlog=2048,
    ) as server:
        await server.serve_forever()


def main():
    args = parse_args(__doc__.splitlines()[0])
    asyncio.run(run(args.host, args.port))


if __name__ == "__main__":
    main()
