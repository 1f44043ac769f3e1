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
}

/** The `close` event of ReconnectingSocket. */
export interface ReconnectingCloseEvent extends Event {
  /** Close code (1006 when the connection ended without a close frame). */
  readonly code: number;
  /** Close reason as received. */
  readonly reason: string;
  /** wsdrain's hint in ms, or null when the close carried none. */
  readonly hint: number | null;
  /** Wait before the next attempt in ms; null after close(). */
  readonly delayMs: number | null;
}

/** The `message` event of ReconnectingSocket. */
export interface ReconnectingMessageEvent extends Event {
  /** The message: a string or an ArrayBuffer. */
  readonly data: string | ArrayBuffer;
}

/** Event map of ReconnectingSocket. */
export interface ReconnectingSocketEventMap {
  open: Event;
  message: ReconnectingMessageEvent;
  close: ReconnectingCloseEvent;
}

/**
 * A WebSocket that reconnects after wsdrain's hint, or after an exponential backoff
 * when there is none; messages sent while disconnected are queued.
 */
export declare class ReconnectingSocket extends EventTarget {
  constructor(url: string | (() => string), options?: ReconnectingSocketOptions);
  /** True while a connection is open. */
  readonly isOpen: boolean;
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
