// Types for wsdrain-hint (index.js). See README.md for what each export is for.

/** Hints above this (one hour, in ms) are treated as no hint. */
export declare const HINT_MAX_MS: number;

/**
 * The delay wsdrain's close reason `{"reconnect_after_ms":N}` asks for, in ms, or
 * `fallbackMs` when the close carries no usable hint.
 */
export declare function reconnectDelay(
  closeEvent: { reason?: unknown } | null | undefined,
  fallbackMs: number,
): number;

/** The hint in a close reason, or null. */
export declare function parseHint(reason: unknown): number | null;

/** Options of the exponential backoff used when a close carries no hint. */
export interface BackoffOptions {
  /** First step in ms (default 500). */
  baseMs?: number;
  /** Largest wait in ms (default 30000). */
  maxMs?: number;
  /** Source of randomness in [0, 1) (default Math.random). */
  random?: () => number;
}

/** Attempt k waits a random time in [½, 1] × min(maxMs, baseMs · 2^k) ms. */
export declare function backoffDelay(attempt: number, options?: BackoffOptions): number;

/** A WebSocket constructor: the browser's, undici's or the `ws` package's. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocket;

/** Options of ReconnectingSocket. */
export interface ReconnectingSocketOptions {
  /** Constructor to use; default the global WebSocket. */
  WebSocket?: WebSocketConstructor | unknown;
  /** Subprotocols to offer. */
  protocols?: string | string[];
  /** First backoff step in ms (default 500). */
  baseMs?: number;
  /** Largest backoff in ms (default 30000). */
  maxMs?: number;
  /** A connection open this long resets the backoff (default 5000 ms). */
  minUptimeMs?: number;
  /** Most messages queued while disconnected (default 10000; the oldest are dropped). */
  maxQueued?: number;
  /** Connection attempts in a row that may fail before it gives up (default Infinity). */
  maxRetries?: number;
  /** A connect not open within this many ms is abandoned and retried (default 10000). */
  connectTimeoutMs?: number;
  /** How binary messages arrive: `arraybuffer` (default), or `blob` / `nodebuffer` where the WebSocket supports them. */
  binaryType?: string;
}

/** The `close` event of ReconnectingSocket. */
export interface ReconnectingCloseEvent extends Event {
  /** Close code (1006 when the connection ended without a close frame). */
  readonly code: number;
  /** Close reason as received. */
  readonly reason: string;
  /** wsdrain's hint in ms, or null when the close carried none. */
  readonly hint: number | null;
  /** Wait before the next attempt in ms; null after close() or when it gave up (maxRetries). */
  readonly delayMs: number | null;
}

/** The `error` event of ReconnectingSocket: a failed or timed-out connect, a socket error. */
export interface ReconnectingErrorEvent extends Event {
  /** The underlying error, when there is one. */
  readonly error: unknown;
  /** What went wrong, in words. */
  readonly message: string;
}

/** The `message` event of ReconnectingSocket. */
export interface ReconnectingMessageEvent extends Event {
  /** The message: a string, or binary data as `binaryType` says (an ArrayBuffer by default). */
  readonly data: string | ArrayBuffer | Blob | Uint8Array;
}

/** Event map of ReconnectingSocket. */
export interface ReconnectingSocketEventMap {
  open: Event;
  message: ReconnectingMessageEvent;
  error: ReconnectingErrorEvent;
  close: ReconnectingCloseEvent;
}

/**
 * A WebSocket that reconnects after wsdrain's hint, or after an exponential backoff
 * when there is none; messages sent while disconnected are queued.
 */
export declare class ReconnectingSocket extends EventTarget {
  constructor(url: string | (() => string), options?: ReconnectingSocketOptions);
  static readonly CONNECTING: 0;
  static readonly OPEN: 1;
  static readonly CLOSING: 2;
  static readonly CLOSED: 3;
  /** CONNECTING (also while waiting to reconnect), OPEN, CLOSING or CLOSED. */
  readonly readyState: 0 | 1 | 2 | 3;
  /** True while a connection is open. */
  readonly isOpen: boolean;
  /** The URL of the current (or last) connection. */
  readonly url: string;
  /** Connection attempts in a row that did not open. */
  readonly retryCount: number;
  /** How binary messages arrive; applies to the current and every later connection. */
  binaryType: string;
  onopen: ((event: Event) => void) | null;
  onmessage: ((event: ReconnectingMessageEvent) => void) | null;
  onerror: ((event: ReconnectingErrorEvent) => void) | null;
  onclose: ((event: ReconnectingCloseEvent) => void) | null;
  /** Closes the current connection (if any) and connects again at once, also after close(). */
  reconnect(code?: number, reason?: string): void;
  /** Sends now when open, otherwise queues for the next connection. */
  send(data: string | ArrayBufferLike | ArrayBufferView | Blob): void;
  /** Closes for good: no more reconnects. */
  close(code?: number, reason?: string): void;
  addEventListener<K extends keyof ReconnectingSocketEventMap>(
    type: K,
    listener: (event: ReconnectingSocketEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
}
