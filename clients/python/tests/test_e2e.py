"""End to end on the local stack: the dev gateway (`target/debug/agentwire-local`)
on the local AWS endpoint (`localstack/up`, 127.0.0.1:4566), tokens and queue
publishes from the `agentwire` CLI. Skipped only when the endpoint does not
answer. Every run uses its own tenant."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, TypeVar

import pytest

from agentwire import (
    Client,
    Event,
    Gap,
    HistoryPage,
    Position,
    Publisher,
    ServerError,
    UnauthorizedError,
    publish_sync,
)

REPO = Path(__file__).resolve().parents[3]
LOCAL = REPO / "target" / "debug" / "agentwire-local"
CLI = REPO / "target" / "debug" / "agentwire"
ENDPOINT = "http://127.0.0.1:4566"
SECRET = "python-e2e-secret-" + "x" * 24
WAIT = 30.0
#: This run's events queue (a FIFO queue like `localstack/up`'s, with a 2 s
#: visibility timeout): a stopped gateway's last long poll may still take
#: messages published right after it stopped, which then stay invisible for
#: the visibility timeout (60 s on the shared queue).
QUEUE = "agentwire-py-" + uuid.uuid4().hex[:12] + ".fifo"
_SIGV4 = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0"


def _endpoint_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 4566), timeout=1):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(
    not _endpoint_answers(),
    reason="the local AWS endpoint (127.0.0.1:4566) does not answer: run localstack/up",
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AWS_ENDPOINT_URL=ENDPOINT,
        AWS_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AGENTWIRE_JWT_SECRET=SECRET,
        AGENTWIRE_EVENTS_QUEUE=QUEUE,
        # The retention test shortens a channel's retention to 1 s to see
        # events expire; the 2 h floor protects deployments, not this test.
        AGENTWIRE_MIN_RETENTION="0s",
        RUST_LOG=env.get("RUST_LOG", "warn"),
    )
    return env


def cli(*args: str, secret: str = SECRET) -> str:
    assert CLI.exists(), f"{CLI} is missing: build the workspace (cargo build)"
    env = _env()
    env["AGENTWIRE_JWT_SECRET"] = secret
    out = subprocess.run([str(CLI), *args], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"agentwire {' '.join(args)}: {out.stderr}"
    return out.stdout.strip()


def token(tenant: str, sub: str, *, secret: str = SECRET) -> str:
    return cli("token", "--tenant", tenant, "--sub", sub, "--channels", "agent-*", "--publish", "agent-*", secret=secret)


async def publish_queue(tenant: str, channel: str, n: int) -> None:
    """Puts an event on the events queue (the gateway need not be up)."""
    await asyncio.to_thread(
        cli, "publish", "--endpoint", ENDPOINT, "--tenant", tenant, "--channel", channel,
        "--kind", "k", "--data", json.dumps({"n": n}),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gateway:
    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert LOCAL.exists(), f"{LOCAL} is missing: build the workspace (cargo build)"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(LOCAL), "--port", str(self.port)], env=_env(), stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"agentwire-local exited: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"agentwire-local did not listen within {WAIT}s")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _sqs(**params: str) -> str:
    import httpx

    r = httpx.post(ENDPOINT + "/", data={"Version": "2012-11-05", **params}, headers={"Authorization": _SIGV4})
    assert r.status_code == 200, r.text
    return r.text


@pytest.fixture(scope="module", autouse=True)
def events_queue() -> Iterator[str]:
    attrs = {
        "FifoQueue": "true",
        "VisibilityTimeout": "2",
        "DeduplicationScope": "messageGroup",
        "FifoThroughputLimit": "perMessageGroupId",
    }
    params = {"Action": "CreateQueue", "QueueName": QUEUE}
    for i, (k, v) in enumerate(attrs.items(), 1):
        params[f"Attribute.{i}.Name"] = k
        params[f"Attribute.{i}.Value"] = v
    _sqs(**params)
    try:
        yield QUEUE
    finally:
        _sqs(Action="DeleteQueue", QueueUrl=f"{ENDPOINT}/123456789012/{QUEUE}")


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(free_port(), tmp_path / "agentwire-local.log")
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def tenant() -> str:
    return "py" + uuid.uuid4().hex[:12]


async def take(sub: Any, n: int, timeout: float = WAIT) -> list[Event | Gap]:
    out: list[Event | Gap] = []

    async def run() -> None:
        async for item in sub:
            out.append(item)
            if len(out) == n:
                return

    try:
        await asyncio.wait_for(run(), timeout)
    except asyncio.TimeoutError:
        pytest.fail(f"{len(out)} of {n} items within {timeout}s: {out}")
    return out


def seqs(items: list[Event | Gap]) -> list[int]:
    return [i.seq for i in items if isinstance(i, Event)]


@pytest.fixture
async def client_factory() -> AsyncIterator[Any]:
    clients: list[Client] = []

    def make(url: str, tok: str, **kw: Any) -> Client:
        c = Client(url, token=tok, min_reconnect_delay=0.05, max_reconnect_delay=0.5, **kw)
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()


async def test_a_client_tails_a_channel_across_a_gateway_restart(gateway: Gateway, tenant: str, client_factory: Any) -> None:
    channel = "agent-restart"
    for n in (1, 2, 3):
        await publish_queue(tenant, channel, n)
    client = client_factory(gateway.ws_url, token(tenant, "tail"))
    states: list[str] = []
    client.on_state(states.append)
    async with client:
        sub = await client.join(channel, since=Position("", 0))
        first = await take(sub, 3)
        assert seqs(first) == [1, 2, 3]
        await asyncio.to_thread(gateway.stop)
        for n in (4, 5, 6):
            await publish_queue(tenant, channel, n)
        await asyncio.to_thread(gateway.start)
        for n in (7, 8):
            await publish_queue(tenant, channel, n)
        rest = await take(sub, 5)
        assert seqs(first + rest) == list(range(1, 9)), "every seq once, in order"
        assert all(isinstance(i, Event) and i.data == {"n": i.seq} for i in first + rest)
        assert "reconnecting" in states and states.count("connected") >= 2


async def test_events_from_publisher_and_publish_sync_arrive(gateway: Gateway, tenant: str, client_factory: Any) -> None:
    channel = "agent-pub"
    tok = token(tenant, "pub")
    async with client_factory(gateway.ws_url, tok) as client:
        sub = await client.join(channel, since="head")
        await sub.wait_joined(WAIT)
        async with Publisher(gateway.http_url, token=tok) as p:
            r = await p.publish(channel, kind="final", data={"text": "done"}, idempotency_key="run-7/final")
        # The key behind the publisher's tag.
        assert r.channel == channel and r.id.endswith("~run-7/final"), r
        # Committed at once (201), with its place in the log.
        assert (r.status, r.seq, r.queued) == (201, 1, False) and r.epoch, r
        r2 = await asyncio.to_thread(
            publish_sync, gateway.http_url, token=tok, channel=channel, kind="status", data={"text": "cron ran"}
        )
        assert r2.channel == channel and r2.id
        assert (r2.status, r2.seq, r2.epoch, r2.queued) == (201, 2, r.epoch, False), r2
        items = await take(sub, 2)
        got = {(i.kind, json.dumps(i.data, sort_keys=True), i.id) for i in items if isinstance(i, Event)}
        assert got == {
            ("final", json.dumps({"text": "done"}), r.id),
            ("status", json.dumps({"text": "cron ran"}), r2.id),
        }
        assert seqs(items) == [1, 2]
        assert {(i.id, i.seq, i.epoch) for i in items if isinstance(i, Event)} == {
            (r.id, r.seq, r.epoch),
            (r2.id, r2.seq, r2.epoch),
        }
        # The same key again: a repeat (200) with the seq it has; nothing new is published.
        async with Publisher(gateway.http_url, token=tok) as p:
            again = await p.publish(channel, kind="final", data={"text": "done"}, idempotency_key="run-7/final")
        assert (again.status, again.id, again.seq, again.epoch, again.queued) == (200, r.id, r.seq, r.epoch, False)


async def test_a_refused_token_is_a_typed_error(gateway: Gateway, tenant: str, client_factory: Any) -> None:
    bad = token(tenant, "intruder", secret="not-the-gateways-secret-" + "y" * 16)
    client = client_factory(gateway.ws_url, bad)
    async with client:
        sub = await client.join("agent-1")
        with pytest.raises(UnauthorizedError) as e:
            await asyncio.wait_for(client.wait_closed(), WAIT)
        assert e.value.code == "unauthorized"
        with pytest.raises(UnauthorizedError):
            async for _ in sub:
                pass
    async with Publisher(gateway.http_url, token=bad) as p:
        with pytest.raises(UnauthorizedError) as pe:
            await p.publish("agent-1", kind="k", data={})
        assert pe.value.status == 401


async def test_a_forbidden_channel_is_a_typed_error(gateway: Gateway, tenant: str, client_factory: Any) -> None:
    tok = token(tenant, "nosy")
    async with client_factory(gateway.ws_url, tok) as client:
        sub = await client.join("secret-plans")
        with pytest.raises(ServerError) as e:
            await sub.wait_joined(WAIT)
        assert e.value.code == "forbidden"
        # The client carries on with what it may join.
        ok = await client.join("agent-ok", since="head")
        j = await ok.wait_joined(WAIT)
        assert j.channel == "agent-ok"
    with pytest.raises(ServerError) as pe:
        await asyncio.to_thread(publish_sync, gateway.http_url, token=tok, channel="secret-plans", kind="k", data={})
    assert pe.value.code == "forbidden" and pe.value.status == 403


async def test_an_expired_range_is_one_gap_with_the_exact_range(gateway: Gateway, tenant: str, client_factory: Any) -> None:
    channel = "agent-retention"
    state = json.loads(await asyncio.to_thread(cli, "channel", "--endpoint", ENDPOINT, "--tenant", tenant, "--channel", channel))
    await asyncio.to_thread(
        cli, "channel", "--endpoint", ENDPOINT, "--tenant", tenant, "--channel", channel, "--retention", "1s"
    )
    tok = token(tenant, "gappy")
    async with client_factory(gateway.ws_url, tok) as watcher:
        live = await watcher.join(channel, since="head")
        await live.wait_joined(WAIT)
        for n in (1, 2, 3):
            await publish_queue(tenant, channel, n)
        assert seqs(await take(live, 3)) == [1, 2, 3]
        # Their `expires_at` is at most 2 s past now (1 s retention, whole
        # seconds): let that time pass, then keep the next ones.
        await asyncio.sleep(2.5)
        await asyncio.to_thread(
            cli, "channel", "--endpoint", ENDPOINT, "--tenant", tenant, "--channel", channel, "--default-retention"
        )
        for n in (4, 5):
            await publish_queue(tenant, channel, n)
        assert seqs(await take(live, 2)) == [4, 5]
    async with client_factory(gateway.ws_url, tok) as client:
        sub = await client.join(channel, since=Position(state["epoch"], 0))
        items = await take(sub, 3)
        assert items[0] == Gap(channel, 1, 3), items
        assert seqs(items[1:]) == [4, 5]
        assert not sub.joined.recovered  # type: ignore[union-attr]
        # Exactly one gap: nothing else is waiting.
        assert sub.poll() is None


async def test_the_relay_example_resumes_from_its_durable_cursor(gateway: Gateway, tenant: str) -> None:
    import sys

    channel = "agent-relay"
    env = _env()
    env.update(AGENTWIRE_URL=gateway.ws_url, AGENTWIRE_TOKEN=token(tenant, "relay"))
    example = Path(__file__).resolve().parents[1] / "examples" / "relay.py"

    async def run_relay(want: list[int]) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(example), channel, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stderr is not None and proc.stdout is not None
            # Publish once the channel is joined, not merely connected: an event
            # committed before the first join (no durable cursor yet) is before
            # the relay's starting point.
            while b"# joined" not in await asyncio.wait_for(proc.stderr.readline(), WAIT):
                pass
            for n in want:
                await publish_queue(tenant, channel, n)
            for n in want:
                line = (await asyncio.wait_for(proc.stdout.readline(), WAIT)).decode()
                assert line.startswith(f"[{channel} #{n}] k:"), line
        finally:
            proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(proc.wait(), WAIT)
        assert proc.returncode == 0

    await run_relay([1, 2])
    await run_relay([3])  # not 1 and 2 again: the cursor moved on close


T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str, timeout: float = WAIT) -> T:
    """`probe()` until `done` says so (a publish reaches the log through the queue)."""
    deadline = time.monotonic() + timeout
    while True:
        v = await probe()
        if done(v):
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout}s; last: {v!r}")
        await asyncio.sleep(0.1)


async def test_history_presence_and_the_channel_are_read_over_http(
    gateway: Gateway, tenant: str, client_factory: Any
) -> None:
    channel = "agent-reads"
    async with Publisher(gateway.http_url, token=token(tenant, "reader")) as p:
        # A channel with no event yet: an empty page, not an error.
        assert await p.history(channel) == HistoryPage(channel, "", 0, None, [], None, None)

        async with client_factory(gateway.ws_url, token(tenant, "watcher")) as client:
            sub = await client.join(channel, since="head")
            await sub.wait_joined(WAIT)
            for n in (1, 2, 3):
                r = await p.publish(channel, kind="status", data={"n": n}, idempotency_key=f"reads-{n}")
                assert (r.status, r.seq, r.queued) == (201, n, False), r
            page = await eventually(lambda: p.history(channel, after=0), lambda pg: pg.head >= 3, "head 3")
            assert (page.head, page.oldest, page.gap, page.next_after) == (3, 1, None, None)
            assert page.epoch
            assert [e.seq for e in page.events] == [1, 2, 3]
            assert [e.data for e in page.events] == [{"n": 1}, {"n": 2}, {"n": 3}], "in publish order"
            assert [e.id.split("~", 1)[1] for e in page.events] == ["reads-1", "reads-2", "reads-3"]
            assert all(e.kind == "status" and e.channel == channel and e.epoch == page.epoch and e.ts for e in page.events)

            first = await p.history(channel, after=0, limit=2)
            assert [e.seq for e in first.events] == [1, 2] and first.next_after == 2
            second = await p.history(channel, after=2, limit=2)
            assert [e.seq for e in second.events] == [3] and second.next_after is None
            pages = [pg async for pg in p.history_pages(channel, limit=2)]
            assert [[e.seq for e in pg.events] for pg in pages] == [[1, 2], [3]]

            who = await eventually(lambda: p.presence(channel), lambda pr: "watcher" in pr.principals, "watcher present")
            assert who.channel == channel and who.count >= 1

            info = await p.channel(channel)
            assert (info.channel, info.head, info.epoch, info.oldest) == (channel, 3, page.epoch, 1)
            assert info.retention_s > 0
            assert info.webhook is None or isinstance(info.webhook.mode, str)

        # Refusals, typed: a channel outside the grant, a refused token.
        with pytest.raises(ServerError) as e:
            await p.history("secret-plans")
        assert (e.value.code, e.value.status) == ("forbidden", 403)
    bad = token(tenant, "intruder", secret="not-the-gateways-secret-" + "y" * 16)
    async with Publisher(gateway.http_url, token=bad) as p:
        with pytest.raises(UnauthorizedError) as ue:
            await p.presence(channel)
        assert ue.value.status == 401


async def test_a_batch_lands_in_order_once_and_history_shows_it(gateway: Gateway, tenant: str) -> None:
    channel = "agent-batch"
    events: list[dict[str, Any]] = [
        {"kind": "a", "data": {"n": 1}, "id": "b-1"},
        {"kind": "b", "data": {"n": 2}, "id": "b-2"},
        {"kind": "c", "data": {"n": 3}},
    ]
    async with Publisher(gateway.http_url, token=token(tenant, "bot")) as p:
        r = await p.publish_batch(channel, events)
        assert r.channel == channel and len(r.ids) == 3 and [i.split("~", 1)[1] for i in r.ids[:2]] == ["b-1", "b-2"] and r.ids[2]
        # Committed at once (201): each event's seq, in the request's order.
        assert (r.status, r.queued) == (201, False) and r.events is not None, r
        assert [(e.id, e.seq) for e in r.events] == list(zip(r.ids, [1, 2, 3]))
        epoch = r.events[0].epoch
        assert epoch and all(e.epoch == epoch for e in r.events)
        # The same events again (a retry): each committed once, a repeat (200)
        # with the seqs they have. A marker after it.
        again = await p.publish_batch(channel, events[:2])
        assert (again.status, again.queued) == (200, False) and again.events is not None, again
        assert [(e.id, e.seq, e.epoch) for e in again.events] == [(e.id, e.seq, e.epoch) for e in r.events[:2]]
        marker = await p.publish(channel, kind="marker", data={})
        assert (marker.status, marker.seq, marker.epoch) == (201, 4, epoch), marker
        page = await eventually(
            lambda: p.history(channel), lambda pg: any(e.kind == "marker" for e in pg.events), "the marker"
        )
        assert [e.kind for e in page.events] == ["a", "b", "c", "marker"]
        assert [e.seq for e in page.events] == [1, 2, 3, 4]
        assert [e.id for e in page.events[:3]] == r.ids
        assert [e.data for e in page.events[:3]] == [{"n": 1}, {"n": 2}, {"n": 3}]
        # All or nothing: one invalid event refuses the batch, typed.
        with pytest.raises(ServerError) as e:
            await p.publish_batch(channel, [{"kind": "ok"}, {"kind": "not a kind!"}])
        assert (e.value.code, e.value.status) == ("invalid_event", 400)
