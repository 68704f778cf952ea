// The producer session: one WebSocket to /ws, hello → ready, frames out, results in.
//
// Flow control is credit based: at most `maxInFlight` frames are unanswered at any time, so
// neither the browser nor the socket ever holds a queue. A frame's credit comes back when
// - its own result arrives;
// - a result for a later frame arrives: the server answers a session's frames in order, so every
//   earlier frame still unanswered was dropped (the result's `dropped` counts it) or refused;
// - an `error` names its frame id;
// - nothing of the above happened within a safety timeout (a lost credit must not stall).
// When the socket drops, the stream reconnects with exponential backoff until stop().
// The hello's `fps` is a request: the server grants a rate (`ready.fps_granted`, then `grant`
// messages when capacity frees up or tightens) and drops frames beyond it, so the page sends at
// most `granted` frames/s. A server refuses only when not even its floor rate can be granted;
// then the stream asks again announcing a lower rate, down to `minFps`.

import { describeClose, describeError, encodeFrame, helloMessage, parseServerMessage, probeUrl, STATS_REQUEST } from "./protocol.js";

/** @typedef {"idle" | "connecting" | "connected" | "disconnected" | "reconnecting"} StreamState */

const MIN_CREDIT_TIMEOUT_MS = 3000;
// How long to wait for `ready` after opening a socket before trying again (a server that is
// still warming up may accept the socket and never answer).
const HANDSHAKE_TIMEOUT_MS = 10000;
// Close code for "no ready in time" (application range 4000–4999).
const CLOSE_NO_READY = 4000;

export class FrameStream extends EventTarget {
  #wanted = false; // start() called and not stop(): keep (re)connecting
  #attempt = 0; // numbers connection attempts, so a stale one can tell it is stale
  #droppedBefore = 0; // frames dropped in sessions that have ended
  #sessionDropped = { fromResults: 0, fromStats: 0 };
  #sweepTimer = null;

  /**
   * @param {{url: string, parts?: string[], fps?: number, minFps?: number, maxInFlight?: number,
   *          backoffInitialMs?: number, backoffMaxMs?: number, rig?: boolean | object}} options
   */
  constructor({ url, parts, fps = 30, minFps = 10, maxInFlight = 2, backoffInitialMs = 500, backoffMaxMs = 10000, rig = false }) {
    super();
    this.url = url;
    this.parts = parts;
    /** Ask for the avatar rig in every result (`"rig": true` in the hello). */
    this.rig = rig;
    /** The frame rate the page wants to send. */
    this.fps = fps;
    /** The rate announced in this session's hello: `fps`, or less while the server is full. */
    this.sessionFps = fps;
    /** "full" or "lite" (holistic with the lite hand model: cheaper, so a higher grant). */
    this.model = "full";
    /** The rate the server grants this session now (frames/s), or null before `ready`. */
    this.granted = null;
    this.minFps = minFps;
    this.maxInFlight = maxInFlight;
    this.backoffInitialMs = backoffInitialMs;
    this.backoffMaxMs = backoffMaxMs;

    /** @type {StreamState} */
    this.state = "idle";
    /** @type {WebSocket | null} */
    this.socket = null;
    /** The server's `ready` message of the current session. */
    this.session = null;
    /**
     * Credits taken: frame id → {since: when (performance.now()), sent: false while the frame
     * is still being encoded}.
     * @type {Map<number, {since: number, sent: boolean}>}
     */
    this.inFlight = new Map();
    this.creditTimeoutMs = MIN_CREDIT_TIMEOUT_MS;
    this.nextFrameId = 1;
    this.retry = { attempt: 0, at: null, timer: null };

    this.framesSent = 0;
    this.results = 0;
    this.frameErrors = 0;
    this.creditsExpired = 0;
    /** Σ `dropped` over all results, and the frames this page released for a later result. */
    this.droppedReported = 0;
    this.releasedUnanswered = 0;
    this.lastStats = null;
  }

  /** Frames the server dropped, over all sessions of this page (per results and stats). */
  get dropped() {
    const { fromResults, fromStats } = this.#sessionDropped;
    return this.#droppedBefore + Math.max(fromResults, fromStats);
  }

  get limits() {
    return this.session?.limits ?? null;
  }

  /** Frames sent and not yet answered. */
  get unanswered() {
    let count = 0;
    for (const { sent } of this.inFlight.values()) count += sent;
    return count;
  }

  /** True when a frame may be captured and sent now. */
  get hasCredit() {
    return this.state === "connected" && this.inFlight.size < this.maxInFlight;
  }

