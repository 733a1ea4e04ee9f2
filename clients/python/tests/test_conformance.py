"""The language-neutral client scenarios of `conformance/` (see its README),
run against this client: an in-process scripted gateway accepts or refuses
each connection attempt, checks the frames the client sends, sends the frames
the script says, and the application's observations (joined, events, gaps, a
fatal error) are compared in order. The Rust and TypeScript clients run the
same files."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from agentwire import AgentWireError, Client, Event, Gap, Joined, Message, MessageLost, Position, Resync, StateChange
from agentwire._backoff import Backoff

ROOT = Path(__file__).resolve().parents[3] / "conformance"
SCENARIOS = sorted((ROOT / "scenarios").glob("*.json"))
STEP = 5.0


def matches(pattern: Any, actual: Any) -> bool:
    """`pattern` ⊆ `actual`, `"*"` matching any present value."""
    if pattern == "*":
        return actual is not None
    if isinstance(pattern, dict):
        return isinstance(actual, dict) and all(k in actual and matches(v, actual[k]) for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(actual, list) and len(pattern) == len(actual) and all(map(matches, pattern, actual))
    if isinstance(pattern, bool) or isinstance(actual, bool):
        return type(pattern) is type(actual) and pattern == actual
    return pattern == actual


NOW_PLUS = re.compile(r"^\$now\+(\d+)$")


def substitute(v: Any, rid: str, now: float | None = None) -> Any:
    """`"$id"` becomes the remembered id; a string `"$now+N"` the Unix seconds
    N from `now` (the wall clock when the frame is sent)."""
    if now is None:
        now = time.time()
    if v == "$id":
        return rid
    if isinstance(v, str) and (m := NOW_PLUS.match(v)):
        return int(now) + int(m.group(1))
    if isinstance(v, dict):
        return {k: substitute(x, rid, now) for k, x in v.items()}
    if isinstance(v, list):
        return [substitute(x, rid, now) for x in v]
    return v


def since(v: Any) -> Any:
    if v is None or v == "head":
        return v
    return Position(v["epoch"], v["seq"])


def joined_observation(j: Joined) -> dict[str, Any]:
    o: dict[str, Any] = {
        "channel": j.channel,
        "epoch": j.epoch,
        "head": j.head,
        "replayed": j.replayed,
        "recovered": j.recovered,
    }
    if j.presence is not None:
        o["presence"] = {"count": j.presence.count, "principals": j.presence.principals}
    if j.health is not None:
        h = {k: getattr(j.health, k) for k in ("server", "protocol", "time", "head", "oldest")}
        o["health"] = {k: v for k, v in h.items() if v is not None}
    return {"joined": o}


def state_observation(c: StateChange) -> dict[str, Any]:
    o: dict[str, Any] = {"previous": c.previous, "current": c.current, "reason": c.reason}
    if c.attempt is not None:
        o["attempt"] = c.attempt
    if c.delay is not None:
        o["delay_ms"] = round(c.delay * 1000, 6)
    if c.error is not None:
        o["error"] = {"code": c.error.code}
    return {"state": o}


def observation(item: Event | Gap | Message | MessageLost | Resync) -> dict[str, Any]:
    if isinstance(item, Resync):
        return {"resync": {"channel": item.channel}}
    if isinstance(item, Message):
        data = base64.b64encode(item.data).decode() if isinstance(item.data, bytes) else item.data
        return {
            "message": {
                "channel": item.channel,
                "id": item.id,
                "kind": item.kind,
                "seq": item.seq,
                "encoding": item.encoding,
                "data": data,
            }
        }
    if isinstance(item, MessageLost):
        return {"message_lost": {"channel": item.channel, "id": item.id, "reason": item.reason}}
    if isinstance(item, Event):
        return {
            "event": {
                "channel": item.channel,
                "epoch": item.epoch,
                "seq": item.seq,
                "id": item.id,
                "kind": item.kind,
                "data": item.data,
                "ts": item.ts,
            }
        }
    return {"gap": {"channel": item.channel, "from": item.from_seq, "to": item.to_seq}}


class Attempt:
    def __init__(self, request: Request) -> None:
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        if token is None:
            token = (parse_qs(urlsplit(request.path).query).get("token") or [None])[0]
        self.token = token
        self.offered = [
            p.strip() for h in request.headers.get_all("Sec-WebSocket-Protocol") for p in h.split(",")
        ]
        self.decision: asyncio.Future[tuple[int, Any] | None] = asyncio.get_running_loop().create_future()


class Runner:
    def __init__(self, name: str) -> None:
        self.name = name
        self.attempts: asyncio.Queue[Attempt] = asyncio.Queue()
        self.conns: asyncio.Queue[ServerConnection] = asyncio.Queue()
        self.ws: ServerConnection | None = None
        self.obs: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        # State changes: a sequence of their own (conformance/README.md).
        self.states: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.ended = False
        self.last_id = ""
        self.fatal_seen = False
        self.open_attempts: list[Attempt] = []
        # What each connection's client sent: (loop time of arrival, text).
        self.frames: dict[ServerConnection, asyncio.Queue[tuple[float, str | bytes]]] = {}
        # When the previous step completed (loop time), for `notBeforeMs`.
        self.previous_done = 0.0
        self.pumps: list[asyncio.Task[None]] = []

    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        att = Attempt(request)
        self.open_attempts.append(att)
        await self.attempts.put(att)
        answer = await att.decision
        if answer is None:
            return None
        status, body = answer
        resp = connection.respond(status, json.dumps(body))
        resp.headers["Content-Type"] = "application/json"
        return resp

    async def handler(self, ws: ServerConnection) -> None:
        q: asyncio.Queue[tuple[float, str | bytes]] = asyncio.Queue()
        self.frames[ws] = q
        await self.conns.put(ws)
        loop = asyncio.get_running_loop()
        try:
            async for msg in ws:
                q.put_nowait((loop.time(), msg))
        except ConnectionClosed:
            pass

    async def pump(self, client: Client, sub: Any) -> None:
        try:
            async for item in sub:
                self.obs.put_nowait(observation(item))
        except AgentWireError as e:
            if client.error is None:
                # The gateway refused this channel (forbidden,
                # too_many_channels...): not an observation, and the client goes on.
                return
            if not self.fatal_seen:
                self.fatal_seen = True
                self.obs.put_nowait({"fatal": {"code": e.code}})
        self.obs.put_nowait(None)

    async def next_obs(self) -> dict[str, Any] | None:
        try:
            return await asyncio.wait_for(self.obs.get(), STEP)
        except asyncio.TimeoutError:
            pytest.fail(f"{self.name}: nothing observed within {STEP}s")

    async def observe(self, pattern: Any) -> None:
        if "state" in pattern:
            try:
                o = await asyncio.wait_for(self.states.get(), STEP)
            except asyncio.TimeoutError:
                pytest.fail(f"{self.name}: no state change within {STEP}s; expected {pattern}")
            assert matches(pattern, o), f"{self.name}: observed {o}, expected {pattern}"
            return
        assert not self.ended, f"{self.name}: the client ended before {pattern}"
        o = await self.next_obs()
        if o is None:
            self.ended = True
            pytest.fail(f"{self.name}: the client ended before {pattern}")
        assert matches(pattern, o), f"{self.name}: observed {o}, expected {pattern}"

    async def attempt(self, answer: tuple[int, Any] | None, token: str | None) -> None:
        try:
            att = await asyncio.wait_for(self.attempts.get(), STEP)
        except asyncio.TimeoutError:
            pytest.fail(f"{self.name}: no connection attempt within {STEP}s")
        att.decision.set_result(answer)
        if answer is None:
            assert "agentwire.v1" in att.offered, f"{self.name}: agentwire.v1 not offered: {att.offered}"
            if token is not None:
                assert att.token == token, f"{self.name}: the token of this attempt"
            self.ws = await asyncio.wait_for(self.conns.get(), STEP)
            assert self.ws.subprotocol == "agentwire.v1"

    async def expect(self, pattern: Any, not_before_ms: float | None = None) -> None:
        assert self.ws is not None, f"{self.name}: expect without a connection"
        while True:
            try:
                at, text = await asyncio.wait_for(self.frames[self.ws].get(), STEP)
            except asyncio.TimeoutError:
                pytest.fail(f"{self.name}: no frame within {STEP}s; expected {pattern}")
            frame = json.loads(text)
            if frame.get("action") == "ping" and pattern.get("action") != "ping":
                continue
            assert matches(pattern, frame), f"{self.name}: the client sent {frame}, expected {pattern}"
            if not_before_ms is not None:
                after = (at - self.previous_done) * 1000
                assert after >= not_before_ms, (
                    f"{self.name}: {frame} came {after:.1f} ms after the previous step, before {not_before_ms} ms"
                )
            if isinstance(frame.get("id"), str):
                self.last_id = frame["id"]
            return

    async def step(self, client: Client, subs: dict[str, Any], step: dict[str, Any]) -> None:
        step = dict(step)
        not_before = step.pop("notBeforeMs", None)
        ((kind, arg),) = step.items()
        assert not_before is None or kind == "expect", f"{self.name}: notBeforeMs belongs to an expect"
        await self.run_step(client, subs, kind, arg, not_before)
        self.previous_done = asyncio.get_running_loop().time()

    async def run_step(
        self, client: Client, subs: dict[str, Any], kind: str, arg: Any, not_before: float | None
    ) -> None:
        if kind == "accept":
            await self.attempt(None, arg.get("token"))
        elif kind == "refuse":
            await self.attempt((arg["status"], arg["body"]), None)
        elif kind == "expect":
            await self.expect(arg, not_before)
        elif kind == "send":
            assert self.ws is not None
            await self.ws.send(json.dumps(substitute(arg, self.last_id)))
        elif kind == "drop":
            assert self.ws is not None
            self.ws.transport.abort()
            self.ws = None
        elif kind == "close":
            assert self.ws is not None
            await self.ws.close(arg["code"], arg.get("reason", ""))
            self.ws = None
        elif kind == "observe":
            await self.observe(arg)
        elif kind == "act":
            if "close" in arg:
                await client.close()
            elif "leave" in arg:
                await subs[arg["leave"]["channel"]].leave()
            elif "pause" in arg:
                await subs[arg["pause"]["channel"]].pause()
            elif "resume" in arg:
                await subs[arg["resume"]["channel"]].resume()
            elif "resync" in arg:
                name = arg["resync"].get("channel")
                if name is None:
                    await client.resync()
                else:
                    await subs[name].resync()
            elif "join" in arg:
                name = arg["join"]["channel"]
                subs[name] = await client.join(name, since(arg["join"].get("since")))
                self.pumps.append(asyncio.create_task(self.pump(client, subs[name])))
            else:
                pytest.fail(f"{self.name}: unknown act {arg}")
        elif kind == "no_connection":
            while not self.ended:
                o = await self.next_obs()
                if o is None:
                    self.ended = True
                else:
                    pytest.fail(f"{self.name}: observed {o} after the end")
            try:
                await asyncio.wait_for(client.wait_closed(), STEP)
            except AgentWireError:
                pass
            assert self.attempts.empty(), f"{self.name}: a connection after the end"
        else:
            pytest.fail(f"{self.name}: unknown step {kind}")


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
async def test_scenario(path: Path) -> None:
    sc = json.loads(path.read_text())
    c = sc["client"]
    r = Runner(sc["name"])
    async with serve(
        r.handler,
        "127.0.0.1",
        0,
        process_request=r.process_request,
        subprotocols=["agentwire.v1"],  # type: ignore[list-item]
        ping_interval=None,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        kw: dict[str, Any] = {}
        if "token" in c:
            kw["token"] = c["token"]
        else:
            tokens = list(c["tokens"])

            async def provider() -> str:
                if not tokens:
                    raise RuntimeError("no more tokens")
                return tokens.pop(0)

            kw["token_provider"] = provider
        debounce = c.get("ackDebounceMs")
        client = Client(
            f"ws://127.0.0.1:{port}",
            min_reconnect_delay=c.get("minReconnectMs", 10) / 1000,
            max_reconnect_delay=c.get("maxReconnectMs", 40) / 1000,
            max_attempts=c.get("maxAttempts"),
            ping_interval=60.0,
            ping_timeout=60.0,
            max_connection_age=None,
            ack_debounce=None if debounce is None else debounce / 1000,
            handshake_timeout=STEP,
            jitter=c.get("jitter", 1.0),
            hole_grace=c.get("holeGraceMs", 250) / 1000,
            **kw,
        )
        client.on_state_change(lambda change: r.states.put_nowait(state_observation(change)))
        subs: dict[str, Any] = {}

        def on_joined(j: Any) -> None:
            # What the application already had comes first.
            for sub in subs.values():
                try:
                    while (item := sub.poll()) is not None:
                        r.obs.put_nowait(observation(item))
                except AgentWireError:
                    pass  # a refused channel: its pump sees the error
            r.obs.put_nowait(joined_observation(j))

        client.on_joined(on_joined)

        try:
            for ch in c["channels"]:
                subs[ch["name"]] = await client.join(ch["name"], since(ch.get("since")))
            r.pumps = [asyncio.create_task(r.pump(client, s)) for s in subs.values()]
            r.previous_done = asyncio.get_running_loop().time()
            for step in sc["script"]:
                await r.step(client, subs, step)
        finally:
            await client.close()
            for att in r.open_attempts:
                if not att.decision.done():
                    att.decision.set_result((503, {"type": "error", "code": "internal", "message": "over"}))
            for p in r.pumps:
                await asyncio.wait_for(p, STEP)


def test_the_backoff_schedule() -> None:
    b = json.loads((ROOT / "backoff.json").read_text())

    def fresh() -> Backoff:
        return Backoff(b["min_ms"] / 1000, b["max_ms"] / 1000)

    s = fresh()
    for n, want in enumerate(b["ceilings_ms"]):
        assert round(s.ceiling() * 1000) == want, f"ceiling before attempt {n + 1}"
        s.next_delay(0.5)
    for d in b["draws"]:
        s = fresh()
        for _ in range(1, d["attempt"]):
            s.next_delay(0.0)
        got = s.next_delay(d["unit"])
        assert got is not None and round(got * 1000, 6) == d["delay_ms"], d
    assert b["jitter_draws"]
    for d in b["jitter_draws"]:
        s = Backoff(b["min_ms"] / 1000, b["max_ms"] / 1000, jitter=d["jitter"])
        for _ in range(1, d["attempt"]):
            s.next_delay(0.0)
        got = s.next_delay(d["unit"])
        assert got is not None and round(got * 1000, 6) == d["delay_ms"], d


def test_the_scenarios_are_there() -> None:
    assert len(SCENARIOS) >= 10, SCENARIOS
