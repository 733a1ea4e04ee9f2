"""In-band token refresh (docs/protocol.md, "Refreshing the token in band"),
beyond the shared conformance scenarios: the lead, the option, no refresh
with a fixed token, nothing left behind on close, a provider that fails.

The wall clock the client reads `token_exp` against is fixed (monkeypatched),
so a refresh is either due at once (`token_exp` at the fixed now) or planned
at a loop time the test checks; nothing waits for a refresh to come due. An
in-process scripted gateway (as in `test_conformance.py`) drives the
connections; every wait is on a condition, with a time-out, never a sleep."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Callable

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from agentwire import AgentWireError, Client, Event, Position, ServerError, UnauthorizedError
from agentwire import _driver as driver_module
from agentwire.client import _refresh_delay

STEP = 5.0
NOW = 1_800_000_000.0  # the client's wall clock, Unix seconds
WELCOME = {
    "type": "welcome",
    "protocol": 1,
    "connection_id": "c1",
    "server": "scripted",
    "heartbeat_s": 300,
    "limits": {"max_frame_bytes": 32768, "max_channels_per_join": 50, "max_channel_name": 128},
}


def event(channel: str, seq: int) -> dict[str, Any]:
    return {
        "type": "event",
        "channel": channel,
        "epoch": "e1",
        "seq": seq,
        "id": f"i{seq}",
        "kind": "status",
        "data": {"n": seq},
        "ts": "2026-12-07T09:00:00.000Z",
    }


class Conn:
    """The gateway's side of one connection."""

    def __init__(self, ws: ServerConnection, token: str | None) -> None:
        self.ws = ws
        self.token = token

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def expect(self) -> dict[str, Any]:
        """The next frame the client sends that is not a ping."""
        while True:
            try:
                text = await asyncio.wait_for(self.ws.recv(), STEP)
            except asyncio.TimeoutError:
                pytest.fail(f"the client sent nothing within {STEP}s")
            f = json.loads(text)
            assert isinstance(f, dict), f
            if f.get("action") != "ping":
                return f

    async def welcome(self, **extra: Any) -> dict[str, Any]:
        """Answers `hello` with a welcome (plus `extra`), then the join with
        every channel joined; returns the join."""
        hello = await self.expect()
        assert hello["action"] == "hello", hello
        await self.send({**WELCOME, **extra})
        join = await self.expect()
        assert join["action"] == "join", join
        names = [c if isinstance(c, str) else c["name"] for c in join["channels"]]
        await self.send(
            {
                "type": "joined",
                "id": join["id"],
                "channels": [
                    {"name": n, "epoch": "e1", "head": 0, "replayed": 0, "recovered": True} for n in names
                ],
            }
        )
        return join


class Gateway:
    def __init__(self) -> None:
        self.conns: asyncio.Queue[Conn] = asyncio.Queue()
        self.url = ""
        self._tokens: list[str | None] = []

    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        auth = request.headers.get("Authorization", "")
        self._tokens.append(auth[len("Bearer ") :] if auth.startswith("Bearer ") else None)
        return None

    async def handler(self, ws: ServerConnection) -> None:
        await self.conns.put(Conn(ws, self._tokens.pop(0)))
        await ws.wait_closed()

    async def connection(self) -> Conn:
        try:
            return await asyncio.wait_for(self.conns.get(), STEP)
        except asyncio.TimeoutError:
            pytest.fail(f"no connection within {STEP}s")

    def client(self, **kw: Any) -> Client:
        return Client(
            self.url,
            min_reconnect_delay=0.01,
            max_reconnect_delay=0.04,
            ping_interval=60.0,
            ping_timeout=60.0,
            max_connection_age=None,
            ack_debounce=None,
            handshake_timeout=STEP,
            **kw,
        )


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver_module, "_wall_clock", lambda: NOW)


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    gw = Gateway()
    async with serve(
        gw.handler,
        "127.0.0.1",
        0,
        process_request=gw.process_request,
        subprotocols=["agentwire.v1"],  # type: ignore[list-item]
        ping_interval=None,
    ) as server:
        gw.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        yield gw


def provider(*tokens: str | Exception) -> tuple[Callable[[], Any], list[int]]:
    """A token provider that gives `tokens` in order (raising the exceptions),
    and the list its calls are counted in."""
    left = list(tokens)
    calls: list[int] = []

    async def get() -> str:
        calls.append(len(calls) + 1)
        v = left.pop(0)
        if isinstance(v, Exception):
            raise v
        return v

    return get, calls


async def next_item(sub: Any) -> Any:
    return await asyncio.wait_for(sub.__anext__(), STEP)


