// A graphql-ws app on 127.0.0.1:<argv[2]> with one subscription, `ticks`, in a process
// of its own. Prints "ready" when listening.
import { buildSchema } from "graphql";
import { useServer } from "graphql-ws/use/ws";
import { WebSocketServer } from "ws";

const schema = buildSchema(`
  type Query { hello: String }
  type Subscription { ticks: Int }
`);
const roots = {
  query: { hello: () => "hello" },
  subscription: {
    ticks: async function* ticks() {
      for (let i = 0; ; i++) {
        yield { ticks: i };
        await new Promise((r) => setTimeout(r, 1000));
      }
    },
  },
};
const wss = new WebSocketServer({ host: "127.0.0.1", port: Number(process.argv[2]) });
useServer({ schema, roots }, wss);
wss.on("listening", () => console.log("ready"));
