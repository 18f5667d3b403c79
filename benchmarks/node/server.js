// Node `ws` peer for benchmarks/run.py: echo and fan-out on one port.
//   node server.js --port P
// /echo echoes every message with its type; /sub is added to the subscribers and
// told "ok"; /pub: every message goes to every subscriber (a broadcast loop, as the
// ws README shows it). 16 MiB messages, no compression, no pings.
"use strict";
const http = require("http");
const { WebSocketServer } = require("ws");

const port = Number(process.argv[process.argv.indexOf("--port") + 1]);
const server = http.createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
const wss = new WebSocketServer({
  server,
  maxPayload: 16 * 1024 * 1024,
  perMessageDeflate: false,
  clientTracking: false,
});
const subscribers = new Set();

wss.on("connection", (ws, req) => {
  if (req.url.startsWith("/sub")) {
    subscribers.add(ws);
    ws.on("close", () => subscribers.delete(ws));
    ws.send("ok");
  } else if (req.url.startsWith("/pub")) {
    ws.on("message", (data, isBinary) => {
      for (const sub of subscribers) sub.send(data, { binary: isBinary });
    });
  } else {
    ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  }
});
server.listen(port, "127.0.0.1", 4096);
