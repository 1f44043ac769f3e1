// A Socket.IO echo app on 127.0.0.1:<argv[2]>, in a process of its own so that the
// clients' event loop measures only the clients. Prints "ready" when listening.
import { createServer } from "node:http";
import { Server } from "socket.io";

const http = createServer();
const io = new Server(http, { pingInterval: 60_000, pingTimeout: 60_000 });
io.on("connection", (socket) => {
  socket.on("echo", (data, ack) => ack?.(data));
});
http.listen(Number(process.argv[2]), "127.0.0.1", () => console.log("ready"));
