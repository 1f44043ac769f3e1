import ReconnectingWebSocket from "partysocket/ws";
import { reconnectDelay } from "wsdrain-hint";

// partysocket has no option for a server-given delay; its shouldReconnectOnClose hook
// plus reconnect() does it: on a close with a hint, stop its own retry and call
// reconnect() after the hint; without a hint, let partysocket back off as usual.
export function openPartySocket(url, options = {}) {
  const socket = new ReconnectingWebSocket(url, [], {
    ...options,
    shouldReconnectOnClose(event) {
      const hint = reconnectDelay(event, null);
      if (hint === null) return true;
      setTimeout(() => socket.reconnect(), hint);
      return false;
    },
  });
  return socket;
}
