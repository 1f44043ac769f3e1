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

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

/**
 * A WebSocket that reconnects by itself: after the hint of a close that carries one,
 * otherwise after an exponential backoff. Messages sent while it is not open are
 * queued and sent, in order, as soon as the next connection opens, so nothing is lost
 * across a move from a draining pod to its neighbour.
 *
 * It has the surface of a WebSocket and of partysocket's ReconnectingWebSocket:
 * `readyState` (and the `CONNECTING`…`CLOSED` constants), `binaryType`, `url`, `send`,
 * `close`, `reconnect()`, `retryCount`, and the events `open`; `message`
 * (`event.data`); `error` (`event.error`, `event.message`: a failed connect, a connect
 * that timed out, an error of the underlying socket); `close` (`event.code`,
 * `event.reason`, `event.hint` — the hint or null — and `event.delayMs`, the wait before
 * the next attempt, or null when it will not reconnect), each also as an `on<event>`
 * property.
 *
 * A tight loop is impossible: a hint is followed as given for a connection that stayed
 * open for `minUptimeMs`, and for the first short-lived one; from the second short-lived
 * connection in a row the wait is at least the backoff.
 */
export class ReconnectingSocket extends EventTarget {
  static CONNECTING = CONNECTING;
  static OPEN = OPEN;
  static CLOSING = CLOSING;
  static CLOSED = CLOSED;

  /**
   * @param {string | (() => string)} url where to connect; a function is asked again at each attempt
   * @param {object} [options]
   * @param {typeof WebSocket} [options.WebSocket] constructor to use; default the global `WebSocket`
   * @param {string | string[]} [options.protocols] subprotocols
   * @param {number} [options.baseMs] first backoff step (default 500)
   * @param {number} [options.maxMs] largest backoff (default 30000)
   * @param {number} [options.minUptimeMs] a connection open this long resets the backoff (default 5000)
   * @param {number} [options.maxQueued] most messages kept while disconnected (default 10000; older ones are dropped)
   * @param {number} [options.maxRetries] attempts in a row that may fail before it gives up (default Infinity)
   * @param {number} [options.connectTimeoutMs] a connect not open by then is abandoned and retried (default 10000)
   * @param {string} [options.binaryType] `arraybuffer` (default) or what the WebSocket supports (`blob`, `nodebuffer`)
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
    this._maxRetries = options.maxRetries ?? Infinity;
    this._connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this._binaryType = options.binaryType ?? "arraybuffer";
    this._queue = [];
    this._shortStreak = 0;
    this._retries = 0;
    this._stopped = false;
    this._timer = null;
    this._ws = null;
    this.onopen = null;
    this.onmessage = null;
    this.onerror = null;
    this.onclose = null;
    this._connect();
  }

  /** `CONNECTING` (also while waiting to reconnect), `OPEN`, `CLOSING` or `CLOSED`. */
  get readyState() {
    if (this._ws !== null) return this._ws.readyState;
    return this._stopped ? CLOSED : CONNECTING;
  }

  /** True while a connection is open and `send` goes straight to the wire. */
  get isOpen() {
    return this.readyState === OPEN;
  }

  /** The URL of the current (or last) connection. */
  get url() {
    return this._ws?.url ?? (typeof this._url === "function" ? "" : this._url);
  }

  /** Connection attempts in a row that did not open. */
  get retryCount() {
    return this._retries;
  }

  /** How binary messages arrive; applies to the current and every later connection. */
  get binaryType() {
    return this._binaryType;
  }