  start() {
    if (this.#wanted) return;
    this.#wanted = true;
    this.retry.attempt = 0;
    this.sessionFps = this.fps;
    this.#open("connecting");
  }

  stop() {
    this.#wanted = false;
    this.#attempt++;
    clearTimeout(this.retry.timer);
    this.retry.timer = null;
    this.retry.at = null;
    const socket = this.socket;
    this.#endSession();
    if (socket && socket.readyState <= WebSocket.OPEN) socket.close(1000, "client stopped");
    this.#setState("idle");
  }

  /** Takes a credit for a frame about to be captured; null when none is free. */
  reserve() {
    if (!this.hasCredit) return null;
    const frameId = this.nextFrameId;
    this.nextFrameId = (this.nextFrameId + 1) >>> 0 || 1;
    this.inFlight.set(frameId, { since: performance.now(), sent: false });
    return frameId;
  }

  /** Gives back a reserved credit whose frame was never sent (e.g. encoding failed). */
  cancel(frameId) {
    if (this.inFlight.delete(frameId)) this.#creditFreed();
  }

  /**
   * Sends a reserved frame. Returns false when the frame can no longer go out (the session it
   * was reserved in has ended, or it exceeds the server's message limit).
   * @param {number} frameId
   * @param {number} ts  capture time, performance.now() clock
   * @param {ArrayBuffer} image  encoded JPEG
   */
  send(frameId, ts, image) {
    if (!this.inFlight.has(frameId) || this.socket?.readyState !== WebSocket.OPEN) return false;
    const limit = this.limits?.max_message_bytes;
    if (limit && image.byteLength + 16 > limit) {
      this.cancel(frameId);
      const size = `${(image.byteLength / 1e6).toFixed(1)} MB`;
      const text = `A frame is ${size}, more than the server accepts; lower the resolution or the JPEG quality.`;
      this.#problem("warning", "frame_too_big", text, "frame");
      return false;
    }
    this.socket.send(encodeFrame(frameId, ts, image));
    this.inFlight.set(frameId, { since: performance.now(), sent: true });
    this.framesSent++;
    this.dispatchEvent(new CustomEvent("sent", { detail: { frameId, ts, bytes: image.byteLength } }));
    return true;
  }

  requestStats() {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(STATS_REQUEST);
  }

  /** Asks for the avatar rig, or stops asking: in the next hello, and on a live session at once. */
  /** Change the rate asked for; a live session asks the server for a new grant. */
  setFps(fps) {
    if (this.fps === fps) return;
    this.fps = fps;
    this.sessionFps = fps;
    if (this.socket?.readyState === WebSocket.OPEN && this.session) {
      this.socket.send(JSON.stringify({ type: "configure", fps }));
    }
  }

  /** Switch between the full and the lite holistic model (a live session is reconfigured). */
  setModel(model) {
    if (this.model === model) return;
    this.model = model;
    if (this.session) this.configure({ model });
  }

  /** `on`: false, true, or the rig's options (`{legs: "seated"}`, docs/protocol.md). */
  setRig(on) {
    if (JSON.stringify(this.rig) === JSON.stringify(on)) return;
    this.rig = on;
    this.configure({ rig: on });
  }

  /** Sends a `configure` on a live session (e.g. `{recenter: true}`); false when none is open. */
  configure(options) {
    // Once open, the hello has gone out (sent on "open"); the server reads messages in order.
    if (this.socket?.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify({ type: "configure", ...options }));
    return true;
  }

  // --- connection -------------------------------------------------------------------------

  /** @param {StreamState} state */
  async #open(state) {
    const attempt = ++this.#attempt;
    this.#setState(state);
    // A server still warming up would accept the socket and not answer it: wait until it is ready.
    const readiness = await checkReadiness(this.url);
    if (attempt !== this.#attempt || !this.#wanted) return; // stopped or restarted meanwhile
    if (readiness !== "ready") {
      const warming = readiness === "warming";
      this.#problem(
        warming ? "warning" : "error",
        warming ? "warming_up" : "unreachable",
        warming ? "The server is starting up…" : `Cannot reach the server at ${new URL(this.url).host}.`,
      );
      this.#scheduleReconnect(warming ? { fixedMs: 1000 } : {});
      return;
    }

    let socket;
    try {
      socket = new WebSocket(this.url);
    } catch (error) {
      this.#wanted = false;
      this.#setState("idle");
      this.#problem("error", "bad_url", `Cannot open ${this.url}: ${error.message}`);
      return;
    }
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    let opened = false;
    let fatal = null;
    const dropped = (code) => {
      clearTimeout(handshakeTimer);
      if (this.socket !== socket) return; // stopped, or already given up on
      this.#endSession();
      if (this.#wanted) this.#onDrop({ attempt, opened, code, fatal });
    };
    // No `ready` in time: give up on this socket at once, without waiting for a closing
    // handshake the server may never answer.
    const handshakeTimer = setTimeout(() => {
      fatal = { code: "no_ready", message: "" };
      socket.close(CLOSE_NO_READY, "no ready");
      dropped(CLOSE_NO_READY);
    }, HANDSHAKE_TIMEOUT_MS);
    socket.addEventListener("open", () => {
      opened = true;
      const hello = helloMessage({ parts: this.parts, fps: this.sessionFps, model: this.model });
      socket.send(this.rig ? JSON.stringify({ ...JSON.parse(hello), rig: this.rig }) : hello);
    });
    socket.addEventListener("message", (event) => {
      if (this.socket !== socket || typeof event.data !== "string") return;
      const msg = parseServerMessage(event.data);
      if (msg?.type === "ready") clearTimeout(handshakeTimer);
      if (msg?.type === "error" && msg.fatal) fatal = msg;
      if (msg) this.#onMessage(msg);
    });
    socket.addEventListener("close", (event) => dropped(event.code));
  }

  async #onDrop({ attempt, opened, code, fatal }) {
    const wasConnected = this.state === "connected";
    this.#setState(this.state === "reconnecting" ? "reconnecting" : "disconnected");
    if (wasConnected) this.sessionFps = this.fps; // a new session may get the full rate again
    let errorCode = fatal?.code ?? (code === 1013 ? "server_full" : null);
    let reason = fatal ? describeError(fatal.code, fatal.message) : describeClose(code);
    let retryAfterMs = 0;
    if (!opened) {
      // The browser hides why an upgrade failed; ask the endpoint over plain HTTP.
      const refusal = await explainRefusal(this.url);
      if (attempt !== this.#attempt || !this.#wanted) return;
      if (refusal) {
        errorCode = refusal.code ?? errorCode;
        reason = refusal.text;
        retryAfterMs = refusal.retryAfterS * 1000;
      }
    }
    if (errorCode === "server_full" && this.sessionFps > this.minFps) {
      // Admission control prices a session by its announced rate: ask for less.
      this.sessionFps = Math.max(this.minFps, Math.round(this.sessionFps / 2));
      reason = `${reason} Asking again at ${this.sessionFps} fps.`;
      this.#problem("error", errorCode, reason);
      this.#scheduleReconnect({ fixedMs: 250 });
      return;
    }
    if (reason) this.#problem("error", errorCode ?? `close_${code}`, reason);
    this.#scheduleReconnect({ minMs: retryAfterMs });
  }

  /** Exponential backoff with jitter, or a fixed delay; never shorter than `minMs`. */
  #scheduleReconnect({ fixedMs = null, minMs = 0 } = {}) {
    let delay = fixedMs;
    if (delay === null) {
      const backoff = Math.min(this.backoffMaxMs, this.backoffInitialMs * 2 ** this.retry.attempt);
      delay = Math.max(minMs, backoff * (0.8 + 0.4 * Math.random()));
      this.retry.attempt++;
    }
    const attempt = this.#attempt;
    this.retry.at = performance.now() + delay;
    clearTimeout(this.retry.timer);
    this.retry.timer = setTimeout(() => {
      this.retry.timer = null;
      this.retry.at = null;
      if (this.#wanted && attempt === this.#attempt) this.#open("reconnecting");
    }, delay);
    this.#emitState();
  }

  #endSession() {
    this.socket = null;
    const { fromResults, fromStats } = this.#sessionDropped;
    this.#droppedBefore += Math.max(fromResults, fromStats);
    this.#sessionDropped = { fromResults: 0, fromStats: 0 };
    this.session = null;
    this.#setGrant(null, null);
    this.inFlight.clear();
    clearInterval(this.#sweepTimer);
    this.#sweepTimer = null;
  }

  // --- messages ---------------------------------------------------------------------------

  #onMessage(msg) {
    switch (msg.type) {
      case "ready":
        this.session = msg;
        this.creditTimeoutMs = Math.max(MIN_CREDIT_TIMEOUT_MS, 4 * (msg.limits?.max_frame_age_ms ?? 0));
        this.retry.attempt = 0;
        this.#sweepTimer = setInterval(() => this.#expireCredits(), 250);
        this.#setState("connected");
        this.#setGrant(typeof msg.fps_granted === "number" ? msg.fps_granted : null, "ready");
        this.dispatchEvent(new CustomEvent("ready", { detail: msg }));
        this.#creditFreed();
        break;
      case "result":
        this.#onResult(msg);
        break;
      case "grant":
        if (typeof msg.fps === "number" && msg.fps > 0) this.#setGrant(msg.fps, msg.reason);
        break;
      case "stats":
        this.lastStats = msg;
        if (typeof msg.dropped_total === "number") this.#sessionDropped.fromStats = msg.dropped_total;
        this.dispatchEvent(new CustomEvent("stats", { detail: msg }));
        break;
      case "error":
        if (Number.isInteger(msg.frame)) {
          this.frameErrors++;
          this.cancel(msg.frame);
        }
        // A fatal error is reported with the close that follows it.
        if (!msg.fatal) this.#problem("warning", msg.code, describeError(msg.code, msg.message), "frame");
        break;
      case "warning":
        this.#problem("warning", msg.code, msg.message || describeError(msg.code), "session");
        break;
      default:
        break; // unknown types are ignored, as the protocol says
    }
  }

