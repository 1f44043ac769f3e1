import { reconnectDelay } from "wsdrain-hint";

// socket.io-client reconnects on its own randomised backoff (0.5-1.5 s by default) and
// reports wsdrain's close only as "transport close", with the WebSocket close event in
// details.context. So on such a disconnect, read the hint there and make the Manager's
// first attempt wait exactly that long (delay = hint, no randomisation), then put its own
// settings back. Without a usable hint, or after two short-lived connections in a row,
// its own backoff applies: never a tight loop.
export function honourHint(socket, { minUptimeMs = 5000 } = {}) {
  const manager = socket.io;
  const own = {
    delay: manager.reconnectionDelay(),
    max: manager.reconnectionDelayMax(),
    factor: manager.randomizationFactor(),
  };
  const restore = () => {
    manager.reconnectionDelay(own.delay);
    manager.reconnectionDelayMax(own.max);
    manager.randomizationFactor(own.factor);
  };
  let connectedAt = null;
  let shortStreak = 0;
  socket.on("connect", () => {
    connectedAt = Date.now();
  });
  socket.on("disconnect", (reason, details) => {
    const lived = connectedAt === null ? 0 : Date.now() - connectedAt;
    connectedAt = null;
    shortStreak = lived >= minUptimeMs ? 0 : shortStreak + 1;
    const hint = reason === "transport close" ? reconnectDelay(details?.context, null) : null;
    if (hint === null || shortStreak > 1) return;
    manager.reconnectionDelay(hint);
    manager.reconnectionDelayMax(Math.max(hint, own.max));
    manager.randomizationFactor(0);
    manager.once("reconnect_attempt", restore);
  });
  return socket;
}
