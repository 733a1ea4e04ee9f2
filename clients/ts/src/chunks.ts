/**
 * Messages larger than one event: chunk events and their reassembly
 * (docs/protocol.md, "Messages larger than one event"). A chunk is an
 * event whose data is `{"$chunk": {message, index, count, encoding, bytes}, "part"}`;
 * the parts, concatenated in index order, are the message's JSON text
 * (`json`), its text (`utf8`) or the base64 of its bytes (`base64`).
 */

export type Encoding = "json" | "utf8" | "base64";

export interface ChunkHeader {
  message: string;
  index: number;
  count: number;
  encoding: Encoding;
  bytes: number;
}

/** A message reassembled from its chunk events. */
export interface AgentWireMessage<D = unknown> {
  channel: string;
  /** The message id. */
  id: string;
  kind: string;
  /** The seq of its last chunk. */
  seq: number;
  epoch: string;
  encoding: Encoding;
  /** The JSON value (`json`), the text (`utf8`), or the bytes (`base64`). */
  data: D;
}

/** A message that will never be delivered; reported once. */
export interface AgentWireMessageLost {
  channel: string;
  id: string;
  reason: "missing" | "too_large" | "invalid";
}

/** The most a part holds as JSON text, and raw bytes per base64 part. */
export const PART_BYTES = 64 * 1024;
const PART_RAW_BYTES = (PART_BYTES / 4) * 3;
export const MAX_MESSAGE_ID = 112;
/** An event's data at most (bytes of JSON). */
export const MAX_EVENT_DATA_BYTES = 96 * 1024;

export type Payload = { json: unknown } | { text: string } | { bytes: Uint8Array };

const utf8 = new TextEncoder();

function jsonSize(v: unknown): number {
  return utf8.encode(JSON.stringify(v) ?? "null").length;
}

/** The event data when `payload` fits in one plain event; `undefined`: chunk it. */
export function asEventData(payload: Payload): unknown {
  if ("bytes" in payload) return undefined;
  const v = "json" in payload ? payload.json : payload.text;
  return jsonSize(v) <= MAX_EVENT_DATA_BYTES ? v : undefined;
}

/** How many bytes a character (a code point) takes inside a JSON string. */
export function escapedLen(cp: number): number {
  if (cp === 0x22 || cp === 0x5c || cp === 0x0a || cp === 0x0d || cp === 0x09 || cp === 0x08 || cp === 0x0c) return 2;
  if (cp < 0x20) return 6;
  if (cp < 0x80) return 1;
  if (cp < 0x800) return 2;
  if (cp < 0x10000) return 3;
  return 4;
}

function splitText(text: string): string[] {
  const parts: string[] = [];
  let current = "";
  let size = 0;
  for (const ch of text) {
    const n = escapedLen(ch.codePointAt(0) ?? 0);
    if (size + n > PART_BYTES) {
      parts.push(current);
      current = "";
      size = 0;
    }
    current += ch;
    size += n;
  }
  parts.push(current);
  return parts;
}

function toBase64(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode(...b.subarray(i, i + 0x8000));
  return btoa(s);
}