  #setGrant(fps, reason) {
    if (this.granted === fps) return;
    this.granted = fps;
    this.dispatchEvent(new CustomEvent("grant", { detail: { fps, reason } }));
  }

  #onResult(result) {
    const now = performance.now();
    this.results++;
    if (typeof result.dropped === "number") {
      this.#sessionDropped.fromResults += result.dropped;
      this.droppedReported += result.dropped;
    }
    let freed = this.inFlight.delete(result.frame);
    for (const [frameId, { sent }] of this.inFlight) {
      // Answered in order: an earlier frame still unanswered will never get a result.
      if (sent && frameId < result.frame && this.inFlight.delete(frameId)) {
        this.releasedUnanswered++;
        freed = true;
      }
    }
    const latencyMs = typeof result.ts === "number" ? now - result.ts : null;
    this.dispatchEvent(new CustomEvent("result", { detail: { result, latencyMs, receivedAt: now } }));
    if (freed) this.#creditFreed();
  }

  #expireCredits() {
    const cutoff = performance.now() - this.creditTimeoutMs;
    let freed = false;
    for (const [frameId, { since }] of this.inFlight) {
      if (since < cutoff) {
        this.inFlight.delete(frameId);
        this.creditsExpired++;
        freed = true;
      }
    }
    if (freed) {
      this.requestStats();
      this.#creditFreed();
    }
  }

  #creditFreed() {
    this.dispatchEvent(new Event("credit"));
  }

  /**
   * @param {"error" | "warning"} level
   * @param {string} code
   * @param {string} text  for people
   * @param {"connection" | "session" | "frame"} scope  a connection problem is over once connected
   */
  #problem(level, code, text, scope = "connection") {
    this.dispatchEvent(new CustomEvent("problem", { detail: { level, code, text, scope } }));
  }

  #setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.#emitState();
  }

  #emitState() {
    this.dispatchEvent(new CustomEvent("state", { detail: { state: this.state, retryAt: this.retry.at } }));
  }
}

