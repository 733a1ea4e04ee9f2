// The memory a Node process spends per subscribed channel, for
// `agentwire-bench --only clients`: the heap (after a full GC) before and
// after one client joined N channels, printed as one JSON line.
//   node --expose-gc --import tsx bench/memory.ts URL TOKEN N
import { WebSocket } from "ws";
import { AgentWire } from "../src/index.js";

const [url, token, count] = process.argv.slice(2);
const n = Number(count);
if (!url || !token || !Number.isInteger(n) || n < 1) {
  console.error("usage: memory.ts URL TOKEN N (run with --expose-gc)");
  process.exit(2);
}
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) {
  console.error("memory.ts: run node with --expose-gc");
  process.exit(2);
}
const heap = () => {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
};
// One channel first: the client's one-off costs are not per channel.
const client = new AgentWire(url, { token, WebSocket, ackDebounce: null });
const warm = client.channel("mem-warm", { since: "head" });
client.connect();
await new Promise<void>((resolve) => warm.on("joined", () => resolve()));
const before = heap();
const t0 = performance.now();
let joined = 0;
await new Promise<void>((resolve) => {
  for (let i = 0; i < n; i++) {
    client.channel(`mem-${i}`, { since: "head" }).on("joined", () => {
      if (++joined === n) resolve();
    });
  }
});
const ms = performance.now() - t0;
const after = heap();
process.stdout.write(`${JSON.stringify({ channels: n, joined_ms: ms, bytes: after - before, rss: process.memoryUsage().rss })}\n`);
await client.close();
