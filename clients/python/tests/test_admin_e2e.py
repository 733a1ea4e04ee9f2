"""The management calls end to end on the local stack: the dev gateway
(`target/debug/agentwire-local`, with AGENTWIRE_WEBHOOK_ALLOW_INSECURE=true so
that a webhook may be plain http to loopback) on the local AWS endpoint
(`localstack/up`, 127.0.0.1:4566), admin tokens from the `agentwire` CLI.
Skipped only when the endpoint does not answer. Every run uses its own
tenants."""

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
from typing import Any, Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from agentwire import (
    Admin,
    ConflictError,
    IssuerKeys,
    NotFoundError,
    Publisher,
    Revocation,
    ServerError,
    TrustedIssuer,
    UnauthorizedError,
)

REPO = Path(__file__).resolve().parents[3]
LOCAL = REPO / "target" / "debug" / "agentwire-local"
CLI = REPO / "target" / "debug" / "agentwire"
ENDPOINT = "http://127.0.0.1:4566"
SECRET = "python-admin-e2e-" + uuid.uuid4().hex
WAIT = 30.0
#: A public key (RFC 8037 A.2's Ed25519 key): trusted inline, never used to sign here.
JWKS = {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "e2e-1", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}


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
        AGENTWIRE_WEBHOOK_ALLOW_INSECURE="true",
        RUST_LOG=env.get("RUST_LOG", "warn"),
    )
    return env


