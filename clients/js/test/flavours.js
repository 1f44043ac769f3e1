// The clients the storm tests run, one function per library and setting, each with the
// recipe applied: `open(id, podUrl, neighbourUrl, record)` as test/storm.js describes.
// They run in worker processes (test/storm-worker.js), so each is named by its export.
import { createClient } from "graphql-ws";
import { io } from "socket.io-client";
import WebSocket from "ws";
import { hintRetry } from "../examples/graphql-ws.js";
import { honourHint } from "../examples/socket.io.js";

function socketIo(transports) {
  const open = (id, podUrl, neighbourUrl, record) => {
    const socket = io(podUrl, { forceNew: true, ...(transports && { transports }) });
    honourHint(socket);
    // The Service sends the reconnect to another pod; here, the neighbour's address.
    socket.on("disconnect", (reason, details) => {
      socket.io.uri = neighbourUrl;
      record.closed(details?.context);
    });
    socket.on("connect", () => record.connected());
    socket.io.on("reconnect_attempt", () => record.attempt());
    return { close: () => socket.close() };
  };
  open.app = "socketio-server.js";
  return open;
}

/** socket.io-client with its default transports: long-polling first, then WebSocket. */
export const socketIoDefault = socketIo(null);

/** socket.io-client with WebSocket only. */
export const socketIoWebSocket = socketIo(["websocket"]);

/** graphql-ws with one live subscription per client. */
export function graphqlWs(id, podUrl, neighbourUrl, record) {
  let moved = false;
  const retry = hintRetry();
  const client = createClient({
    url: () => (moved ? neighbourUrl : podUrl),
    webSocketImpl: WebSocket,
    ...retry,
    on: {
      ...retry.on,
      connected: () => {
        retry.on.connected();
        record.connected();
      },
      closed: (event) => {
        retry.on.closed(event);
        moved = true;
        record.closed(event);
      },
      connecting: (isRetry) => isRetry && record.attempt(),
    },
  });
  const stop = client.subscribe({ query: "subscription { ticks }" }, { next: () => {}, error: () => {}, complete: () => {} });
  return {
    close: () => {
      stop();
      client.dispose();
    },
  };
}
graphqlWs.app = "graphql-server.js";
