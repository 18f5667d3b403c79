"""picows echo: a WSListener that sends every frame back with its type, default asyncio loop.

picows hands the application frames, not messages: each frame is echoed as it
comes, with its opcode and FIN bit, so a fragmented message comes back fragmented
the same way. Pings are answered by picows itself (auto pong); a close frame is
answered and the connection ended.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import MAX_MESSAGE, asyncio_main
from picows import WSListener, WSMsgType, ws_create_server

DATA = (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION)


class Echo(WSListener):
    def on_ws_frame(self, transport, frame):
        if frame.msg_type in DATA:
            transport.send(frame.msg_type, frame.get_payload_as_bytes(), frame.fin)
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()


async def run(host, port):
    server = await ws_create_server(
        lambda request: Echo() if request.path.startswith(b"/echo") else None,
        host,
        port,
        max_frame_size=MAX_MESSAGE,
        backlog=2048,
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio_main(__doc__.splitlines()[0], run)
