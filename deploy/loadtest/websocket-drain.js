// k6 WebSocket load for a wsdrain-fronted service: holds connections open, sends
// messages, and counts how connections end (close code, who closed) and how often
// clients reconnect. Run it, then roll the Deployment (kubectl rollout restart) or
// drain a node while it runs: with wsdrain, ws_closes is 1012 (Service Restart) spread
// over the drain window and ws_reconnects follows the same slope; without it you see
// 1006 (no close frame) in one spike.
//
//   k6 run -e WS_URL=wss://ws.example.com/ -e VUS=1000 deploy/loadtest/websocket-drain.js
//
// Environment:
//   WS_URL               target (default ws://127.0.0.1:15080/, a local sidecar)
//   VUS                  concurrent connections at the plateau (default 100)
//   RAMP, STEADY         stage lengths (default 30s, 5m)
//   HOLD_SECONDS         how long a client keeps a socket nobody closes (default 600)
//   MESSAGE_INTERVAL_MS  time between two messages of one client (default 5000)
//   RECONNECT_JITTER_MS  upper bound of the random delay before reconnecting after a
//                        server close (default 5000, wsdrain's --reconnect-jitter).
//                        wsdrain puts {"reconnect_after_ms":N} in the close reason;
//                        k6's ws module does not expose the reason, so the script
//                        draws from the same range, as a hint-aware client would.
import ws from 'k6/ws';
import { check, sleep } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';

const URL = __ENV.WS_URL || 'ws://127.0.0.1:15080/';
const VUS = Number(__ENV.VUS || 100);
const HOLD_MS = Number(__ENV.HOLD_SECONDS || 600) * 1000;
const MESSAGE_INTERVAL_MS = Number(__ENV.MESSAGE_INTERVAL_MS || 5000);
const RECONNECT_JITTER_MS = Number(__ENV.RECONNECT_JITTER_MS || 5000);

// Connections ended, tagged code (close code, or "none" when the socket died without a
// close frame) and by ("server" or "client").
const closes = new Counter('ws_closes');
// Connections opened by a client whose previous connection the server ended.
const reconnects = new Counter('ws_reconnects');
// Upgrades answered with something else than 101 (503 while a pod drains or is full,
// 502 when the app is down), tagged status.
const refused = new Counter('ws_upgrade_refused');
const connectOk = new Rate('ws_connect_success');
const sessionLength = new Trend('ws_session_duration', true);
const received = new Counter('ws_messages_received');

export const options = {
  scenarios: {
    connections: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: __ENV.RAMP || '30s', target: VUS },
        { duration: __ENV.STEADY || '5m', target: VUS },
        { duration: '30s', target: 0 },
      ],
      gracefulRampDown: '30s',
    },
  },
  thresholds: {
    ws_connect_success: ['rate>0.99'],
    // Every server-side end should be a close frame, never a bare disconnect.
    'ws_closes{code:none}': ['count==0'],
  },
};

// Per virtual user: whether the last connection was ended by the server.
let endedByServer = false;

export default function () {
  if (endedByServer) {
    reconnects.add(1);
  }
  endedByServer = false;
  let closeSeen = false;
  let ownClose = false;
  const opened = Date.now();

  const res = ws.connect(URL, { tags: { name: 'websocket' } }, (socket) => {
    socket.on('open', () => {
      socket.setInterval(() => {
        socket.send(JSON.stringify({ t: Date.now(), vu: __VU }));
      }, MESSAGE_INTERVAL_MS);
      socket.setTimeout(() => {
        ownClose = true;
        socket.close(1000);
      }, HOLD_MS);
    });
    socket.on('message', () => received.add(1));
    socket.on('close', (code) => {
      if (closeSeen) {
        return;
      }
      closeSeen = true;
      const by = ownClose ? 'client' : 'server';
      closes.add(1, { code: typeof code === 'number' ? String(code) : 'none', by: by });
      endedByServer = !ownClose;
    });
    socket.on('error', () => {
      // A read error without a close frame: reset, timeout, proxy cut.
      if (!closeSeen) {
        closeSeen = true;
        closes.add(1, { code: 'none', by: 'server' });
        endedByServer = true;
      }
    });
  });

  const upgraded = check(res, { 'upgraded (101)': (r) => r && r.status === 101 });
  connectOk.add(upgraded);
  if (!upgraded) {
    const status = res ? String(res.status) : 'error';
    refused.add(1, { status: status });
    // 503 carries Retry-After; honour it, else back off a little.
    const retryAfter = res && res.headers ? Number(res.headers['Retry-After']) : NaN;
    sleep(Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : 1 + Math.random());
    endedByServer = true;
    return;
  }
  if (closeSeen) {
    sessionLength.add(Date.now() - opened);
  }
  if (endedByServer) {
    sleep((Math.random() * RECONNECT_JITTER_MS) / 1000);
  }
}
