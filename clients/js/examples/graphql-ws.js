import { backoffDelay, reconnectDelay } from "wsdrain-hint";

// graphql-ws asks retryWait(retries) how long to wait before each reconnect, but does
// not pass the close event: its `closed` listener keeps the last one. The first retry
// after a close with a hint waits exactly the hint; a close without one, a failed
// attempt, or a second short-lived connection in a row take the helper's exponential
// backoff. Spread the result into createClient({ url, ...hintRetry() }).
export function hintRetry({ minUptimeMs = 5000, backoff = {} } = {}) {
  let lastClose = null;
  let connectedAt = null;
  let shortStreak = 0;
  return {
    retryAttempts: Infinity,
    on: {
      connected: () => {
        connectedAt = Date.now();
      },
      closed: (event) => {
        const lived = connectedAt === null ? 0 : Date.now() - connectedAt;
        connectedAt = null;
        shortStreak = lived >= minUptimeMs ? 0 : shortStreak + 1;
        lastClose = event;
      },
    },
    retryWait: (retries) => {
      const fallback = backoffDelay(Math.max(retries, shortStreak - 1), backoff);
      const hint = retries === 0 && shortStreak <= 1 ? reconnectDelay(lastClose, null) : null;
      return new Promise((resolve) => setTimeout(resolve, hint ?? fallback));
    },
  };
}
