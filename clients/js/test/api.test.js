// ReconnectingSocket's WebSocket/partysocket surface against real servers on loopback:
// readyState, on* properties, errors surfaced, a connect that hangs times out and is
// retried, maxRetries gives up, reconnect() reconnects once, binaryType is settable.
import assert from "node:assert/strict";
import net from "node:net";
import { test } from "node:test";
import WS, { WebSocketServer } from "ws";
import { ReconnectingSocket } from "wsdrain-hint";
import { freePort, sleep, waitFor } from "./harness.js";

async function echoServer() {
  const port = await freePort();
  const wss = new WebSocketServer({ host: "127.0.0.1", port });
  const connections = [];
  wss.on("connection", (ws) => {
    connections.push(ws);
    ws.on("error", () => {});
    ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  await new Promise((r) => wss.once("listening", r));
  return {
    url: `ws://127.0.0.1:${port}/`,
    connections,
    close: () => new Promise((r) => {
      for (const c of wss.clients) c.terminate();
      wss.close(() => r());
    }),
  };
}

test("readyState, on* properties and binaryType", async () => {
  const server = await echoServer();
  const socket = new ReconnectingSocket(server.url, { WebSocket: WS });
  try {
    assert.equal(socket.readyState, ReconnectingSocket.CONNECTING);
    const opened = new Promise((r) => (socket.onopen = r));
    await opened;
    assert.equal(socket.readyState, ReconnectingSocket.OPEN);
    assert.equal(socket.binaryType, "arraybuffer");
    const first = new Promise((r) => (socket.onmessage = (e) => r(e.data)));
    socket.send(new Uint8Array([1, 2, 3]));
    assert.ok((await first) instanceof ArrayBuffer, "arraybuffer by default");
    socket.binaryType = "nodebuffer"; // what `ws` offers besides arraybuffer
    const second = new Promise((r) => (socket.onmessage = (e) => r(e.data)));
    socket.send(new Uint8Array([4]));
    assert.ok(Buffer.isBuffer(await second), "the new binaryType applies at once");
    const closed = new Promise((r) => (socket.onclose = r));
    socket.close();
    assert.equal((await closed).delayMs, null);
    assert.equal(socket.readyState, ReconnectingSocket.CLOSED);
  } finally {
    socket.close();
    await server.close();
  }
});

test("a connect that hangs times out, is reported as an error and retried", async () => {
  // Accepts TCP and never answers the WebSocket handshake.
  const accepted = [];
  const hung = net.createServer((s) => accepted.push(s));
  await new Promise((r) => hung.listen(0, "127.0.0.1", r));
  const url = `ws://127.0.0.1:${hung.address().port}/`;
  const errors = [];
  const socket = new ReconnectingSocket(url, { WebSocket: WS, connectTimeoutMs: 300, baseMs: 50, maxMs: 100 });
  socket.addEventListener("error", (e) => errors.push(e.message));
  try {
    await waitFor(() => accepted.length >= 2, "a second attempt after the timeout", 10_000);
    assert.ok(errors.some((m) => m.includes("timed out")), `errors: ${errors}`);
  } finally {
    socket.close();
    for (const s of accepted) s.destroy();
    hung.close();
  }
});

test("maxRetries gives up after that many failed attempts, with errors surfaced", async () => {
  const port = await freePort(); // nothing listens: every attempt is refused
  const errors = [];
  const closes = [];
  const socket = new ReconnectingSocket(`ws://127.0.0.1:${port}/`, { WebSocket: WS, maxRetries: 2, baseMs: 20, maxMs: 40 });
  socket.onerror = (e) => errors.push(e);
  socket.addEventListener("close", (e) => closes.push(e.delayMs));
  await waitFor(() => closes.includes(null), "giving up", 10_000);
  await sleep(300);
  assert.equal(closes.length, 3, `closes ${closes}: the first attempt and two retries`);
  assert.deepEqual(closes.slice(0, 2).map((d) => typeof d), ["number", "number"]);
  assert.ok(errors.length >= 3, `every refused attempt is an error event (${errors.length})`);
  assert.equal(socket.readyState, ReconnectingSocket.CLOSED);
  assert.equal(socket.retryCount, 3);
});

test("reconnect() closes the connection and opens exactly one new one", async () => {
  const server = await echoServer();
  let opens = 0;
  const socket = new ReconnectingSocket(server.url, { WebSocket: WS });
  socket.addEventListener("open", () => opens++);
  try {
    await waitFor(() => opens === 1, "the first open");
    const oldClosed = new Promise((r) => server.connections[0].once("close", r));
    socket.reconnect();
    assert.equal(await oldClosed, 1000);
    await waitFor(() => opens === 2, "the reconnect");
    await sleep(300);
    assert.equal(opens, 2);
    assert.equal(server.connections.length, 2);
    socket.close();
    await sleep(50);
    socket.reconnect(); // also after close()
    await waitFor(() => opens === 3, "a reconnect after close()");
  } finally {
    socket.close();
    await server.close();
  }
});

test("a hinted reconnect never starts before its hint has run out", async () => {
  // Node's timers count in whole milliseconds of a clock read when they are set, so a
  // bare setTimeout(hint) may fire up to 1 ms before the hint has passed on a fine clock.
  // Measured from the moment the underlying socket reported the close (a listener
  // registered before the helper's own), every reconnect must wait the whole hint.
  const HINT = 40;
  const ROUNDS = 12;
  const port = await freePort();
  const wss = new WebSocketServer({ host: "127.0.0.1", port });
  await new Promise((r) => wss.once("listening", r));
  wss.on("connection", (ws) => {
    ws.on("error", () => {});
    ws.close(1012, JSON.stringify({ reconnect_after_ms: HINT }));
  });
  const starts = [];
  const closes = [];
  const Timed = class extends WS {
    constructor(...args) {
      starts.push(performance.now());
      super(...args);
      this.addEventListener("close", () => closes.push(performance.now()));
    }
  };
  // minUptimeMs 0: every connection counts as healthy, so each delay is the hint alone.
  const socket = new ReconnectingSocket(`ws://127.0.0.1:${port}/`, { WebSocket: Timed, minUptimeMs: 0 });
  try {
    await waitFor(() => starts.length > ROUNDS, "the reconnects", 10_000);
    for (let i = 0; i < ROUNDS; i++) {
      const waited = starts[i + 1] - closes[i];
      assert.ok(waited >= HINT, `reconnect ${i + 1} started ${waited.toFixed(2)} ms after the close, hint ${HINT}`);
    }
  } finally {
    socket.close();
    for (const c of wss.clients) c.terminate();
    await new Promise((r) => wss.close(() => r()));
  }
});
