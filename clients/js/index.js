// wsdrain-hint: honour wsdrain's reconnect hint in a WebSocket client.
//
// When a pod behind wsdrain goes away, every client gets a close frame (1012 by
// default) whose reason is `{"reconnect_after_ms":N}`. wsdrain picks N so that clients
// which wait exactly N ms before reconnecting arrive evenly at the remaining pods.
// This module reads that hint and reconnects after it; without a hint it falls back
// to an exponential backoff. No dependencies: it uses the global `WebSocket`
// (browsers, Deno, Bun, Node >= 22) or the constructor you pass (e.g. `ws` in Node 20).

/** Hints above this (one hour) are not believed: the reason is treated as carrying no hint. */
export const HINT_MAX_MS = 3_600_000;

/**
 * The reconnect delay a close event asks for, in milliseconds.
 *
 * Reads `{"reconnect_after_ms":N}` from `closeEvent.reason`; returns N when it is an
 * integer in [0, HINT_MAX_MS], otherwise `fallbackMs` (no reason, another reason,
 * malformed JSON, a negative, fractional or huge number).
 *
 * @param {{ reason?: unknown } | null | undefined} closeEvent a CloseEvent (browser, `ws`, partysocket)
 * @param {number} fallbackMs returned when the close carries no usable hint
 * @returns {number}
 */
export function reconnectDelay(closeEvent, fallbackMs) {
  const hint = parseHint(closeEvent?.reason);
  return hint === null ? fallbackMs : hint;
}

/**
 * The hint in a close reason, or null when there is none.
 *
 * @param {unknown} reason the close reason (a string; a Buffer from `ws` internals also works)
 * @returns {number | null}
 */
export function parseHint(reason) {
  if (reason === undefined || reason === null) return null;
  const text = typeof reason === "string" ? reason : String(reason);
  if (!text.includes("reconnect_after_ms")) return null;
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch {
    return null;
  }
  const n = parsed?.reconnect_after_ms;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 0 || n > HINT_MAX_MS) return null;
  return n;
}

/**
 * The usual exponential backoff with jitter: attempt k waits a random time in
 * [½, 1] × min(maxMs, baseMs · 2^k). Used when a close carries no hint.
 *
 * @param {number} attempt 0 for the first retry
 * @param {{ baseMs?: number, maxMs?: number, random?: () => number }} [options]
 * @returns {number}
 */
export function backoffDelay(attempt, { baseMs = 500, maxMs = 30_000, random = Math.random } = {}) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling * (0.5 + 0.5 * random()));
}

const OPEN = 1;

/**
 * A WebSocket that reconnects by itself: after the hint of a close that carries one,
 * otherwise after an exponential backoff. Messages sent while it is not open are
 * queued and sent, in order, as soon as the next connection opens, so nothing is lost
 * across a move from a draining pod to its neighbour.
 *
 * Events (it is an EventTarget): `open`; `message` (`event.data`); `close`
 * (`event.code`, `event.reason`, `event.hint` — the hint or null — and `event.delayMs`,
 * the wait before the next attempt, or null after `close()`).
 *
 * A tight loop is impossible: a hint is followed as given for a connection that stayed
 * open for `minUptimeMs`, and for the first short-lived one; from the second short-lived
 * connection in a row the wait is at least the backoff.
 */
export class ReconnectingSocket extends EventTarget {
  /**
   * @param {string | (() => string)} url where to connect; a function is asked again at each attempt
   * @param {object} [options]
   * @param {typeof WebSocket} [options.WebSocket] constructor to use; default the global `WebSocket`
   * @param {string | string[]} [options.protocols] subprotocols
   * @param {number} [options.baseMs] first backoff step (default 500)
   * @param {number} [options.maxMs] largest backoff (default 30000)
   * @param {number} [options.minUptimeMs] a connection open this long resets the backoff (default 5000)
   * @param {number} [options.maxQueued] most messages kept while disconnected (default 10000; older ones are dropped)
   */
  constructor(url, options = {}) {
    super();
    const Impl = options.WebSocket ?? globalThis.WebSocket;
    if (typeof Impl !== "function") {
      throw new TypeError(
        "ReconnectingSocket: no WebSocket implementation; pass { WebSocket } (e.g. from the `ws` package)",
      );
    }
    this._Impl = Impl;
    this._url = url;
    this._protocols = options.protocols;
    this._backoff = { baseMs: options.baseMs ?? 500, maxMs: options.maxMs ?? 30_000 };
    this._minUptimeMs = options.minUptimeMs ?? 5000;
    this._maxQueued = options.maxQueued ?? 10_000;
    this._queue = [];
    this._shortStreak = 0;
    this._stopped = false;
    this._timer = null;
    this._ws = null;
    this._connect();
  }

  /** True while a connection is open and `send` goes straight to the wire. */
  get isOpen() {
    return this._ws !== null && this._ws.readyState === OPEN;
  }

  /**
   * Sends now when open, otherwise queues for the next connection.
   * @param {string | ArrayBufferLike | ArrayBufferView | Blob} data
   */
  send(data) {
    if (this.isOpen) {
      this._ws.send(data);
      return;
    }
    this._queue.push(data);
    if (this._queue.length > this._maxQueued) this._queue.shift();
  }

  /** Closes for good: no more reconnects. */
  close(code = 1000, reason = "") {
    this._stopped = true;
    if (this._timer !== null) clearTimeout(this._timer);
    this._timer = null;
    if (this._ws !== null && this._ws.readyState <= OPEN) this._ws.close(code, reason);
  }

  _connect() {
    this._timer = null;
    if (this._stopped) return;
    const url = typeof this._url === "function" ? this._url() : this._url;
    let ws;
    try {
      ws = this._protocols === undefined ? new this._Impl(url) : new this._Impl(url, this._protocols);
    } catch (err) {
      // A bad URL throws synchronously: report it and retry after the backoff.
      this._shortStreak += 1;
      this._schedule(backoffDelay(this._shortStreak, this._backoff), 1006, String(err), null);
      return;
    }
    this._ws = ws;
    let openedAt = null;
    ws.binaryType = "arraybuffer";
    ws.addEventListener("open", () => {
      openedAt = Date.now();
      while (this._queue.length > 0 && ws.readyState === OPEN) ws.send(this._queue.shift());
      this.dispatchEvent(new Event("open"));
    });
    ws.addEventListener("message", (event) => {
      const out = new Event("message");
      out.data = event.data;
      this.dispatchEvent(out);
    });
    // Errors always end in a close event, which is where the reconnect is decided.
    ws.addEventListener("error", () => {});
    ws.addEventListener("close", (event) => {
      if (this._ws === ws) this._ws = null;
      const lived = openedAt === null ? -1 : Date.now() - openedAt;
      this._shortStreak = lived >= this._minUptimeMs ? 0 : this._shortStreak + 1;
      const hint = parseHint(event.reason);
      let delay;
      if (hint === null) delay = backoffDelay(this._shortStreak, this._backoff);
      else if (this._shortStreak <= 1) delay = hint;
      else delay = Math.max(hint, backoffDelay(this._shortStreak, this._backoff));
      this._schedule(delay, event.code, event.reason ?? "", hint);
    });
  }

  _schedule(delay, code, reason, hint) {
    const out = new Event("close");
    out.code = code;
    out.reason = reason;
    out.hint = hint;
    out.delayMs = this._stopped ? null : delay;
    if (!this._stopped) this._timer = setTimeout(() => this._connect(), delay);
    this.dispatchEvent(out);
  }
}
