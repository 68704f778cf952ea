// The heads-up display over the video: rates, latency, inference time, drops, connection.

const STATE_WORDS = {
  idle: "stopped",
  connecting: "connecting…",
  connected: "connected",
  disconnected: "disconnected",
  reconnecting: "reconnecting…",
};

/** A connection state as the user reads it. */
export function stateLabel(state, retryAt = null, now = performance.now()) {
  if (state === "reconnecting" && retryAt !== null && retryAt > now + 900) {
    return `reconnecting in ${Math.ceil((retryAt - now) / 1000)} s…`;
  }
  return STATE_WORDS[state] ?? state;
}

const fixed = (value, digits = 0) => (value === null || value === undefined ? "—" : value.toFixed(digits));

export class Hud {
  /** @param {HTMLElement} root  holds elements with data-hud="<field>" */
  constructor(root) {
    this.root = root;
    this.fields = Object.fromEntries(
      [...root.querySelectorAll("[data-hud]")].map((el) => [el.dataset.hud, el]),
    );
  }

  /**
   * @param {{state: string, stateText: string, sentFps: number, resultFps: number,
   *          latencyP50: number | null, inferenceMs: number | null, dropped: number,
   *          inFlight: number, maxInFlight: number}} view
   */
  render(view) {
    this.#set("state", view.stateText);
    this.#set("sentFps", fixed(view.sentFps, 1));
    this.#set("resultFps", fixed(view.resultFps, 1));
    this.#set("latency", view.latencyP50 === null ? "—" : `${fixed(view.latencyP50)} ms`);
    this.#set("inference", view.inferenceMs === null ? "—" : `${fixed(view.inferenceMs, 1)} ms`);
    this.#set("dropped", String(view.dropped));
    this.#set("inFlight", `${view.inFlight} / ${view.maxInFlight}`);
    this.root.dataset.state = view.state;
  }

  #set(field, text) {
    const el = this.fields[field];
    if (el && el.textContent !== text) el.textContent = text;
  }
}
