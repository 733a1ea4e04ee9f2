/** A small typed event emitter: `on()` returns an unsubscribe function, and a
 * listener that throws never breaks the emitter (the error goes to `onError`). */
export class Emitter<M extends object> {
  #listeners = new Map<keyof M, Set<(value: never) => void>>();
  readonly #onError: (err: unknown, event: string) => void;

  constructor(onError: (err: unknown, event: string) => void) {
    this.#onError = onError;
  }

  on<K extends keyof M>(event: K, listener: (value: M[K]) => void): () => void {
    if (typeof listener !== "function") throw new TypeError("listener must be a function");
    let set = this.#listeners.get(event);
    if (!set) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    // Wrap so that the same function added twice is called twice and each
    // unsubscribe removes only its own registration.
    const entry = (value: never) => listener(value as M[K]);
    set.add(entry);
    return () => {
      set.delete(entry);
    };
  }

  has<K extends keyof M>(event: K): boolean {
    return (this.#listeners.get(event)?.size ?? 0) > 0;
  }

  emit<K extends keyof M>(event: K, value: M[K]): void {
    const set = this.#listeners.get(event);
    if (!set || set.size === 0) return;
    for (const fn of [...set]) {
      try {
        fn(value as never);
      } catch (err) {
        this.#onError(err, String(event));
      }
    }
  }

  clear(): void {
    this.#listeners.clear();
  }
}
