// The heads-up display over the video: rates, latency, inference time, drops, connection, and
// with the avatar view on, the results/s driving the avatar and the server's rig solve time.

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
    /** Rows about the avatar rig, shown while the page asks for it. */
    this.rigRows = [...root.querySelectorAll("[data-hud-rig]")];
  }

  /**
   * @param {{state: string, stateText: string, sentFps: number, resultFps: number,
   *          latencyP50: number | null, inferenceMs: number | null, dropped: number,
   *          inFlight: number, maxInFlight: number, rig?: boolean, rigFps?: number,
   *          rigSolveMs?: number | null}} view
   */
  render(view) {
    this.#set("state", view.stateText);
    this.#set("sentFps", fixed(view.sentFps, 1));
    this.#set("resultFps", fixed(view.resultFps, 1));
    this.#set("latency", view.latencyP50 === null ? "—" : `${fixed(view.latencyP50)} ms`);
    this.#set("inference", view.inferenceMs === null ? "—" : `${fixed(view.inferenceMs, 1)} ms`);
    this.#set("dropped", String(view.dropped));
    this.#set("inFlight", `${view.inFlight} / ${view.maxInFlight}`);
    this.#set("rigFps", fixed(view.rigFps, 1));
    this.#set("rigSolve", view.rigSolveMs == null ? "—" : `${fixed(view.rigSolveMs, 2)} ms`);
    for (const row of this.rigRows) row.hidden = !view.rig;
    this.root.dataset.state = view.state;
  }

  #set(field, text) {
    const el = this.fields[field];
    if (el && el.textContent !== text) el.textContent = text;
  }
}
