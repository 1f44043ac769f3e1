// Clients that honour wsdrain's hint, driven through a real drain into a neighbour pod:
// the helper's ReconnectingSocket (with the global WebSocket and with `ws`), and
// partysocket and reconnecting-websocket with the recipes from the README. Every client
// must start its reconnect no earlier than its hint and within 100 ms after it (plus
// however late this process ran its timers: on a starved box nothing reconnects
// sooner), open at the neighbour, and lose no message across the move.
import assert from "node:assert/strict";
import { test } from "node:test";
import { monitorEventLoopDelay } from "node:perf_hooks";
import WS from "ws";
import { openFeed } from "../examples/browser.js";
import { openPartySocket } from "../examples/partysocket.js";
import { openReconnectingWebSocket } from "../examples/reconnecting-websocket.js";
import { parseHint } from "wsdrain-hint";
import { sleep, startApp, startPod, waitFor } from "./harness.js";

const CLIENTS = 30;
const JITTER_MS = 1000;
const LATE_MS = 100;

/**
 * Connects CLIENTS sockets made by `open(urlFn, WebSocketClass)` to a pod, keeps each sending
 * sequenced messages, drains the pod and follows every client to the neighbour.
 * Returns per-client records and what each app received.
 */
async function moveThroughDrain(open, Base = WS) {
  const [appA, appB] = [await startApp(), await startApp()];
  const pod = await startPod(appA.port, [
    "--drain-delay", "0",
    "--drain-window", "1500ms",
    "--reconnect-jitter", `${JITTER_MS}ms`,
    "--close-timeout", "2s",
  ]);
  const neighbour = await startPod(appB.port);
  const clients = [];
  const timers = [];
  let lagMs = 0;
  try {
    for (let id = 0; id < CLIENTS; id++) {
      let calls = 0;
      const url = () => (calls++ === 0 ? pod.url : neighbour.url);
      const c = { id, seq: 0, opens: [], closes: [], starts: [], seen: [] };
      // The WebSocket class each library is given, recording when it is asked to
      // connect (that moment is the client's to choose; the handshake after it is the
      // servers') and when the socket reported its close, before the library's own
      // listener ran: a stall between the library scheduling its reconnect and a later
      // listener would otherwise count against the client.
      const Timed = class extends Base {
        constructor(...args) {
          c.starts.push(performance.now());
          super(...args);
          this.addEventListener("close", () => c.seen.push(performance.now()));
        }
      };
      c.socket = open(url, Timed);
      c.socket.addEventListener("open", () => c.opens.push(performance.now()));
      c.socket.addEventListener("close", (e) =>
        c.closes.push({ at: performance.now(), code: e.code, reason: e.reason }),
      );
      clients.push(c);
    }
    await waitFor(() => clients.every((c) => c.opens.length >= 1), "every client to connect");
    await waitFor(async () => (await pod.open()) === CLIENTS, "the pod to count every client");
    for (const c of clients) {
      timers.push(setInterval(() => c.socket.send(JSON.stringify({ id: c.id, seq: c.seq++ })), 25));
    }
    await sleep(200);
    const lag = monitorEventLoopDelay({ resolution: 10 });
    lag.enable();
    await pod.drain();
    await waitFor(() => clients.every((c) => c.opens.length >= 2), "every client at the neighbour", 15_000);
    lag.disable();
    // How late this process ran its timers at worst: on a starved box a client cannot
    // reconnect sooner than its event loop lets it, whatever it was told.
    lagMs = lag.max / 1e6;
    await sleep(200);
    for (const t of timers) clearInterval(t);
    const got = (id) => (appA.received.get(id)?.length ?? 0) + (appB.received.get(id)?.length ?? 0);
    await waitFor(() => clients.every((c) => got(c.id) >= c.seq), "the apps to receive every message", 5000);
    return { clients, appA, appB, lagMs };
  } finally {
    for (const t of timers) clearInterval(t);
    for (const c of clients) c.socket.close();
    await pod.kill();
    await neighbour.kill();
    await appA.close();
    await appB.close();
  }
}

/** The assertions shared by every client flavour. */
function checkMove({ clients, appA, appB, lagMs }) {
  let worst = -Infinity;
  const late = LATE_MS + Math.max(0, lagMs - 10); // 10 ms: the monitor's own resolution
  for (const c of clients) {
    const close = c.closes[0];
    assert.equal(close.code, 1012, `client ${c.id} close code`);
    const hint = parseHint(close.reason);
    assert.ok(hint !== null && hint >= 0 && hint <= JITTER_MS, `client ${c.id} hint ${close.reason}`);
    assert.equal(c.starts.length, 2, `client ${c.id} connection attempts`);
    assert.ok(c.opens[1] > c.starts[1], `client ${c.id} never opened at the neighbour`);
    // 1 ms: partysocket and reconnecting-websocket wait with a bare setTimeout, which
    // counts whole milliseconds (the helper re-arms an early timer; test/api.test.js).
    const waited = c.starts[1] - c.seen[0];
    assert.ok(waited >= hint - 1, `client ${c.id} reconnected after ${waited.toFixed(1)} ms, before its hint ${hint}`);
    assert.ok(
      waited <= hint + late,
      `client ${c.id} reconnected ${(waited - hint).toFixed(1)} ms after its hint ${hint} ` +
        `(allowed ${late.toFixed(0)} ms: 100 + event-loop lag)`,
    );
    worst = Math.max(worst, waited - hint);
    // Every message reached an app exactly once and in order: the old pod's app got a
    // prefix, the neighbour's app the rest (including what was queued during the move).
    const seen = [...(appA.received.get(c.id) ?? []), ...(appB.received.get(c.id) ?? [])];
    assert.deepEqual(seen, [...Array(c.seq).keys()], `client ${c.id} messages`);
    assert.ok((appB.received.get(c.id) ?? []).length > 0, `client ${c.id} sent nothing after the move`);
  }
  return `latest reconnect after its hint: ${worst.toFixed(1)} ms (event loop at most ${lagMs.toFixed(0)} ms late)`;
}


test(
  "ReconnectingSocket with the global WebSocket honours the hint through a drain",
  { skip: typeof globalThis.WebSocket !== "function" && "no global WebSocket (Node 20 needs --experimental-websocket)" },
  async (t) => {
    t.diagnostic(checkMove(await moveThroughDrain((url, W) => openFeed(url, () => {}, { WebSocket: W }), globalThis.WebSocket)));
  },
);

test("ReconnectingSocket with the ws package honours the hint through a drain", async (t) => {
  t.diagnostic(checkMove(await moveThroughDrain((url, W) => openFeed(url, () => {}, { WebSocket: W }))));
});

test("partysocket with the recipe honours the hint through a drain", async (t) => {
  t.diagnostic(checkMove(await moveThroughDrain((url, W) => openPartySocket(url, { WebSocket: W }))));
});

test("reconnecting-websocket with the recipe honours the hint through a drain", async (t) => {
  const open = (url, W) => openReconnectingWebSocket(url, { WebSocket: W });
  t.diagnostic(checkMove(await moveThroughDrain(open)));
});
