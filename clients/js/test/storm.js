// Many real clients of one library through a real drain into a neighbour pod (spread
// over worker processes, each with its own event loop), and what
// the neighbour saw: when each client started its reconnect (the client's choice; the
// handshake after it is the servers'), counted per 100 ms against the even rate over
// window + jitter that the stratified hints promise.
import { fork, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { parseHint } from "wsdrain-hint";
import * as flavours from "./flavours.js";
import { freePort, sleep, startPod, waitFor } from "./harness.js";

/** Starts `test/apps/<name>` in a child process on a free port; resolves when ready. */
export async function startNodeApp(name) {
  const port = await freePort();
  const script = fileURLToPath(new URL(`./apps/${name}`, import.meta.url));
  const child = spawn(process.execPath, [script, String(port)], { stdio: ["ignore", "pipe", "inherit"] });
  await new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`${name} exited with ${code}`)));
    child.stdout.on("data", (d) => d.toString().includes("ready") && resolve());
  });
  return {
    port,
    close: async () => {
      if (child.exitCode === null) child.kill("SIGKILL");
      await new Promise((r) => (child.exitCode !== null ? r() : child.once("exit", r)));
    },
  };
}

/**
 * Runs `clients` clients of `flavour` (an export of test/flavours.js: `open(id, podUrl,
 * neighbourUrl, record)`, returning a handle with `close()` and calling
 * `record.connected()`, `record.closed(closeEvent)` and `record.attempt()` when a
 * reconnect starts) through a drain of their pod, spread over `workers` processes.
 * Resolves with the records (times in ms on one clock) and the worst event-loop lag
 * of any worker during the drain.
 */
export async function storm(flavour, { clients = 240, workers = 4, windowMs = 1500, jitterMs = 1500 } = {}) {
  const app = flavours[flavour].app;
  const [appA, appB] = [await startNodeApp(app), await startNodeApp(app)];
  const flags = ["--drain-delay", "0", "--drain-window", `${windowMs}ms`, "--reconnect-jitter", `${jitterMs}ms`, "--close-timeout", "2s"];
  const pod = await startPod(appA.port, flags);
  const neighbour = await startPod(appB.port);
  const records = Array.from({ length: clients }, (_, id) => ({ id, connects: [], closes: [], attempts: [] }));
  const lags = [];
  const script = fileURLToPath(new URL("./storm-worker.js", import.meta.url));
  const children = [];
  try {
    for (let w = 0; w < workers; w++) {
      const child = fork(script, [], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
      children.push(child);
      child.on("message", (m) => {
        const r = records[m.id];
        if (m.ev === "connected") r.connects.push(m.at);
        else if (m.ev === "closed") r.closes.push({ at: m.at, code: m.code, reason: m.reason });
        else if (m.ev === "attempt") r.attempts.push(m.at);
        else if (m.ev === "lag") lags.push(m.ms);
      });
      await new Promise((resolve) => child.once("message", resolve)); // ready
    }
    // Connect in batches of 20 per worker, so the pod is not asked for 240 handshakes at once.
    for (let start = 0; start < clients; start += 20 * workers) {
      children.forEach((child, w) => {
        const ids = [];
        for (let id = start + w; id < Math.min(clients, start + 20 * workers); id += workers) ids.push(id);
        child.send({ cmd: "start", flavour, ids, podUrl: pod.url, neighbourUrl: neighbour.url });
      });
      const upTo = Math.min(clients, start + 20 * workers);
      await waitFor(() => records.slice(0, upTo).every((r) => r.connects.length >= 1), "a batch to connect", 20_000);
    }
    // WebSockets the pod counts: with Socket.IO's default transports, every client upgraded.
    await waitFor(async () => (await pod.open()) === clients, "the pod to hold every WebSocket", 20_000);
    for (const child of children) child.send({ cmd: "watch" });
    await sleep(50);
    const t0 = performance.timeOrigin + performance.now();
    await pod.drain();
    await waitFor(() => records.every((r) => r.connects.length >= 2), "every client at the neighbour", 30_000);
    await sleep(1500); // a second reconnect, if any, would show now
    for (const child of children) child.send({ cmd: "stop" });
    await waitFor(() => lags.length === workers, "the workers' lag", 10_000);
    return { records, t0, lagMs: Math.max(...lags), windowMs, jitterMs };
  } finally {
    for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
    await pod.kill();
    await neighbour.kill();
    await appA.close();
    await appB.close();
  }
}

/**
 * Checks every client got 1012 with a hint, started exactly one reconnect, and none before
 * its hint; returns the arrival peak per 100 ms against the even rate, and the problems.
 */
export function judge({ records, t0, lagMs, windowMs, jitterMs }) {
  const problems = [];
  const starts = [];
  for (const r of records) {
    const close = r.closes[0];
    const hint = parseHint(close?.reason);
    if (close?.code !== 1012 || hint === null) {
      problems.push(`client ${r.id}: close ${close?.code} ${close?.reason}`);
      continue;
    }
    if (r.attempts.length !== 1) problems.push(`client ${r.id}: ${r.attempts.length} reconnect attempts`);
    const waited = r.attempts[0] - close.at;
    if (!(waited >= hint - 1)) problems.push(`client ${r.id}: reconnected ${waited.toFixed(1)} ms after the close, before its hint ${hint}`);
    starts.push(r.attempts[0] - t0);
  }
  const span = windowMs + jitterMs;
  const bins = new Array(Math.ceil((Math.max(span, ...starts) + 1) / 100)).fill(0);
  for (const s of starts) bins[Math.floor(Math.max(0, s) / 100)] += 1;
  const even = records.length / (span / 100);
  const peak = Math.max(...bins);
  return {
    problems,
    peak,
    even,
    ratio: peak / even,
    lagMs,
    summary:
      `${records.length} clients, window ${windowMs} ms + jitter ${jitterMs} ms: neighbour's arrival peak ` +
      `${peak} per 100 ms, even rate ${even.toFixed(1)} (${(peak / even).toFixed(2)}×); ` +
      `client event loops at most ${lagMs.toFixed(0)} ms late; per 100 ms: ${bins.join(" ")}`,
  };
}
