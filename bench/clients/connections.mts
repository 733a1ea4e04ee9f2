// The memory a Node process spends per connection of the TypeScript client,
// for `agentwire-bench --only clients`: the heap (after a full GC) before
// and after N clients with no channel connected, printed as one JSON line,
// as clients/ts/bench/memory.ts does per channel. It lives here, beside the
// harness, and is run from clients/ts (whose node_modules it uses):
//   cd clients/ts && node --expose-gc --import tsx ../../bench/clients/connections.mts URL TOKEN N
import { createRequire } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [url, token, count] = process.argv.slice(2);
const n = Number(count);
if (!url || !token || !Number.isInteger(n) || n < 1) {
  console.error("usage: connections.mts URL TOKEN N (from clients/ts, with --expose-gc)");
  process.exit(2);
}
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) {
  console.error("connections.mts: run node with --expose-gc");
  process.exit(2);
}
const { WebSocket } = createRequire(join(process.cwd(), "package.json"))("ws");
const { AgentWire } = await import(pathToFileURL(join(process.cwd(), "src/index.ts")).href);
const heap = () => {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
};
const connect = async () => {
  const c = new AgentWire(url, { token, WebSocket, ackDebounce: null });
  c.connect();
  await c.ready();
  return c;
};
// One client first: the one-off costs are not per connection.
const warm = await connect();
await new Promise((resolve) => setTimeout(resolve, 300));
const before = heap();
const t0 = performance.now();
const clients = await Promise.all(Array.from({ length: n }, connect));
const ms = performance.now() - t0;
await new Promise((resolve) => setTimeout(resolve, 300));
const after = heap();
process.stdout.write(
  `${JSON.stringify({ connections: n, joined_ms: ms, bytes: after - before, rss: process.memoryUsage().rss })}\n`,
);
await Promise.all([warm, ...clients].map((c) => c.close()));
