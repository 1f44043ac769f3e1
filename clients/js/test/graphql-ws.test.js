// graphql-ws (6.x) with the hintRetry recipe, a live subscription per client, through a
// real drain into a neighbour pod: every client reconnects once, no earlier than its
// hint, and the neighbour sees them arrive evenly. The client is in test/flavours.js.
import assert from "node:assert/strict";
import { test } from "node:test";
import { judge, storm } from "./storm.js";

// The event-loop lag beyond which this box, not the client, sets the arrival times.
const STARVED_MS = 30;

test("graphql-ws with the hintRetry recipe honours the hint through a drain", async (t) => {
  const verdict = judge(await storm("graphqlWs"));
  t.diagnostic(verdict.summary);
  assert.deepEqual(verdict.problems, []);
  if (verdict.lagMs > STARVED_MS) {
    t.diagnostic(`the box starved the clients (${verdict.lagMs.toFixed(0)} ms): arrival peak not judged`);
    return;
  }
  assert.ok(verdict.ratio <= 1.25, verdict.summary);
});