def test_the_lead_is_the_smaller_of_the_option_and_half_the_time_left() -> None:
    assert _refresh_delay(NOW + 3600, NOW, 60.0) == 3540.0  # an hour left: 60 s before exp
    assert _refresh_delay(NOW + 120, NOW, 60.0) == 60.0  # the two rules meet
    assert _refresh_delay(NOW + 100, NOW, 60.0) == 50.0  # 100 s left: half of it
    assert _refresh_delay(NOW + 2, NOW, 60.0) == 1.0
    assert _refresh_delay(NOW + 3600, NOW, 5.0) == 3595.0  # another lead
    assert _refresh_delay(NOW + 3600, NOW, 0.0) == 3600.0  # no lead: at exp
    assert _refresh_delay(NOW, NOW, 60.0) == 0.0  # expired: at once
    assert _refresh_delay(NOW - 10, NOW, 60.0) == 0.0
    with pytest.raises(ValueError):
        Client("ws://x", token="t", refresh_lead=-1)


@pytest.mark.parametrize(
    ("left", "lead", "delay"),
    [(3600, None, 3540.0), (3600, 5.0, 3595.0), (100, None, 50.0), (2, None, 1.0)],
)
async def test_the_welcome_plans_the_refresh_at_exp_minus_the_lead(
    clock: None, gateway: Gateway, left: int, lead: float | None, delay: float
) -> None:
    get, calls = provider("t1")
    client = gateway.client(token_provider=get, **({} if lead is None else {"refresh_lead": lead}))
    try:
        sub = await client.join("a", since=Position("e1", 0))
        conn = await gateway.connection()
        loop = asyncio.get_running_loop()
        before = loop.time()
        await conn.welcome(features=["refresh"], token_exp=NOW + left)
        after = loop.time()
        await asyncio.wait_for(sub.wait_joined(), STEP)
        at = client._refresh_at
        assert at is not None
        assert before + delay <= at <= after + delay, (before, at, after)
        assert calls == [1], "the provider is asked when the refresh is due, not before"
    finally:
        await asyncio.wait_for(client.close(), STEP)


@pytest.mark.parametrize("welcome", [{"token_exp": NOW + 10}, {"features": ["refresh"]}, {"features": []}])
async def test_no_refresh_unless_the_welcome_offers_it_and_names_exp(
    clock: None, gateway: Gateway, welcome: dict[str, Any]
) -> None:
    get, _ = provider("t1")
    client = gateway.client(token_provider=get)
    try:
        sub = await client.join("a", since=Position("e1", 0))
        await (await gateway.connection()).welcome(**welcome)
        await asyncio.wait_for(sub.wait_joined(), STEP)
        assert client._refresh_at is None and client._refresh_task is None
    finally:
        await asyncio.wait_for(client.close(), STEP)


async def test_a_due_refresh_sends_a_fresh_token_and_refreshed_plans_the_next(clock: None, gateway: Gateway) -> None:
    get, calls = provider("t1", "t2")
    client = gateway.client(token_provider=get)
    states: list[str] = []
    client.on_state(states.append)
    try:
        sub = await client.join("a", since=Position("e1", 0))
        conn = await gateway.connection()
        assert conn.token == "t1"
        # exp is now: the refresh is due at once.
        await conn.welcome(features=["refresh"], token_exp=NOW)
        refresh = await conn.expect()
        assert refresh["action"] == "refresh" and refresh["token"] == "t2", refresh
        assert isinstance(refresh["id"], str)
        assert calls == [1, 2]
        loop = asyncio.get_running_loop()
        before = loop.time()
        await conn.send({"type": "refreshed", "id": refresh["id"], "exp": NOW + 3600})
        # The event after it is a barrier: `refreshed` was read before it.
        await conn.send(event("a", 1))
        item = await next_item(sub)
        after = loop.time()
        assert isinstance(item, Event) and item.seq == 1
        at = client._refresh_at
        assert at is not None and before + 3540 <= at <= after + 3540, (before, at, after)
        assert client._refresh_id is None
        assert "reconnecting" not in states, states
        assert gateway.conns.empty()
    finally:
        await asyncio.wait_for(client.close(), STEP)


async def test_a_refreshed_exp_no_later_than_the_last_is_not_refreshed_again(clock: None, gateway: Gateway) -> None:
    """No refresh loop towards exp: a provider that keeps returning a token
    of the same exp is not asked again after `refreshed`, and a later exp is
    refreshed no sooner than a second from now."""
    get, calls = provider("t1", "t2", "t3")
    client = gateway.client(token_provider=get)
    try:
        sub = await client.join("a", since=Position("e1", 0))
        conn = await gateway.connection()
        await conn.welcome(features=["refresh"], token_exp=NOW)
        refresh = await conn.expect()
        await conn.send({"type": "refreshed", "id": refresh["id"], "exp": NOW})
        # The event after it is a barrier: `refreshed` was read before it.
        await conn.send(event("a", 1))
        item = await next_item(sub)
        assert isinstance(item, Event) and item.seq == 1
        assert client._refresh_at is None, "the same exp is not refreshed again"
        assert calls == [1, 2]
    finally:
        await asyncio.wait_for(client.close(), STEP)


