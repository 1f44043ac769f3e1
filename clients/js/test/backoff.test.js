// Without a hint the helper backs off exponentially, and it never loops tightly: a pod
// killed outright (no close frame), a port nobody listens on, a server that closes
// every connection at once with a zero hint, and the hint parser's edge cases.
import assert from "node:assert/strict";
import { test } from "node:test";
import WS, { WebSocketServer } from "ws";
import { openFeed } from "../examples/browser.js";
import { backoffDelay, parseHint, reconnectDelay, HINT_MAX_MS } from "wsdrain-hint";
import { freePort, sleep, startApp, startPod, waitFor } from "./harness.js";

test("reconnectDelay reads the hint and falls back on anything else", () => {
  assert.equal(reconnectDelay({ reason: '{"reconnect_after_ms":1234}' }, 7), 1234);
  assert.equal(reconnectDelay({ reason: '{"reconnect_after_ms":0}' }, 7), 0);
  assert.equal(reconnectDelay({ reason: `{"reconnect_after_ms":${HINT_MAX_MS}}` }, 7), HINT_MAX_MS);
  for (const reason of [
    undefined, "", "going away", "{", '{"reconnect_after_ms":-1}', '{"reconnect_after_ms":1.5}',
    '{"reconnect_after_ms":"100"}', `{"reconnect_after_ms":${HINT_MAX_MS + 1}}`, '{"reconnect_after_ms":1e400}',
    '["reconnect_after_ms"]', "null",
  ]) {
    assert.equal(reconnectDelay({ reason }, 7), 7, `reason ${JSON.stringify(reason)}`);
  }
  assert.equal(reconnectDelay(undefined, 9), 9);
  assert.equal(parseHint('{"reconnect_after_ms":42,"other":1}'), 42);
});

test("backoffDelay doubles up to the cap, with jitter in [1/2, 1]", () => {
  assert.equal(backoffDelay(0, { baseMs: 100, random: () => 1 }), 100);
  assert.equal(backoffDelay(3, { baseMs: 100, random: () => 1 }), 800);
  assert.equal(backoffDelay(3, { baseMs: 100, random: () => 0 }), 400);
  assert.equal(backoffDelay(50, { baseMs: 100, maxMs: 5000, random: () => 1 }), 5000);
});

test("a pod killed without a close frame: the backoff path, growing, no tight loop", async (t) => {
  const app = await startApp();
  const pod = await startPod(app.port);
  const closes = [];
  const socket = openFeed(pod.url, () => {}, { WebSocket: WS, baseMs: 200, maxMs: 5000 });
  socket.addEventListener("close", (e) => closes.push({ at: performance.now(), ...pick(e) }));
  try {
    await waitFor(() => socket.isOpen, "the client to connect");
    await pod.kill("SIGKILL"); // nothing listens on the pod's port from now on
    await sleep(3000);
  } finally {
    socket.close();
    await app.close();
  }
  t.diagnostic(`delays: ${closes.map((c) => c.delayMs).join(", ")}`);
  assert.ok(closes.length >= 3, `only ${closes.length} attempts in 3 s`);
  // 200·2^k·[½,1] for k = 1, 2, 3 …: 3 s hold at most 4 attempts (0.2 + 0.4 + 0.8 + 1.6).
  assert.ok(closes.length <= 5, `${closes.length} attempts in 3 s: a tight loop`);
  closes.forEach((c, k) => {
    assert.equal(c.hint, null, "no hint without a close frame");
    assert.notEqual(c.code, 1012);
    const ceiling = Math.min(5000, 200 * 2 ** (k + 1));
    assert.ok(c.delayMs >= ceiling / 2 && c.delayMs <= ceiling, `attempt ${k} waited ${c.delayMs} ms`);
    if (k > 0) {
      const gap = c.at - closes[k - 1].at;
      assert.ok(gap >= closes[k - 1].delayMs - 1, `attempt ${k} came ${gap.toFixed(0)} ms after the last`);
    }
  });
});

test("a server closing every connection at once with hint 0 does not make a tight loop", async () => {
  const port = await freePort();
  const wss = new WebSocketServer({ host: "127.0.0.1", port });
  let accepted = 0;
  wss.on("connection", (ws) => {
    accepted += 1;
    ws.close(1012, '{"reconnect_after_ms":0}');
  });
  await new Promise((r) => wss.once("listening", r));
  const socket = openFeed(`ws://127.0.0.1:${port}/`, () => {}, { WebSocket: WS, baseMs: 200 });
  await sleep(2000);
  socket.close();
  await new Promise((r) => wss.close(r));
  // The first short connection gets its hint (0 ms); from the second the backoff
  // applies: 0 + 200..400 + 400..800 + 800..1600 fit at most 4–5 connections in 2 s.
  assert.ok(accepted >= 2, `only ${accepted} connections`);
  assert.ok(accepted <= 6, `${accepted} connections in 2 s: a tight loop`);
});

function pick(e) {
  return { code: e.code, hint: e.hint, delayMs: e.delayMs };
}
