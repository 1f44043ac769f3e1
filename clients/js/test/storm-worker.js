// One share of a storm's clients, in a process of its own so that no event loop runs
// more than its share of reconnects. Driven by test/storm.js over IPC: it is told the
// flavour (an export of test/flavours.js), the pod URLs and its client ids; it reports
// every event with an absolute time (ms since the epoch, sub-millisecond).
import { monitorEventLoopDelay } from "node:perf_hooks";
import * as flavours from "./flavours.js";

const now = () => performance.timeOrigin + performance.now();
const handles = [];
let lag = null;

process.on("message", (msg) => {
  if (msg.cmd === "start") {
    const open = flavours[msg.flavour];
    for (const id of msg.ids) {
      const record = {
        connected: () => process.send({ ev: "connected", id, at: now() }),
        closed: (e) => process.send({ ev: "closed", id, at: now(), code: e?.code, reason: e?.reason === undefined ? undefined : String(e.reason) }),
        attempt: () => process.send({ ev: "attempt", id, at: now() }),
      };
      handles.push(open(id, msg.podUrl, msg.neighbourUrl, record));
    }
  } else if (msg.cmd === "watch") {
    lag = monitorEventLoopDelay({ resolution: 10 });
    lag.enable();
  } else if (msg.cmd === "stop") {
    lag?.disable();
    process.send({ ev: "lag", ms: lag ? lag.max / 1e6 : 0 });
    for (const h of handles) h.close();
    setTimeout(() => process.exit(0), 200);
  }
});
process.send({ ev: "ready" });
