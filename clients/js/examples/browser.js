import { ReconnectingSocket } from "wsdrain-hint";

// A live feed that survives its pod going away: on wsdrain's close it waits the
// reconnect hint, then connects again (to whichever pod the Service picks now).
// Messages sent meanwhile are queued and go out on the new connection.
export function openFeed(url, onMessage, options = {}) {
  const socket = new ReconnectingSocket(url, options); // the global WebSocket unless options.WebSocket
  socket.addEventListener("message", (event) => onMessage(event.data));
  return socket;
}
