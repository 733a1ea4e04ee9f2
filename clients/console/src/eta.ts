/**
 * The ETA of a run's progress (docs/agui.md, "Progress with an ETA"): the
 * rate is an exponentially weighted moving average of the rates between
 * consecutive progress updates; the ETA is `(total - done) / rate`. No ETA
 * without a total, or before two updates.
 */
export interface Estimate {
  /** Units of `done` per second (absent before two updates). */
  rate?: number;
  /** Milliseconds left, as of the last update (absent: no estimate). */
  etaMs?: number;
}

export class Eta {
  #last: { t: number; done: number } | undefined;
  #rate: number | undefined;
  #updates = 0;
  #total: number | undefined;
  #done = 0;

  /** `alpha`: the weight of the newest rate (0..1]. */
  constructor(readonly alpha = 0.3) {}

  reset(): void {
    this.#last = undefined;
    this.#rate = undefined;
    this.#updates = 0;
    this.#total = undefined;
    this.#done = 0;
  }

  /** A progress update: `done` of `total` at time `t` (ms). */
  update(done: number, total: number | undefined, t: number): void {
    this.#total = total;
    const last = this.#last;
    if (last && done < last.done) {
      // Progress went back: a new count, a new rate.
      this.reset();
      this.#total = total;
    }
    this.#done = done;
    this.#updates++;
    const prev = this.#last;
    if (!prev) {
      this.#last = { t, done };
      return;
    }
    const dt = (t - prev.t) / 1000;
    // Updates in the same millisecond (a replay of a batch) are one update.
    if (dt <= 0.001) return;
    const inst = (done - prev.done) / dt;
    this.#rate = this.#rate === undefined ? inst : this.alpha * inst + (1 - this.alpha) * this.#rate;
    this.#last = { t, done };
  }

  get updates(): number {
    return this.#updates;
  }

  estimate(): Estimate {
    const out: Estimate = {};
    if (this.#updates < 2 || this.#rate === undefined) return out;
    out.rate = this.#rate;
    if (this.#total === undefined || !(this.#rate > 0)) return out;
    out.etaMs = Math.max(0, ((this.#total - this.#done) / this.#rate) * 1000);
    return out;
  }
}

/** "45 s", "3 min 5 s", "2 h 4 min". */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}
