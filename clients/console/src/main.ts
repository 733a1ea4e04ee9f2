/**
 * The agentwire console: opens from a link
 * `?url=WS_URL&token=TOKEN&channels=a,b[&http=HTTP_API][&tokenUrl=URL]`,
 * or a form when those are missing, and shows each channel side by side.
 */
import "@xterm/xterm/css/xterm.css";
import "./style.css";
import { AgentWire, UnauthorizedError, type Channel, type Since } from "@agentwire/client";
import { TOKEN_KEY, httpOf, loadConfig, type Config } from "./config.js";
import { Panel, type PanelHost } from "./panel.js";

declare global {
  interface Window {
    /** Read-only hooks for tests and debugging: the panels and their terminals. */
    __agentwireConsole?: ConsoleHooks;
  }
}

export interface ConsoleHooks {
  state(): string;
  channels(): string[];
  terminalText(channel: string, lines?: number): string;
  terminalColour(channel: string, needle: string): ReturnType<Panel["term"]["colourOf"]>;
  terminal(channel: string): { written: number; pending: number; behind: boolean; behindCount: number; replies: number; opened: string[]; refused: string[] };
  panel(channel: string): { since: unknown; paused: boolean; flowPauses: number; applied: number; invalid: number; last: number; position: unknown };
}

function boot(): void {
  const app = document.getElementById("app")!;
  const loaded = loadConfig(window.location, window.sessionStorage, window.history);
  if (!loaded.ok) {
    showForm(app, loaded.partial, loaded.why);
    return;
  }
  start(app, loaded.config);
}

function showForm(app: HTMLElement, partial: Partial<Config>, why: string): void {
  document.body.dataset.view = "form";
  const form = document.createElement("form");
  form.className = "connect";
  const here = new URL(window.location.href);
  const guess = here.protocol.startsWith("http") ? `${here.protocol === "https:" ? "wss" : "ws"}://${here.host}/` : "";
  const q = new URLSearchParams(window.location.search);
  const field = (name: string, label: string, value: string, type = "text", placeholder = "") => {
    const l = document.createElement("label");
    l.textContent = label;
    const i = document.createElement("input");
    i.name = name;
    i.type = type;
    i.value = value;
    i.placeholder = placeholder;
    i.autocomplete = "off";
    l.append(i);
    form.append(l);
    return i;
  };
  const h1 = document.createElement("h1");
  h1.textContent = "agentwire console";
  form.append(h1);
  if (why) {
    const p = document.createElement("p");
    p.className = "error";
    p.textContent = why;
    form.append(p);
  }
  const url = field("url", "WebSocket URL", partial.url ?? guess, "url", "wss://ws.example.com/prod");
  const http = field("http", "HTTP API (optional; default: the WebSocket URL over http)", q.get("http") ?? "", "url", "https://api.example.com/prod");
  const channels = field("channels", "Channels (comma separated)", (partial.channels ?? []).join(","), "text", "agent-1,agent-2");
  const token = field("token", "Token", "", "password", "a token with a channels grant");
  const tokenUrl = field("tokenUrl", "…or a token URL (GET, credentials included, the body is the token)", partial.tokenUrl ?? "", "url");
  const go = document.createElement("button");
  go.type = "submit";
  go.textContent = "Open";
  form.append(go);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    for (const [k, v] of q) if (!["url", "http", "channels", "channel", "token", "tokenUrl"].includes(k)) next.set(k, v);
    next.set("url", url.value.trim());
    if (http.value.trim()) next.set("http", http.value.trim());
    next.set("channels", channels.value.trim());
    if (tokenUrl.value.trim()) next.set("tokenUrl", tokenUrl.value.trim());
    // The token goes to this tab's storage, never into the address bar.
    if (token.value) window.sessionStorage.setItem(TOKEN_KEY, token.value);
    window.location.search = next.toString();
  });
  app.replaceChildren(form);
}

