// A static page that shows a channel's events live, on the browser's own
// WebSocket (the token goes in the query string: browsers cannot set
// headers on a WebSocket). Open it as
//   index.html?url=ws://127.0.0.1:8080&token=…&channel=agent-1
// from any static server that also serves ../../dist (the ESM build).
import { AgentWire } from "../../dist/index.js";

const params = new URLSearchParams(location.search);
const url = params.get("url") ?? "ws://127.0.0.1:8080";
const token = params.get("token") ?? "";
const channel = params.get("channel") ?? "agent-1";

const state = document.getElementById("state");
const list = document.getElementById("events");
document.getElementById("channel").textContent = channel;

const client = new AgentWire(url, { token });
client.on("state", ({ current, reason }) => {
  state.textContent = reason && current !== "connected" ? `${current} (${reason})` : current;
  state.dataset.state = current;
});
client.on("error", (err) => console.warn("agentwire:", err.code, err.message));

const ch = client.channel(channel, { since: "head" });
ch.on("joined", (j) => {
  document.body.dataset.joined = `${j.epoch}:${j.head}`;
});
ch.on("event", (e) => {
  const li = document.createElement("li");
  li.value = e.seq;
  li.dataset.seq = String(e.seq);
  li.textContent = `${e.kind}: ${JSON.stringify(e.data)}`;
  list.append(li);
});
ch.on("gap", (g) => {
  const li = document.createElement("li");
  li.className = "gap";
  li.textContent = `seqs ${g.from}..=${g.to} are no longer retained`;
  list.append(li);
});
client.connect();
