/**
 * Reconnect delays: exponential with full jitter (a uniformly random delay
 * between zero and the current ceiling), reset after a stable connection,
 * with an optional cap on attempts. The ceiling before attempt n (from 1) is
 * `min(max, min × 2^(n-1))`.
 */
export interface BackoffOptions {
  /** The first ceiling, ms (default 500). */
  min?: number;
  /** The largest ceiling, ms (default 30,000). */
  max?: number;
  /** Give up after this many attempts in a row (default: never). */
  maxAttempts?: number | undefined;
  /** A connection that lasted this long (ms) resets the schedule (default 60,000). */
  stableAfter?: number;
  /** The jitter fraction `j`, 0 to 1 (default 1, full jitter): the delay is
   * `ceiling × (1 − j + j × unit)`, so 0 waits the ceiling itself. */
  jitter?: number;
}

export class Backoff {
  readonly min: number;
  readonly max: number;
  readonly maxAttempts: number | undefined;
  readonly stableAfter: number;
  readonly jitter: number;
  #attempt = 0;

  constructor(options: BackoffOptions = {}) {
    this.min = Math.max(0, options.min ?? 500);
    this.max = Math.max(this.min, options.max ?? 30_000);
    this.maxAttempts = options.maxAttempts;
    this.stableAfter = options.stableAfter ?? 60_000;
    const j = options.jitter ?? 1;
    this.jitter = Number.isFinite(j) ? Math.min(1, Math.max(0, j)) : 1;
  }

  /** Attempts made since the last reset. */
  get attempt(): number {
    return this.#attempt;
  }

  /** The ceiling of the next delay: `min × 2^attempt`, at most `max`. */
  ceiling(): number {
    return Math.min(this.max, this.min * 2 ** Math.min(this.#attempt, 52));
  }

  /** The next delay (ms), `unit` (uniform in 0..1) picking where under the
   * ceiling it falls (within the jitter fraction's share of it); `undefined`
   * when the attempts are used up. */
  nextDelay(unit: number = Math.random()): number | undefined {
    if (this.maxAttempts !== undefined && this.#attempt >= this.maxAttempts) return undefined;
    const u = Number.isFinite(unit) ? Math.min(1, Math.max(0, unit)) : 0.5;
    const delay = this.ceiling() * (1 - this.jitter + this.jitter * u);
    this.#attempt += 1;
    return delay;
  }

  /** A connection ended after `lastedMs`: a stable one resets the schedule. */
  connectionEnded(lastedMs: number): void {
    if (lastedMs >= this.stableAfter) this.#attempt = 0;
  }

  reset(): void {
    this.#attempt = 0;
  }
}