  set binaryType(value) {
    this._binaryType = value;
    if (this._ws !== null) this._ws.binaryType = value;
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

  /**
   * Closes the current connection (if any) and connects again at once, also after
   * `close()` or after it gave up; the retry count starts over.
   */
  reconnect(code = 1000, reason = "") {
    if (this._timer !== null) clearTimeout(this._timer);
    this._timer = null;
    this._stopped = false;
    this._retries = 0;
    this._shortStreak = 0;
    const old = this._ws;
    this._ws = null;
    if (old !== null) {
      old._replaced = true;
      if (old.readyState <= OPEN) old.close(code, reason);
    }
    this._connect();
  }

  /** Dispatches `event`, then calls the matching `on<type>` property. */
  dispatchEvent(event) {
    const result = super.dispatchEvent(event);
    const handler = this[`on${event.type}`];
    if (typeof handler === "function") handler.call(this, event);
    return result;
  }

  _error(error) {
    const out = new Event("error");
    out.error = error;
    out.message = error instanceof Error ? error.message : String(error?.message ?? error);
    this.dispatchEvent(out);
  }

  // One connection attempt, from construction to its close event; why each close
  // reconnects when it does is decided in `_closed`.
  _connect() {
    this._timer = null;
    if (this._stopped) return;
    const url = typeof this._url === "function" ? this._url() : this._url;
    let ws;
    try {
      ws = this._protocols === undefined ? new this._Impl(url) : new this._Impl(url, this._protocols);
    } catch (err) {
      // A bad URL throws synchronously: report it and retry after the backoff.
      this._error(err);
      this._shortStreak += 1;
      this._retries += 1;
      if (this._retries > this._maxRetries) this._stopped = true;
      this._schedule(backoffDelay(this._shortStreak, this._backoff), 1006, String(err), null);
      return;
    }
    this._ws = ws;
    let openedAt = null;
    ws.binaryType = this._binaryType;
    const connectTimer = setTimeout(() => {
      if (ws.readyState !== CONNECTING) return;
      this._error(new Error(`connect timed out after ${this._connectTimeoutMs} ms`));
      ws.close(); // ends in a close event (1006), which schedules the retry
    }, this._connectTimeoutMs);
    ws.addEventListener("open", () => {
      clearTimeout(connectTimer);
      if (ws._replaced) return;
      openedAt = Date.now();
      this._retries = 0;
      while (this._queue.length > 0 && ws.readyState === OPEN) ws.send(this._queue.shift());
      this.dispatchEvent(new Event("open"));
    });
    ws.addEventListener("message", (event) => {
      if (ws._replaced) return;
      const out = new Event("message");
      out.data = event.data;
      this.dispatchEvent(out);
    });
    ws.addEventListener("error", (event) => {
      if (!ws._replaced) this._error(event?.error ?? new Error(event?.message ?? "WebSocket error"));
    });
    ws.addEventListener("close", (event) => {
      clearTimeout(connectTimer);
      if (ws._replaced) return;
      if (this._ws === ws) this._ws = null;
      this._closed(event, openedAt);
    });
  }

  _closed(event, openedAt) {
    const lived = openedAt === null ? -1 : Date.now() - openedAt;
    this._shortStreak = lived >= this._minUptimeMs ? 0 : this._shortStreak + 1;
    if (openedAt === null) this._retries += 1;
    const hint = parseHint(event.reason);
    let delay;
    if (hint === null) delay = backoffDelay(this._shortStreak, this._backoff);
    else if (this._shortStreak <= 1) delay = hint;
    else delay = Math.max(hint, backoffDelay(this._shortStreak, this._backoff));
    if (this._retries > this._maxRetries) this._stopped = true;
    this._schedule(delay, event.code, event.reason ?? "", hint);
  }

  _schedule(delay, code, reason, hint) {
    const out = new Event("close");
    out.code = code;
    out.reason = reason;
    out.hint = hint;
    out.delayMs = this._stopped ? null : delay;
    if (!this._stopped) this._connectAt(performance.now() + delay);
    this.dispatchEvent(out);
  }

  // Connects once `due` (performance.now() time) has passed. setTimeout counts whole
  // milliseconds from when it was set and may fire up to 1 ms early on this clock; a
  // hint is a promise not to come back sooner, so an early timer is set again for the rest.
  _connectAt(due) {
    this._timer = setTimeout(() => {
      const left = due - performance.now();
      if (left > 0) this._connectAt(due);
      else this._connect();
    }, Math.max(0, Math.ceil(due - performance.now())));
  }
}
