// Socket.IO (socket.io-client 4.8, with its default transports and WebSocket-only) with
// the recipe, through a real drain into a neighbour pod: every client reconnects once,
// no earlier than its hint, and the neighbour sees them arrive evenly. The clients are
// in test/flavours.js.
import assert from "node:assert/strict";
import { test } from "node:test";
import { judge, storm } from "./storm.js";

// The event-loop lag beyond which this box, not the client, sets the arrival times
// (arrivals 12.5 ms apart: a timer 30 ms late moves at most two into the next 100 ms).
const STARVED_MS = 30;

for (const [name, flavour] of [
  ["default transports (polling, then WebSocket)", "socketIoDefault"],
  ["WebSocket only", "socketIoWebSocket"],
]) {
  test(`Socket.IO with the recipe, ${name}, honours the hint through a drain`, async (t) => {
    const verdict = judge(await storm(flavour));
    t.diagnostic(verdict.summary);
    assert.deepEqual(verdict.problems, []);
    if (verdict.lagMs > STARVED_MS) {
      t.diagnostic(`the box starved the clients (${verdict.lagMs.toFixed(0)} ms): arrival peak not judged`);
      return;
    }
    assert.ok(verdict.ratio <= 1.25, verdict.summary);
  });
}
