// Small rolling statistics for the HUD: events per second and a percentile over a time window.

/** Counts events and reports their rate over the last `windowMs`. */
export class RateMeter {
  constructor(windowMs = 2000) {
    this.windowMs = windowMs;
    /** @type {number[]} */
    this.times = [];
  }

  mark(now = performance.now()) {
    this.times.push(now);
    this.#prune(now);
  }

  /** Events per second over the window (0 when idle). */
  rate(now = performance.now()) {
    this.#prune(now);
    if (this.times.length < 2) return this.times.length ? 1000 / this.windowMs : 0;
    const span = Math.max(now - this.times[0], 1);
    return (this.times.length * 1000) / Math.max(span, this.windowMs / 2);
  }

  reset() {
    this.times.length = 0;
  }

  #prune(now) {
    const cutoff = now - this.windowMs;
    let i = 0;
    while (i < this.times.length && this.times[i] < cutoff) i++;
    if (i) this.times.splice(0, i);
  }
}

/** Keeps samples of the last `windowMs` and reports a percentile of them. */
export class RollingPercentile {
  constructor(windowMs = 3000) {
    this.windowMs = windowMs;
    /** @type {{t: number, v: number}[]} */
    this.samples = [];
  }

  add(value, now = performance.now()) {
    this.samples.push({ t: now, v: value });
    this.#prune(now);
  }

  /** The p-th percentile (0–100) of the window, or null without samples. */
  percentile(p, now = performance.now()) {
    this.#prune(now);
    if (!this.samples.length) return null;
    const values = this.samples.map((s) => s.v).sort((a, b) => a - b);
    const rank = Math.min(values.length - 1, Math.max(0, Math.ceil((p / 100) * values.length) - 1));
    return values[rank];
  }

  reset() {
    this.samples.length = 0;
  }

  #prune(now) {
    const cutoff = now - this.windowMs;
    let i = 0;
    while (i < this.samples.length && this.samples[i].t < cutoff) i++;
    if (i) this.samples.splice(0, i);
  }
}