function start(app: HTMLElement, config: Config): void {
  document.body.dataset.view = "console";
  const bar = document.createElement("div");
  bar.className = "topbar";
  const title = document.createElement("strong");
  title.textContent = "agentwire console";
  const where = document.createElement("span");
  where.className = "where";
  where.textContent = `${config.url} · HTTP ${config.http}`;
  const state = document.createElement("span");
  state.className = "client-state badge";
  state.dataset.state = "connecting";
  state.textContent = "connecting";
  bar.append(title, state, where);
  const grid = document.createElement("main");
  grid.className = "agents";
  grid.style.setProperty("--columns", String(Math.min(config.channels.length, 3)));
  app.replaceChildren(bar, grid);

  let latest = config.token;
  let fetching: Promise<string> | undefined;
  const fromProvider = async (): Promise<string> => {
    const r = await fetch(config.tokenUrl!, { credentials: "include", cache: "no-store" });
    if (r.status === 401 || r.status === 403) throw new UnauthorizedError(`the token URL answered ${r.status}`);
    if (!r.ok) throw new Error(`the token URL answered ${r.status}`);
    const t = (await r.text()).trim();
    if (!t) throw new Error("the token URL answered an empty body");
    latest = t;
    return t;
  };
  const freshToken = (): Promise<string> => {
    fetching ??= fromProvider().finally(() => {
      fetching = undefined;
    });
    return fetching;
  };
  const client = new AgentWire(
    config.url,
    config.tokenUrl ? { getToken: () => freshToken() } : { token: config.token! },
  );
  const panels = new Map<string, Panel>();
  const host: PanelHost = {
    config,
    storage: window.sessionStorage,
    async token(fresh?: boolean) {
      if (config.tokenUrl && (fresh || !latest)) return freshToken();
      return latest!;
    },
    join(name: string, since: Since | undefined): Channel {
      return client.channel(name, since === undefined ? {} : { since });
    },
  };
  client.on("state", (s) => {
    state.dataset.state = s.current;
    state.textContent = s.current === "reconnecting" && s.reason ? `reconnecting (${s.reason})` : s.current;
    if (s.current === "closed" && s.error) state.textContent = `closed: ${s.error.message}`;
    for (const p of panels.values()) p.setClientState(s.current);
  });
  client.on("error", (err) => {
    state.title = err.message;
  });
  for (const name of config.channels) panels.set(name, new Panel(host, name, grid));
  client.connect();
  // Each channel: history up to where the page was, then joined from there.
  void Promise.all([...panels.values()].map((p) => p.open())).then(() => {
    document.body.dataset.opened = "true";
  });
  const save = () => {
    for (const p of panels.values()) p.savePositionNow();
  };
  window.addEventListener("pagehide", save);
  // Restored from the back/forward cache: its connection was cut meanwhile;
  // load again, resuming every channel from the position just saved.
  window.addEventListener("pageshow", (e) => {
    if (e.persisted) window.location.reload();
  });
  window.addEventListener("beforeunload", save);

  const get = (c: string): Panel => {
    const p = panels.get(c);
    if (!p) throw new Error(`no channel ${c}`);
    return p;
  };
  window.__agentwireConsole = {
    state: () => client.state,
    channels: () => [...panels.keys()],
    terminalText: (c, lines) => get(c).term.text(lines),
    terminalColour: (c, needle) => get(c).term.colourOf(needle),
    terminal: (c) => {
      const t = get(c).term;
      return {
        written: t.written,
        pending: t.pending,
        behind: t.behind,
        behindCount: t.behindCount,
        replies: t.replies,
        opened: [...t.opened],
        refused: [...t.refused],
      };
    },
    panel: (c) => {
      const p = get(c);
      return {
        since: p.since,
        paused: p.paused,
        flowPauses: p.flowPauses,
        applied: p.model.applied,
        invalid: p.model.invalid,
        last: p.model.last,
        position: p.channel?.position,
      };
    },
  };
}

export { httpOf };
boot();
