// Long-polling through a drain, as Socket.IO uses it: a real `socket.io` server behind
// wsdrain and 50 `socket.io-client` clients on the polling transport only. On SIGTERM
// no poll may be cut before the drain's deadline: each pending poll is answered by the
// app, and the process stays up while polls are in flight (until the deadline).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { Server } from "socket.io";
import { io } from "socket.io-client";
import { freePort, sleep, startPod, waitFor } from "./harness.js";

const CLIENTS = Number(process.env.WSDRAIN_SOCKETIO_CLIENTS || 50);

test("socket.io long-polls are answered through the drain, none cut before the deadline", async () => {
  const appPort = await freePort();
  const httpServer = createServer();
  // A ping every 500 ms answers each pending poll; clients have 10 s to answer.
  const ioServer = new Server(httpServer, {
    transports: ["polling"],
    pingInterval: 500,
    pingTimeout: 10_000,
  });
  await new Promise((r) => httpServer.listen(appPort, "127.0.0.1", r));
  // Delay 200 ms + window 1.5 s + close timeout 1.5 s: the deadline is 3.2 s after SIGTERM.
  const pod = await startPod(appPort, [
    "--drain-delay", "200ms",
    "--drain-window", "1500ms",
    "--close-timeout", "1500ms",
  ]);
  const url = pod.url.replace("ws://", "http://");
  const clients = [];
  let signalledAt = null;
  const problems = [];
  const pingsAfterSignal = new Array(CLIENTS).fill(0);
  try {
    for (let i = 0; i < CLIENTS; i++) {
      const socket = io(url, { transports: ["polling"], reconnection: false, timeout: 10_000 });
      socket.on("connect_error", (e) => problems.push({ i, at: Date.now(), why: `connect_error ${e.message}` }));
      socket.on("disconnect", (reason, details) =>
        problems.push({ i, at: Date.now(), why: `disconnect ${reason} ${details?.description?.message ?? details?.description} ${details?.context?.status ?? ""} ${details?.context?.responseText ?? details?.context ?? ""}` }),
      );
      socket.io.on("ping", () => {
        if (signalledAt !== null) pingsAfterSignal[i] += 1;
      });
      clients.push(socket);
    }
    await waitFor(() => clients.every((s) => s.connected), `${CLIENTS} socket.io clients connected`);
    assert.deepEqual(problems, [], "no trouble before the drain");
    await sleep(300);
    pod.child.kill("SIGTERM");
    signalledAt = Date.now();
    await pod.exited;
    const exitedAfter = Date.now() - signalledAt;
    // Let the clients notice whatever the exit did to their polls.
    await sleep(300);
    const early = problems
      .filter((p) => p.at - signalledAt < 3000)
      .map((p) => ({ ...p, at: p.at - signalledAt }));
    assert.deepEqual(early, [], "no poll cut before the deadline (3.2 s)");
    assert.ok(
      exitedAfter >= 3000,
      `the process waited for the polls in flight until the deadline; it exited ${exitedAfter} ms after SIGTERM`,
    );
    const unanswered = pingsAfterSignal.filter((n) => n === 0).length;
    assert.equal(unanswered, 0, "every client's poll was answered by the app during the drain");
  } finally {
    for (const s of clients) s.close();
    await pod.kill();
    ioServer.close();
  }
});