/**
 * Is the server up and warm? `GET /readyz` answers 503 while it warms up. A proxy that does not
 * pass /readyz through (404 and the like) is taken as ready.
 * @returns {Promise<"ready" | "warming" | "unreachable">}
 */
export async function checkReadiness(wsUrl) {
  const url = new URL("/readyz", probeUrl(wsUrl));
  try {
    const response = await fetch(url, { cache: "no-store", signal: AbortSignal.timeout(3000) });
    return response.status === 503 ? "warming" : "ready";
  } catch {
    return "unreachable";
  }
}

/**
 * Why did the upgrade fail? A plain GET to the same URL gets the server's JSON refusal
 * (`{"error": {"code", "message"}}`, with Retry-After on 503), or shows it is unreachable.
 * @returns {Promise<{code: string | null, text: string, retryAfterS: number} | null>}
 */
export async function explainRefusal(wsUrl) {
  let response;
  try {
    response = await fetch(probeUrl(wsUrl), { cache: "no-store", signal: AbortSignal.timeout(3000) });
  } catch {
    return { code: "unreachable", text: `Cannot reach the server at ${new URL(wsUrl).host}.`, retryAfterS: 0 };
  }
  if (response.ok) return null;
  const retryAfterS = Number(response.headers.get("Retry-After")) || 0;
  let code = null;
  let message = "";
  try {
    const body = await response.json();
    code = body?.error?.code ?? null;
    message = body?.error?.message ?? "";
  } catch {
    // not the documented JSON refusal: fall back on the status
  }
  if (code) return { code, text: describeError(code, message), retryAfterS };
  const byStatus = {
    401: "unauthorized",
    403: "origin_not_allowed",
    503: "server_full",
  };
  code = byStatus[response.status];
  if (code) return { code, text: describeError(code), retryAfterS };
  // Typically 400 "not a WebSocket request": the server is up but refused this browser's upgrade,
  // and a plain request cannot tell why (an Origin check only applies to the upgrade).
  return {
    code: null,
    text:
      "The server refused the WebSocket connection: this page's address may not be on its origin " +
      "allow-list, or a proxy in between does not pass WebSocket upgrades through.",
    retryAfterS,
  };
}
