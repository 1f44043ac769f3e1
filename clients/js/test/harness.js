// Real parts for the client tests: wsdrain processes (the built binary) in front of a
// `ws` echo app that records every message it receives, all on 127.0.0.1.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import { fileURLToPath } from "node:url";
import { WebSocketServer } from "ws";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));

/** The wsdrain binary under test: $WSDRAIN_BIN or target/debug/wsdrain. */
export function wsdrainBin() {
  const path = process.env.WSDRAIN_BIN || `${ROOT}target/debug/wsdrain`;
  if (!existsSync(path)) throw new Error(`wsdrain binary not found at ${path}: run \`cargo build\``);
  return path;
}

/** A port free on 127.0.0.1 now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves once 127.0.0.1:port accepts TCP; rejects after timeoutMs. */
export async function waitPort(port, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, "127.0.0.1");
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    await sleep(30);
  }
  throw new Error(`nothing listening on 127.0.0.1:${port}`);
}

/** setTimeout as a promise. */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * The app: echoes every message and records messages shaped `{"id":…,"seq":…}` in
 * `received` (id → seqs in arrival order).
 */
export async function startApp() {
  const port = await freePort();
  const received = new Map();
  const wss = new WebSocketServer({ host: "127.0.0.1", port });
  wss.on("connection", (ws) => {
    ws.on("error", () => {});
    ws.on("message", (data, isBinary) => {
      try {
        const { id, seq } = JSON.parse(data.toString());
        if (!received.has(id)) received.set(id, []);
        received.get(id).push(seq);
      } catch {
        // not a sequenced message: echo only
      }
      if (ws.readyState === ws.OPEN) ws.send(data, { binary: isBinary });
    });
  });
  await new Promise((r) => wss.once("listening", r));
  return {
    port,
    received,
    close: () =>
      new Promise((r) => {
        for (const c of wss.clients) c.terminate();
        wss.close(() => r());
      }),
  };
}

/** A wsdrain proxy in front of appPort. `extra` are more flags. */
export async function startPod(appPort, extra = []) {
  const [listen, admin] = [await freePort(), await freePort()];
  const child = spawn(
    wsdrainBin(),
    [
      "proxy",
      "--listen", `127.0.0.1:${listen}`,
      "--upstream", `127.0.0.1:${appPort}`,
      "--admin", `127.0.0.1:${admin}`,
      "--log-level", process.env.WSDRAIN_JS_LOG || "warn",
      "--max-connections", "1000",
      ...extra,
    ],
    { stdio: ["ignore", "inherit", "inherit"] },
  );
  const exited = new Promise((r) => child.once("exit", r));
  await waitPort(admin);
  await waitPort(listen);
  return {
    url: `ws://127.0.0.1:${listen}/`,
    admin: `http://127.0.0.1:${admin}`,
    child,
    exited,
    /** Starts a drain (POST /drain). */
    drain: async () => {
      const res = await fetch(`http://127.0.0.1:${admin}/drain`, { method: "POST" });
      if (res.status !== 202) throw new Error(`POST /drain answered ${res.status}`);
    },
    /** Open connections as the admin port counts them. */
    open: async () => {
      const res = await fetch(`http://127.0.0.1:${admin}/drain`);
      return (await res.json()).open;
    },
    /** Stops the process (SIGKILL unless told) and waits for it. */
    kill: async (signal = "SIGKILL") => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

/** Polls `cond` every 20 ms until true; throws with `what` after timeoutMs. */
export async function waitFor(cond, what, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}