function fromBase64(s: string): Uint8Array {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** The chunk events of `payload` as message `message`, in order: `{id, data}`. */
export function splitMessage(message: string, payload: Payload): { id: string; data: unknown }[] {
  let encoding: Encoding;
  let parts: string[];
  let bytes: number;
  if ("bytes" in payload) {
    encoding = "base64";
    bytes = payload.bytes.length;
    parts = [];
    for (let i = 0; i < payload.bytes.length; i += PART_RAW_BYTES) {
      parts.push(toBase64(payload.bytes.subarray(i, i + PART_RAW_BYTES)));
    }
    if (parts.length === 0) parts.push("");
  } else {
    const text = "json" in payload ? JSON.stringify(payload.json) ?? "null" : payload.text;
    encoding = "json" in payload ? "json" : "utf8";
    bytes = utf8.encode(text).length;
    parts = splitText(text);
  }
  return parts.map((part, index) => ({
    id: `${message}#${index}`,
    data: { $chunk: { message, index, count: parts.length, encoding, bytes }, part },
  }));
}

interface Partial {
  header: ChunkHeader;
  kind: string;
  next: number;
  parts: string[];
  size: number;
}

export type Assembled<D = unknown> =
  | { type: "not_chunk" }
  | { type: "pending" }
  | { type: "message"; message: AgentWireMessage<D> }
  | { type: "lost"; lost: AgentWireMessageLost };

function header(data: unknown): ChunkHeader | undefined | null {
  if (typeof data !== "object" || data === null || Array.isArray(data)) return undefined;
  const raw = (data as Record<string, unknown>)["$chunk"];
  if (raw === undefined) return undefined;
  const h = raw as Record<string, unknown>;
  const ok =
    typeof h === "object" && h !== null &&
    typeof h.message === "string" && Number.isInteger(h.index) && Number.isInteger(h.count) &&
    (h.encoding === "json" || h.encoding === "utf8" || h.encoding === "base64") && Number.isInteger(h.bytes);
  return ok ? (h as unknown as ChunkHeader) : undefined;
}

/** Messages in progress at most, by default: one more makes the oldest lost (`too_large`). */
export const DEFAULT_MAX_PARTIAL = 64;
/** The longest message id taken from a chunk, in bytes: a longer one is lost (`invalid`), under its first bytes. */
export const MAX_RECEIVED_ID_BYTES = 128;

function cutId(id: string): string {
  if (id.length * 3 <= MAX_RECEIVED_ID_BYTES) return id;
  const raw = utf8.encode(id);
  if (raw.length <= MAX_RECEIVED_ID_BYTES) return id;
  let n = MAX_RECEIVED_ID_BYTES;
  while (n > 0 && (raw[n]! & 0xc0) === 0x80) n--;
  return new TextDecoder().decode(raw.subarray(0, n));
}

/** Reassembles chunk events into messages, per channel, within bounds: bytes per message, bytes
 * held, messages in progress (`maxPartial`, in the order they started) and the length of their ids. */
export class Reassembler {
  #partial = new Map<string, Partial>();
  #lost: string[] = [];
  #held = 0;
  #evicted: AgentWireMessageLost[] = [];

  constructor(
    readonly maxMessageBytes = 64 * 1024 * 1024,
    readonly maxHeldBytes = 128 * 1024 * 1024,
    readonly maxPartial = DEFAULT_MAX_PARTIAL,
  ) {}

  /** Bytes held in incomplete messages. */
  get held(): number {
    return this.#held;
  }

  /** Messages in progress. */
  get partial(): number {
    return this.#partial.size;
  }

  /** The messages lost to the count bound since the last call, to report before what `accept` returned. */
  takeEvicted(): AgentWireMessageLost[] {
    const out = this.#evicted;
    this.#evicted = [];
    return out;
  }

  /** Takes one delivered event (in seq order per channel). */
  accept<D = unknown>(e: { channel: string; seq: number; epoch: string; kind: string; data: unknown }): Assembled<D> {
    const h = header(e.data);
    if (!h) return { type: "not_chunk" };
    const cut = cutId(h.message);
    if (cut !== h.message) return this.#lose(JSON.stringify([e.channel, cut]), e.channel, cut, "invalid");
    const key = JSON.stringify([e.channel, h.message]);
    const part = (e.data as Record<string, unknown>).part;
    if (typeof part !== "string" || h.count < 1 || h.index < 0 || h.index >= h.count) {
      return this.#lose(key, e.channel, h.message, "invalid");
    }
    if (h.index === 0) {
      this.#drop(key);
      this.#lost = this.#lost.filter((k) => k !== key);
      if (h.bytes > this.maxMessageBytes) return this.#lose(key, e.channel, h.message, "too_large");
      while (this.#partial.size >= Math.max(1, this.maxPartial)) {
        // A Map keeps insertion order: the first is the oldest.
        const [oldest, p] = this.#partial.entries().next().value!;
        const [channel] = JSON.parse(oldest) as [string, string];
        const lost = this.#lose(oldest, channel, p.header.message, "too_large");
        if (lost.type === "lost") this.#evicted.push(lost.lost);
      }
      this.#partial.set(key, { header: h, kind: e.kind, next: 0, parts: [], size: 0 });
    } else if (this.#lost.includes(key)) {
      return { type: "pending" };
    }
    const p = this.#partial.get(key);
    if (!p) return this.#lose(key, e.channel, h.message, "missing");
    if (h.index < p.next) return { type: "pending" };
    if (h.index > p.next) return this.#lose(key, e.channel, h.message, "missing");
    if (h.count !== p.header.count || h.encoding !== p.header.encoding) {
      return this.#lose(key, e.channel, h.message, "invalid");
    }
    if (p.size + part.length > this.maxMessageBytes * 2 || this.#held + part.length > this.maxHeldBytes) {
      return this.#lose(key, e.channel, h.message, "too_large");
    }
    p.parts.push(part);
    p.size += part.length;
    p.next += 1;
    this.#held += part.length;
    if (p.next < p.header.count) return { type: "pending" };
    this.#drop(key);
    const text = p.parts.join("");
    let data: unknown;
    let size: number;
    try {
      if (p.header.encoding === "base64") {
        const b = fromBase64(text);
        data = b;
        size = b.length;
      } else {
        size = utf8.encode(text).length;
        data = p.header.encoding === "json" ? JSON.parse(text) : text;
      }
    } catch {
      return this.#lose(key, e.channel, h.message, "invalid");
    }
    if (size !== p.header.bytes) return this.#lose(key, e.channel, h.message, "invalid");
    return {
      type: "message",
      message: { channel: e.channel, id: h.message, kind: p.kind, seq: e.seq, epoch: e.epoch, encoding: p.header.encoding, data: data as D },
    };
  }

  #drop(key: string): void {
    const p = this.#partial.get(key);
    if (p) {
      this.#held -= p.size;
      this.#partial.delete(key);
    }
  }

  #lose<D>(key: string, channel: string, id: string, reason: AgentWireMessageLost["reason"]): Assembled<D> {
    this.#drop(key);
    if (this.#lost.includes(key)) return { type: "pending" };
    if (this.#lost.length >= 1024) this.#lost.shift();
    this.#lost.push(key);
    return { type: "lost", lost: { channel, id, reason } };
  }
}

/** The base64 of bytes (for observing a binary message as text), and the bytes of base64. */
export { toBase64, fromBase64 };
