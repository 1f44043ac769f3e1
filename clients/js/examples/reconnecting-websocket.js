import ReconnectingWebSocket from "reconnecting-websocket";
import { backoffDelay, reconnectDelay } from "wsdrain-hint";

// reconnecting-websocket cannot delay one reconnect (and waits 1-5 s even after a
// long-lived connection), but it asks for the URL after the close listeners ran and a
// URL provider may return a promise. So: its own delays off, and the provider waits the
// hint, or the helper's exponential backoff when the close carries none.
export function openReconnectingWebSocket(url, options = {}) {
  let wait = 0;
  let attempt = 0;
  const next = () => (typeof url === "function" ? url() : url);
  const provider = () => new Promise((resolve) => setTimeout(() => resolve(next()), wait));
  const socket = new ReconnectingWebSocket(provider, [], {
    ...options,
    minReconnectionDelay: 0,
    maxReconnectionDelay: 0,
  });
  socket.addEventListener("open", () => {
    attempt = 0;
  });
  socket.addEventListener("close", (event) => {
    wait = reconnectDelay(event, backoffDelay(attempt++));
  });
  return socket;
}