def cli(*args: str) -> str:
    assert CLI.exists(), f"{CLI} is missing: build the workspace (cargo build)"
    out = subprocess.run([str(CLI), *args], env=_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"agentwire {' '.join(args)}: {out.stderr}"
    return out.stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The dev gateway's HTTP base URL (this module's own process)."""
    assert LOCAL.exists(), f"{LOCAL} is missing: build the workspace (cargo build)"
    port = free_port()
    log_path = tmp_path_factory.mktemp("gw") / "agentwire-local.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([str(LOCAL), "--port", str(port)], env=_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + WAIT
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"agentwire-local exited: {log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"agentwire-local did not listen within {WAIT}s") from None
                time.sleep(0.05)  # polling the port, as test_e2e's gateway does
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def tenant() -> str:
    return "pyadm" + uuid.uuid4().hex[:12]


def admin_token(tenant: str) -> str:
    return cli("token", "--tenant", tenant, "--sub", "ops", "--admin")


async def test_limits_answer_the_tokens_tenant_and_need_the_admin_grant(gateway: str, tenant: str) -> None:
    async with Admin(gateway, token=admin_token(tenant)) as a:
        limits = await a.get_limits()
    assert limits.tenant == tenant and isinstance(limits.connections, int)
    plain = cli("token", "--tenant", tenant, "--sub", "reader", "--channels", "*")
    async with Admin(gateway, token=plain) as a:
        with pytest.raises(ServerError) as e:
            await a.get_limits()
    assert (e.value.code, e.value.status) == ("forbidden", 403)
    assert not isinstance(e.value, NotFoundError)
    async with Admin(gateway, token="not-a-jwt") as a:
        with pytest.raises(UnauthorizedError):
            await a.get_limits()


async def test_a_channels_webhook_secret_once_rotated_and_cleared(gateway: str, tenant: str) -> None:
    channel = f"team/{uuid.uuid4().hex[:8]}"
    hook = f"http://127.0.0.1:{free_port()}/hooks/{tenant}"
    async with Admin(gateway, token=admin_token(tenant)) as a:
        with pytest.raises(NotFoundError) as nf:
            await a.get_webhook(channel)
        assert nf.value.status == 404

        made = await a.set_webhook(hook, channel=channel, mode="always")
        assert made.secret is not None and made.secret.startswith("whsec_")
        assert (made.scope, made.channel, made.url, made.mode) == ("channel", channel, hook, "always")
        assert 1_600_000_000 < made.updated_at < 10_000_000_000, "Unix seconds"

        shown = await a.get_webhook(channel)
        assert (shown.url, shown.mode, shown.secret) == (hook, "always", None), "the secret is shown once"
        assert (await a.set_webhook(hook, channel=channel, mode="always")).secret is None, "same URL, same secret"

        # The read API (a `channels` grant) sees the channel's own webhook apply.
        reader = cli("token", "--tenant", tenant, "--sub", "reader", "--channels", "team/*")
        async with Publisher(gateway, token=reader, max_retries=0) as p:
            info = await p.channel(channel)
        assert info.webhook is not None and (info.webhook.mode, info.webhook.scope) == ("always", "channel")

        rotated = await a.rotate_webhook(channel, overlap_s=600)
        assert rotated.secret is not None and rotated.secret.startswith("whsec_") and rotated.secret != made.secret
        assert rotated.previous_until is not None and abs(rotated.previous_until - (time.time() + 600)) < 120
        assert (await a.get_webhook(channel)).secret is None

        with pytest.raises(ServerError) as bad:
            await a.set_webhook("https://10.0.0.1/hook", channel=channel)
        assert (bad.value.status, bad.value.code) == (400, "invalid_request")

        await a.clear_webhook(channel)
        with pytest.raises(NotFoundError):
            await a.get_webhook(channel)
        with pytest.raises(NotFoundError):
            await a.clear_webhook(channel)
        with pytest.raises(NotFoundError):
            await a.rotate_webhook(channel)


async def test_the_tenants_default_webhook(gateway: str, tenant: str) -> None:
    hook = f"http://127.0.0.1:{free_port()}/tenant/{tenant}"
    async with Admin(gateway, token=admin_token(tenant)) as a:
        made = await a.set_webhook(hook, ttl_s=3600)
        assert (made.scope, made.channel, made.mode) == ("tenant", None, "fallback")
        assert made.secret is not None and made.expires_at is not None and made.expires_at > made.updated_at
        assert (await a.get_webhook()).url == hook
        await a.clear_webhook()
        with pytest.raises(NotFoundError):
            await a.get_webhook()


async def test_an_issuer_trusted_inline_listed_refused_to_another_tenant_and_untrusted(gateway: str, tenant: str) -> None:
    issuer = f"https://idp-{uuid.uuid4().hex[:10]}.example.com/"
    async with Admin(gateway, token=admin_token(tenant)) as a:
        assert all(i.issuer != issuer for i in await a.list_issuers())
        saved = await a.trust_issuer(
            issuer, jwks=JWKS, audiences=["my-app"], channels=["inbox-{sub}"], publish=["inbox-{sub}"], max_lifetime_s=3600
        )
        assert saved == TrustedIssuer(
            issuer, tenant, IssuerKeys("inline", jwks=JWKS), ["my-app"], ["inbox-{sub}"], ["inbox-{sub}"], max_lifetime_s=3600
        )
        assert [i for i in await a.list_issuers() if i.issuer == issuer] == [saved]

        async with Admin(gateway, token=admin_token(tenant + "x")) as other:
            with pytest.raises(ConflictError) as c:
                await other.trust_issuer(issuer, jwks=JWKS)
        assert (c.value.status, c.value.code) == (409, "invalid_request")

        with pytest.raises(ServerError) as bad:
            await a.trust_issuer(issuer + "2", jwks_url="https://169.254.169.254/jwks")
        assert bad.value.status == 400

        await a.untrust_issuer(issuer)
        assert all(i.issuer != issuer for i in await a.list_issuers())
        with pytest.raises(NotFoundError):
            await a.untrust_issuer(issuer)


async def _frame(ws: Any, kind: str) -> dict[str, Any]:
    """The next frame of type `kind` (others skipped)."""
    while True:
        f = json.loads(await ws.recv())
        if f.get("type") == kind:
            return dict(f)


async def test_revoke_closes_the_live_connection_and_refuses_the_token(gateway: str, tenant: str) -> None:
    sub = "victim-" + uuid.uuid4().hex[:8]
    victim = cli("token", "--tenant", tenant, "--sub", sub, "--channels", "agent-*")
    ws_url = gateway.replace("http://", "ws://") + "/?token=" + victim
    async with connect(ws_url, subprotocols=[Subprotocol("agentwire.v1")]) as ws:
        await ws.send(json.dumps({"action": "hello", "protocol": {"min": 1, "max": 1}, "client": "admin-e2e"}))
        await asyncio.wait_for(_frame(ws, "welcome"), WAIT)

        async with Admin(gateway, token=admin_token(tenant)) as a:
            r = await a.revoke(sub)
            assert (r.sub, r.closed, r.failed) == (sub, 1, 0)
            assert abs(r.at_ms - time.time() * 1000) < 60_000

            told = await asyncio.wait_for(_frame(ws, "error"), WAIT)
            assert told["code"] == "token_revoked"
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), WAIT)

            assert Revocation(sub, r.at_ms) in await a.list_revocations()

    async with Publisher(gateway, token=victim, max_retries=0) as p:
        with pytest.raises(UnauthorizedError) as e:
            await p.history("agent-1")
    assert e.value.code == "token_revoked"
