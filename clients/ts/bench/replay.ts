// Replays a channel from its start and times it, for `agentwire-bench
// --only clients`: joins from {epoch, 0}, consumes N events through
// `stream()`, and prints one JSON line (events, ms to the first, ms to the last).
//   node --import tsx bench/replay.ts URL TOKEN CHANNEL EPOCH N
import { WebSocket } from "ws";
import { AgentWire } from "../src/index.js";

const [url, token, channel, epoch, count] = process.argv.slice(2);
const n = Number(count);
if (!url || !token || !channel || epoch === undefined || !Number.isInteger(n)) {
  console.error("usage: replay.ts URL TOKEN CHANNEL EPOCH N");
  process.exit(2);
}
const t0 = performance.now();
let first = 0;
let got = 0;
const client = new AgentWire(url, { token, WebSocket, ackDebounce: null });
const ch = client.channel(channel, { since: { epoch, seq: 0 } });
client.connect();
for await (const item of ch.stream()) {
  if (item.type !== "event") continue;
  got += 1;
  if (got === 1) first = performance.now() - t0;
  if (item.seq !== got) {
    console.error(`replay: seq ${item.seq} at position ${got}`);
    process.exit(1);
  }
  if (got === n) break;
}
const elapsed = performance.now() - t0;
process.stdout.write(`${JSON.stringify({ events: got, first_ms: first, elapsed_ms: elapsed })}\n`);
await client.close();
