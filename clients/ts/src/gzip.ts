/**
 * Compressed payloads (docs/protocol.md, "Compressed payloads"). The client
 * announces `gzip` in `hello`; the gateway may then send a stream event
 * `{stream, index, text}` as `{stream, index, gz}` and a chunk
 * `{$chunk, part}` as `{$chunk, gz}` (exactly these keys), `gz` being the
 * base64 (standard alphabet, padded) of one gzip member of the text's UTF-8.
 * `decodeData` puts the text back before the event is sequenced, and does
 * so synchronously, so events keep their order.
 *
 * fflate's `gunzipSync` inflates (bundled into the build: the package keeps
 * no runtime dependency). It trusts the gzip trailer, so what it does not
 * check is checked here: the length the trailer gives, against the bound
 * and against what deflate can expand to, before anything is allocated;
 * that the member inflates to exactly that length, with that CRC-32; strict
 * base64 and UTF-8.
 */
/*! fflate (https://github.com/101arrowz/fflate), MIT License, Copyright (c) Arjun Barrett */
import { gunzipSync } from "fflate";
import { fromBase64 } from "./chunks.js";

/** The feature named in `hello` (and in the `welcome` of a gateway that sends compressed payloads). */
export const GZIP_FEATURE = "gzip";

/** The longest text a compressed stream event decodes to, in UTF-8 bytes:
 * one that would be longer is handed over as it came (with `gz`). */
export const MAX_STREAM_TEXT_BYTES = 4 * 1024 * 1024;

/** Deflate expands at most 1032 times (a 258-byte match from 2 bits): a
 * trailer that claims more lies. */
const MAX_RATIO = 1032;
/** A gzip member's header (10 bytes), an empty deflate stream (2) and its trailer (8). */
const MIN_MEMBER = 20;

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

let crcTable: Int32Array | undefined;

/** The CRC-32 (gzip's) of `b`. */
function crc32(b: Uint8Array): number {
  let t = crcTable;
  if (!t) {
    t = crcTable = new Int32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      t[n] = c;
    }
  }
  let c = -1;
  for (let i = 0; i < b.length; i++) c = t[(c ^ b[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

/** The little-endian 32-bit number at `at`. */
function u32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}

/** The text that `gz` (the base64 of one gzip member) holds, at most `max`
 * bytes of UTF-8; `undefined` when it does not decode (not base64, not gzip,
 * not UTF-8, or longer than `max`). */
export function gunzipText(gz: string, max: number): string | undefined {
  if (gz.length % 4 !== 0 || !BASE64.test(gz)) return undefined;
  let bytes: Uint8Array;
  try {
    bytes = fromBase64(gz);
  } catch {
    return undefined;
  }
  const n = bytes.length;
  if (n < MIN_MEMBER) return undefined;
  const size = u32(bytes, n - 4);
  if (size > max || size > n * MAX_RATIO) return undefined;
  let out: Uint8Array;
  try {
    // One byte more than the trailer says: a member that inflates to more
    // fills it (fflate drops what does not fit rather than failing).
    out = gunzipSync(bytes, { out: new Uint8Array(size + 1) });
  } catch {
    return undefined;
  }
  if (out.length !== size || crc32(out) !== u32(bytes, n - 8)) return undefined;
  try {
    return utf8.decode(out);
  } catch {
    return undefined;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * `data` as it was published: a compressed stream event `{stream, index, gz}`
 * becomes `{stream, index, text}` and a compressed chunk `{$chunk, gz}`
 * becomes `{$chunk, part}`; data of any other shape (even with a `gz`) is
 * returned as it is. A `gz` that does not decode, or decodes to more than
 * the bound (`maxTextBytes` for a stream event's text, `maxPartBytes` for a
 * chunk's part), leaves the data as it came: a stream event is handed over
 * with its `gz`, and a chunk without a `part` makes the reassembly lose its
 * message (`invalid`).
 */
export function decodeData(data: unknown, maxPartBytes: number, maxTextBytes = MAX_STREAM_TEXT_BYTES): unknown {
  if (!isObject(data)) return data;
  const gz = data.gz;
  if (typeof gz !== "string" || !Object.hasOwn(data, "gz")) return data;
  const keys = Object.keys(data).length;
  const { stream, index } = data;
  if (
    keys === 3 &&
    Object.hasOwn(data, "stream") &&
    Object.hasOwn(data, "index") &&
    typeof stream === "string" &&
    Number.isInteger(index) &&
    (index as number) >= 0
  ) {
    const text = gunzipText(gz, maxTextBytes);
    return text === undefined ? data : { stream, index, text };
  }
  const chunk = data.$chunk;
  if (keys === 2 && Object.hasOwn(data, "$chunk") && isObject(chunk)) {
    const part = gunzipText(gz, maxPartBytes);
    return part === undefined ? data : { $chunk: chunk, part };
  }
  return data;
}