async def test_a_fixed_token_never_refreshes(clock: None, gateway: Gateway) -> None:
    client = gateway.client(token="fixed")
    try:
        sub = await client.join("a", since=Position("e1", 0))
        conn = await gateway.connection()
        # Due at once for a client with a provider.
        await conn.welcome(features=["refresh"], token_exp=NOW)
        await asyncio.wait_for(sub.wait_joined(), STEP)
        assert client._refresh_at is None and client._refresh_task is None
        await client.join("b", since="head")
        f = await conn.expect()
        assert f["action"] == "join", f"the client sent {f}"
    finally:
        await asyncio.wait_for(client.close(), STEP)


async def test_close_clears_the_planned_refresh(clock: None, gateway: Gateway) -> None:
    get, calls = provider("t1")
    client = gateway.client(token_provider=get)
    sub = await client.join("a", since=Position("e1", 0))
    await (await gateway.connection()).welcome(features=["refresh"], token_exp=NOW + 3600)
    await asyncio.wait_for(sub.wait_joined(), STEP)
    assert client._refresh_at is not None
    await asyncio.wait_for(client.close(), STEP)
    assert client._refresh_at is None and client._refresh_task is None and client._refresh_id is None
    assert calls == [1]


async def test_close_cancels_a_refresh_waiting_for_the_provider(clock: None, gateway: Gateway) -> None:
    asked = asyncio.Event()
    cancelled: list[bool] = []
    calls = 0

    async def get() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            return "t1"
        asked.set()
        try:
            await asyncio.Event().wait()  # a provider that never answers
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "never"

    client = gateway.client(token_provider=get)
    sub = await client.join("a", since=Position("e1", 0))
    await (await gateway.connection()).welcome(features=["refresh"], token_exp=NOW)
    await asyncio.wait_for(sub.wait_joined(), STEP)
    await asyncio.wait_for(asked.wait(), STEP)
    task = client._refresh_task
    assert task is not None and not task.done()
    await asyncio.wait_for(client.close(), STEP)
    assert cancelled == [True]
    assert task.done() and client._refresh_task is None


async def test_a_provider_failing_to_refresh_reconnects_and_asks_again(clock: None, gateway: Gateway) -> None:
    fail = asyncio.Event()
    calls: list[int] = []

    async def get() -> str:
        calls.append(len(calls) + 1)
        if len(calls) == 2:
            await fail.wait()  # fails once the test has its event
            raise RuntimeError("the auth service is down")
        return f"t{len(calls)}"

    client = gateway.client(token_provider=get)
    errors: list[AgentWireError] = []
    client.on_error(errors.append)
    try:
        sub = await client.join("a", since=Position("e1", 0))
        first = await gateway.connection()
        # The refresh is due at once: the provider is asked (and fails).
        await first.welcome(features=["refresh"], token_exp=NOW)
        await first.send(event("a", 1))
        assert (await next_item(sub)).seq == 1
        fail.set()
        second = await gateway.connection()
        assert second.token == "t3"
        join = await second.welcome()
        assert join["channels"] == [{"name": "a", "since": {"epoch": "e1", "seq": 1}}], join
        assert calls == [1, 2, 3]
        assert client.error is None and errors == []
    finally:
        await asyncio.wait_for(client.close(), STEP)


async def test_a_refused_refresh_reconnects_and_forbidden_channels_are_dropped(clock: None, gateway: Gateway) -> None:
    get, calls = provider("t1", "t2", "t3")
    client = gateway.client(token_provider=get)
    errors: list[AgentWireError] = []
    client.on_error(errors.append)
    try:
        a = await client.join("a", since=Position("e1", 0))
        b = await client.join("b", since=Position("e1", 0))
        first = await gateway.connection()
        await first.welcome(features=["refresh"], token_exp=NOW)
        await asyncio.wait_for(b.wait_joined(), STEP)
        refresh = await first.expect()
        assert refresh["action"] == "refresh" and refresh["token"] == "t2", refresh
        # The new token does not grant b (a frame that may come at any time).
        await first.send(
            {"type": "error", "code": "forbidden", "message": "the new token does not grant b: left", "channels": ["b"]}
        )
        with pytest.raises(ServerError) as refused:
            await next_item(b)
        assert refused.value.code == "forbidden"
        await first.send(event("b", 1))  # dropped: never delivered
        await first.send(event("a", 1))
        assert (await next_item(a)).seq == 1
        assert b.buffered == 0
        # Then the refresh itself is refused: not fatal, a new connection.
        await first.send({"type": "error", "code": "token_revoked", "message": "revoked", "id": refresh["id"]})
        second = await gateway.connection()
        assert second.token == "t3"
        join = await second.welcome()
        assert join["channels"] == [{"name": "a", "since": {"epoch": "e1", "seq": 1}}], join
        assert [e.code for e in errors] == ["forbidden", "token_revoked"]
        assert isinstance(errors[1], UnauthorizedError)
        assert client.error is None
        assert calls == [1, 2, 3]
    finally:
        await asyncio.wait_for(client.close(), STEP)
