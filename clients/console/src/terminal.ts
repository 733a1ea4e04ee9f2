/**
 * A channel's terminal pane: xterm.js for its stdout/stderr streams, with a
 * bounded scrollback, flow control (write callbacks against high and low
 * watermarks) and untrusted output kept harmless (see docs/console.md,
 * "Untrusted output"):
 * - links (OSC 8) open only for http: and https:, in a new window without opener;
 * - title changes (OSC 0/1/2) are swallowed, and the title event is never wired;
 * - queries (DSR, DA, window reports, colour queries, DECRQSS…) are swallowed
 *   by parser handlers, stdin is disabled, and onData/onBinary are never
 *   wired to anything that sends: nothing a command prints makes the page answer.
 */
import { FitAddon } from "@xterm/addon-fit";
import { Terminal, type ILinkHandler } from "@xterm/xterm";
import { safeLink } from "./links.js";

export { safeLink };

export interface TerminalOptions {
  scrollback: number;
  /** Characters written but not yet parsed above which the terminal is behind. */
  high: number;
  /** ... at or below which it has caught up. */
  low: number;
  onBehind(): void;
  onCaughtUp(): void;
}

export class TerminalPane {
  readonly term: Terminal;
  readonly #fit = new FitAddon();
  #pending = 0;
  #behind = false;
  /** Bytes (characters) written in all. */
  written = 0;
  /** Times it fell behind (the channel was paused for it). */
  behindCount = 0;
  /** Links it opened, and links it refused (for the page's counters). */
  opened: string[] = [];
  refused: string[] = [];
  /** Anything xterm wanted to send back (never sent anywhere; counted for the tests). */
  replies = 0;
  #observer: ResizeObserver | undefined;

  constructor(
    readonly el: HTMLElement,
    readonly opts: TerminalOptions,
  ) {
    const linkHandler: ILinkHandler = {
      activate: (event, uri) => {
        const safe = safeLink(uri);
        if (!safe) {
          this.refused.push(uri.slice(0, 200));
          return;
        }
        event.preventDefault?.();
        this.opened.push(safe);
        const w = window.open(safe, "_blank", "noopener,noreferrer");
        if (w) w.opener = null;
      },
      allowNonHttpProtocols: false,
    };
    this.term = new Terminal({
      scrollback: opts.scrollback,
      disableStdin: true,
      convertEol: true,
      cursorBlink: false,
      cursorStyle: "underline",
      fontSize: 12,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
      linkHandler,
      allowProposedApi: false,
      theme: { background: "#101418", foreground: "#d8dee9" },
    });
    this.term.loadAddon(this.#fit);
    const p = this.term.parser;
    // Title changes, and colour / clipboard queries: swallowed.
    for (const osc of [0, 1, 2, 4, 10, 11, 12, 17, 19, 52, 104, 110, 111, 112]) p.registerOscHandler(osc, () => true);
    // Queries answered on the input side: device status (DSR), device
    // attributes (DA1/DA2/DA3), window reports (XTWINOPS), DECRQM, XTVERSION.
    p.registerCsiHandler({ final: "n" }, () => true);
    p.registerCsiHandler({ prefix: "?", final: "n" }, () => true);
    p.registerCsiHandler({ final: "c" }, () => true);
    p.registerCsiHandler({ prefix: ">", final: "c" }, () => true);
    p.registerCsiHandler({ prefix: "=", final: "c" }, () => true);
    p.registerCsiHandler({ final: "t" }, () => true);
    p.registerCsiHandler({ intermediates: "$", final: "p" }, () => true);
    p.registerCsiHandler({ prefix: "?", intermediates: "$", final: "p" }, () => true);
    p.registerCsiHandler({ prefix: ">", final: "q" }, () => true);
    // DECRQSS and XTGETTCAP (DCS $ q / DCS + q).
    p.registerDcsHandler({ intermediates: "$", final: "q" }, () => true);
    p.registerDcsHandler({ intermediates: "+", final: "q" }, () => true);
    // Counted, never forwarded: there is nothing to forward to.
    this.term.onData(() => this.replies++);
    this.term.onBinary(() => this.replies++);
    this.term.open(el);
    this.fit();
    if (typeof ResizeObserver === "function") {
      this.#observer = new ResizeObserver(() => this.fit());
      this.#observer.observe(el);
    }
  }

  fit(): void {
    try {
      if (this.el.clientWidth > 0 && this.el.clientHeight > 0) this.#fit.fit();
    } catch {
      // not laid out yet
    }
  }

  get pending(): number {
    return this.#pending;
  }
  get behind(): boolean {
    return this.#behind;
  }

  write(text: string): void {
    if (!text) return;
    const n = text.length;
    this.#pending += n;
    this.written += n;
    this.term.write(text, () => {
      this.#pending -= n;
      if (this.#behind && this.#pending <= this.opts.low) {
        this.#behind = false;
        this.opts.onCaughtUp();
      }
    });
    if (!this.#behind && this.#pending > this.opts.high) {
      this.#behind = true;
      this.behindCount++;
      this.opts.onBehind();
    }
  }

  /** A marker line (a gap), in the terminal's own colours. */
  marker(text: string): void {
    this.write(`\r\n\x1b[0m\x1b[7m ${text.replace(/[\x00-\x1f\x7f]/g, "")} \x1b[0m\r\n`);
  }

  /** The buffer's text, the last `lines` lines (for the tests and "copy"). */
  text(lines = 10_000): string {
    const b = this.term.buffer.active;
    const out: string[] = [];
    const from = Math.max(0, b.length - lines);
    for (let y = from; y < b.length; y++) out.push(b.getLine(y)?.translateToString(true) ?? "");
    while (out.length && out[out.length - 1] === "") out.pop();
    return out.join("\n");
  }

  /** The foreground colour of the first cell of `needle` in the buffer: a palette index, an RGB number, or "default". */
  colourOf(needle: string): { palette?: number; rgb?: number; default?: true } | undefined {
    const b = this.term.buffer.active;
    for (let y = 0; y < b.length; y++) {
      const line = b.getLine(y);
      if (!line) continue;
      const x = line.translateToString(false).indexOf(needle);
      if (x < 0) continue;
      const cell = line.getCell(x);
      if (!cell) return undefined;
      if (cell.isFgPalette()) return { palette: cell.getFgColor() };
      if (cell.isFgRGB()) return { rgb: cell.getFgColor() };
      return { default: true };
    }
    return undefined;
  }

  dispose(): void {
    this.#observer?.disconnect();
    this.term.dispose();
  }
}
