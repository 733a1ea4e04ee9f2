// Follows one channel and prints a line per delivery, for the cross-client
// resume benchmark (`agentwire-bench --only clients`): `joined` each time a
// join is answered (the first and every re-join), `{"seq":N}` per event. Reconnects without a
// delay, to measure the resume itself.
//   node --import tsx bench/follow.ts URL TOKEN CHANNEL
import { WebSocket } from "ws";
import { AgentWire } from "../src/index.js";

const [url, token, channel] = process.argv.slice(2);
if (!url || !token || !channel) {
  console.error("usage: follow.ts URL TOKEN CHANNEL");
  process.exit(2);
}
const client = new AgentWire(url, { token, WebSocket, minReconnectDelay: 0, ackDebounce: null });
client.on("error", (e) => console.error(`follow: ${e.code}: ${e.message}`));
const ch = client.channel(channel, { since: "head" });
ch.on("joined", () => process.stdout.write("joined\n"));
ch.on("event", (e) => process.stdout.write(`${JSON.stringify({ seq: e.seq })}\n`));
ch.on("gap", (g) => process.stdout.write(`${JSON.stringify({ gap: [g.from, g.to] })}\n`));
process.stdin.on("end", () => void client.close().then(() => process.exit(0)));
process.stdin.resume();
client.connect();
