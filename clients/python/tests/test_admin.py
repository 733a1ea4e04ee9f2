"""The management calls against a real local HTTP server: what each sends
(method, path, query, auth header, body), what is parsed, the typed errors
(401/403/400/404/409/413/429/5xx), and which calls retry."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Awaitable, Callable, Iterator
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx
import pytest

from agentwire import (
    Admin,
    AgentWireError,
    ConflictError,
    IssuerKeys,
    Limits,
    NotFoundError,
    ProtocolError,
    Revocation,
    RevokeResult,
    ServerError,
    TenantLimits,
    TrustedIssuer,
    UnauthorizedError,
    Webhook,
)
from agentwire import publisher

JWKS = {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}


@dataclass
class Seen:
    method: str
    #: The path as sent, percent-encoding kept.
    raw_path: str
    query: dict[str, str]
    auth: str
    content_type: str
    body: bytes

    @property
    def path(self) -> str:
        return unquote(self.raw_path)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class _Api:
    seen: list[Seen] = []
    answer: Callable[[Seen], Answer] = staticmethod(lambda s: Answer(500, {}))


class _Handler(BaseHTTPRequestHandler):
    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        u = urlsplit(self.path)
        seen = Seen(
            method=self.command,
            raw_path=u.path,
            query=dict(parse_qsl(u.query)),
            auth=self.headers.get("authorization", ""),
            content_type=self.headers.get("content-type", ""),
            body=self.rfile.read(length) if length else b"",
        )
        _Api.seen.append(seen)
        a = _Api.answer(seen)
        self.send_response(a.status)
        if a.status == 204:
            self.send_header("content-length", "0")
            self.end_headers()
            return
        data = a.body.encode() if isinstance(a.body, str) else json.dumps(a.body).encode()
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in a.headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    do_GET = _serve  # noqa: N815 - the stdlib's names
    do_PUT = _serve  # noqa: N815
    do_POST = _serve  # noqa: N815
    do_DELETE = _serve  # noqa: N815

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def listening() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def server(listening: str) -> str:
    _Api.seen = []
    _Api.answer = staticmethod(lambda s: Answer(500, {}))
    return listening


def answer(f: Callable[[Seen], Answer]) -> None:
    _Api.answer = staticmethod(f)


def error(code: str, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": f"m {code}", **extra}


def only() -> Seen:
    assert len(_Api.seen) == 1, _Api.seen
    return _Api.seen[0]


def no_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []

    async def fake_sleep(delay: float) -> None:
        waits.append(delay)

    monkeypatch.setattr(publisher, "_sleep", fake_sleep)
    return waits


async def test_get_limits_sends_the_token_and_parses_the_limits(server: str) -> None:
    body = {
        "tenant": "acme",
        "own": {"max_connections": 50, "dry_run": True},
        "effective": {"max_connections": 50, "publish_rate": 10, "publish_burst": 20},
        "usage": {"connections": 3},
    }
    answer(lambda s: Answer(200, body))
    async with Admin(server, token="adm") as a:
        limits = await a.get_limits()
    s = only()
    assert (s.method, s.raw_path, s.auth, s.body) == ("GET", "/v1/admin/limits", "Bearer adm", b"")
    assert limits == TenantLimits(
        "acme", Limits(max_connections=50, dry_run=True), Limits(publish_rate=10, publish_burst=20, max_connections=50), 3
    )
    assert limits.raw == body


async def test_get_webhook_of_the_tenant_and_of_a_channel_percent_encoded(server: str) -> None:
    channel_hook = {
        "scope": "channel",
        "channel": "team/a b",
        "url": "https://h.example/c",
        "mode": "off",
        "updated_at": 1700000001,
        "expires_at": 1700003600,
        "disabled": "410 Gone",
        "previous_until": 1700086400,
    }
    answer(
        lambda s: Answer(200, {"scope": "tenant", "url": "https://h.example/t", "mode": "always", "updated_at": 1700000000})
        if s.raw_path == "/v1/admin/webhook"
        else Answer(200, channel_hook)
    )
    async with Admin(server, token="adm") as a:
        assert await a.get_webhook() == Webhook("tenant", "https://h.example/t", "always", 1700000000)
        assert await a.get_webhook("team/a b") == Webhook(
            "channel", "https://h.example/c", "off", 1700000001, "team/a b", 1700003600, "410 Gone", 1700086400
        )
    assert [(s.method, s.raw_path, s.auth) for s in _Api.seen] == [
        ("GET", "/v1/admin/webhook", "Bearer adm"),
        ("GET", "/v1/admin/channels/team%2Fa%20b/webhook", "Bearer adm"),
    ]


async def test_set_webhook_puts_url_mode_and_ttl_and_returns_the_secret_once(server: str) -> None:
    def echo(s: Seen) -> Answer:
        b = s.json()
        out = {"scope": "channel", "channel": "agent-1", "url": b["url"], "mode": b.get("mode", "fallback"), "updated_at": 5}
        return Answer(200, {**out, "secret": "whsec_abc"} if "ttl_s" in b else out)

    answer(echo)
    async with Admin(server, token="adm") as a:
        w = await a.set_webhook("https://h.example/x", channel="agent-1", mode="always", ttl_s=60)
        s = only()
        assert (s.method, s.raw_path, s.content_type) == ("PUT", "/v1/admin/channels/agent-1/webhook", "application/json")
        assert s.json() == {"url": "https://h.example/x", "mode": "always", "ttl_s": 60}
        assert w.secret == "whsec_abc" and w.mode == "always"
        assert "whsec_abc" not in repr(w), "the secret is kept out of repr"
        _Api.seen.clear()
        again = await a.set_webhook("https://h.example/y")
    s = only()
    assert (s.raw_path, s.json()) == ("/v1/admin/webhook", {"url": "https://h.example/y"})
    assert again.secret is None


async def test_rotate_webhook_posts_overlap_s_or_an_empty_object(server: str) -> None:
    rotated = {"scope": "tenant", "url": "u", "mode": "fallback", "updated_at": 9, "previous_until": 3609, "secret": "whsec_n"}
    answer(lambda s: Answer(200, rotated))
    async with Admin(server, token="adm") as a:
        w = await a.rotate_webhook(overlap_s=3600)
        await a.rotate_webhook("a:b@c")
    first, second = _Api.seen
    assert (first.method, first.raw_path, first.json()) == ("POST", "/v1/admin/webhook:rotate", {"overlap_s": 3600})
    assert (second.raw_path, second.json()) == ("/v1/admin/channels/a%3Ab%40c/webhook:rotate", {})
    assert (w.secret, w.previous_until) == ("whsec_n", 3609)


async def test_clear_webhook_deletes_and_a_204_returns_none(server: str) -> None:
    answer(lambda s: Answer(204))
    async with Admin(server, token="adm") as a:
        assert await a.clear_webhook() is None
        assert await a.clear_webhook("x/y") is None
    assert [(s.method, s.raw_path, s.auth, s.body) for s in _Api.seen] == [
        ("DELETE", "/v1/admin/webhook", "Bearer adm", b""),
        ("DELETE", "/v1/admin/channels/x%2Fy/webhook", "Bearer adm", b""),
    ]


async def test_list_issuers_parses_each_key_source(server: str) -> None:
    issuers = [
        {"issuer": "https://a/", "owner": {"tenant": "acme"}, "keys": {"type": "jwks", "url": "https://a/jwks"},
         "audiences": ["app"], "channels": ["inbox-{sub}"], "publish": []},
        {"issuer": "https://b/", "owner": {"tenant": "acme"}, "keys": {"type": "inline", "jwks": JWKS}, "audiences": [],
         "channels": [], "publish": ["x"], "max_lifetime_s": 3600, "preset": {"name": "cognito", "client_ids": ["c1"]}},
        {"issuer": "https://c/", "owner": {"tenant": "acme"}, "keys": {"type": "hs256", "kid": "k", "secret_b64": "<stored>"},
         "audiences": [], "channels": [], "publish": [], "principal_claim": "uid", "grants_claim": "g"},
    ]
    answer(lambda s: Answer(200, {"issuers": issuers}))
    async with Admin(server, token="adm") as a:
        got = await a.list_issuers()
    assert (only().method, only().raw_path) == ("GET", "/v1/admin/issuers")
    assert got == [
        TrustedIssuer("https://a/", "acme", IssuerKeys("jwks", url="https://a/jwks"), ["app"], ["inbox-{sub}"], []),
        TrustedIssuer("https://b/", "acme", IssuerKeys("inline", jwks=JWKS), [], [], ["x"], max_lifetime_s=3600,
                      preset={"name": "cognito", "client_ids": ["c1"]}),
        TrustedIssuer("https://c/", "acme", IssuerKeys("hs256", kid="k", secret_b64="<stored>"), [], [], [],
                      principal_claim="uid", grants_claim="g"),
    ]


async def test_trust_issuer_puts_the_entry(server: str) -> None:
    def echo(s: Seen) -> Answer:
        b = s.json()
        return Answer(200, {"issuer": b["issuer"], "owner": {"tenant": "acme"}, "keys": {"type": "inline", "jwks": b["jwks"]},
                            "audiences": b["audiences"], "channels": b["channels"], "publish": [],
                            "max_lifetime_s": b["max_lifetime_s"], "preset": b["preset"]})

    answer(echo)
    async with Admin(server, token="adm") as a:
        saved = await a.trust_issuer(
            "https://idp.example/",
            jwks=JWKS,
            audiences=["my-app"],
            principal_claim="uid",
            grants_claim="agentwire",
            channels=("inbox-{sub}",),
            max_lifetime_s=3600,
            preset={"name": "supabase", "allow_service_role": True},
        )
    s = only()
    assert (s.method, s.raw_path, s.auth, s.content_type) == ("PUT", "/v1/admin/issuers", "Bearer adm", "application/json")
    assert s.json() == {
        "issuer": "https://idp.example/",
        "jwks": JWKS,
        "audiences": ["my-app"],
        "principal_claim": "uid",
        "grants_claim": "agentwire",
        "channels": ["inbox-{sub}"],
        "max_lifetime_s": 3600,
        "preset": {"name": "supabase", "allow_service_role": True},
    }
    assert saved == TrustedIssuer(
        "https://idp.example/", "acme", IssuerKeys("inline", jwks=JWKS), ["my-app"], ["inbox-{sub}"], [],
        max_lifetime_s=3600, preset={"name": "supabase", "allow_service_role": True},
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"jwks_url": "https://a/jwks", "jwks": JWKS},
        {"jwks": JWKS, "hs256_secret": "c2VjcmV0"},
        {"jwks": JWKS, "max_lifetime_s": -1},
        {"jwks": JWKS, "audiences": "my-app"},
    ],
)
async def test_trust_issuer_is_checked_before_sending(server: str, kwargs: dict[str, Any]) -> None:
    async with Admin(server, token="adm") as a:
        with pytest.raises(ValueError):
            await a.trust_issuer("https://a/", **kwargs)
        with pytest.raises(ValueError):
            await a.trust_issuer("", jwks=JWKS)
    assert _Api.seen == []


async def test_untrust_issuer_deletes_with_iss_encoded(server: str) -> None:
    answer(lambda s: Answer(204))
    async with Admin(server, token="adm") as a:
        await a.untrust_issuer("https://idp.example/?a=b&c")
    s = only()
    assert (s.method, s.raw_path, s.query, s.body) == ("DELETE", "/v1/admin/issuers", {"iss": "https://idp.example/?a=b&c"}, b"")


async def test_revocations_are_listed_and_a_principal_revoked(server: str) -> None:
    answer(
        lambda s: Answer(200, {"revocations": [{"sub": "u1", "at_ms": 1700000000123}]})
        if s.method == "GET"
        else Answer(200, {"sub": s.json()["sub"], "at_ms": 1700000000999, "closed": 2, "failed": 1})
    )
    async with Admin(server, token="adm") as a:
        assert await a.list_revocations() == [Revocation("u1", 1700000000123)]
        assert await a.revoke("user-42") == RevokeResult("user-42", 1700000000999, 2, 1)
        with pytest.raises(ValueError):
            await a.revoke("")
    assert [(s.method, s.raw_path, s.auth, s.body) for s in _Api.seen] == [
        ("GET", "/v1/admin/revocations", "Bearer adm", b""),
        ("POST", "/v1/admin/revocations", "Bearer adm", b'{"sub":"user-42"}'),
    ]


CASES: list[tuple[Answer, type[AgentWireError], dict[str, Any]]] = [
    (Answer(401, error("token_revoked", reason="revoked")), UnauthorizedError, {"code": "token_revoked", "status": 401}),
    (Answer(403, error("forbidden")), ServerError, {"code": "forbidden", "status": 403}),
    (Answer(400, error("invalid_request")), ServerError, {"code": "invalid_request", "status": 400}),
    (Answer(400, error("bad_json")), ServerError, {"code": "bad_json", "status": 400}),
    (Answer(404, error("invalid_request")), NotFoundError, {"code": "invalid_request", "status": 404}),
    (Answer(404, ""), NotFoundError, {"code": "not_found", "status": 404}),
    (Answer(409, error("invalid_request")), ConflictError, {"code": "invalid_request", "status": 409}),
    (Answer(409, "taken"), ConflictError, {"code": "conflict", "status": 409, "message": "taken"}),
    (Answer(413, error("message_too_large")), ServerError, {"code": "message_too_large", "status": 413}),
    (
        Answer(429, {"message": "Too Many Requests"}, {"retry-after": "2"}),
        ServerError,
        {"code": "rate_limited", "status": 429, "retry_after_ms": 2000},
    ),
    (Answer(500, {"message": "Internal Server Error"}), ServerError, {"code": "internal", "status": 500}),
    (Answer(503, error("internal")), ServerError, {"code": "internal", "status": 503}),
]


@pytest.mark.parametrize(("reply", "cls", "want"), CASES, ids=[f"{c[0].status}-{c[2]['code']}" for c in CASES])
async def test_error_bodies_map_to_the_typed_errors(
    server: str, reply: Answer, cls: type[AgentWireError], want: dict[str, Any]
) -> None:
    answer(lambda s: reply)
    async with Admin(server, token="adm", max_retries=0) as a:
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "get_limits": a.get_limits,
            "get_webhook": lambda: a.get_webhook("c"),
            "set_webhook": lambda: a.set_webhook("https://h.example/"),
            "clear_webhook": a.clear_webhook,
            "rotate_webhook": a.rotate_webhook,
            "list_issuers": a.list_issuers,
            "trust_issuer": lambda: a.trust_issuer("https://i/", jwks=JWKS),
            "untrust_issuer": lambda: a.untrust_issuer("https://i/"),
            "list_revocations": a.list_revocations,
            "revoke": lambda: a.revoke("u"),
        }
        for name, call in calls.items():
            with pytest.raises(cls) as e:
                await call()
            assert type(e.value) is cls, name
            got = {k: getattr(e.value, k) for k in want}
            assert got == want, name
    assert len(_Api.seen) == len(calls)


async def test_safe_calls_retry_and_set_and_rotate_are_sent_once(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    waits = no_waits(monkeypatch)
    replies = iter([Answer(429, error("rate_limited", retry_after_ms=700)), Answer(200, {"revocations": []})])
    answer(lambda s: next(replies))
    async with Admin(server, token="adm", min_retry_delay=0.001, max_retry_delay=0.001) as a:
        assert await a.list_revocations() == []
        assert waits == [0.7] and len(_Api.seen) == 2

        _Api.seen.clear()
        flaky = iter([Answer(503, error("internal")), Answer(200, {"sub": "u", "at_ms": 1, "closed": 0, "failed": 0})])
        answer(lambda s: next(flaky))
        assert (await a.revoke("u")).sub == "u"
        assert [s.body for s in _Api.seen] == [b'{"sub":"u"}'] * 2

        _Api.seen.clear()
        answer(lambda s: Answer(503, error("internal")))
        with pytest.raises(ServerError):
            await a.set_webhook("https://h.example/")
        with pytest.raises(ServerError):
            await a.rotate_webhook()
        assert len(_Api.seen) == 2, "each sent once"

        _Api.seen.clear()
        with pytest.raises(ServerError):
            await a.get_limits()
        assert len(_Api.seen) == 5, "1 + max_retries (4)"


async def test_a_delete_answered_404_after_a_failed_attempt_is_done(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    no_waits(monkeypatch)
    replies = iter([Answer(503, error("internal")), Answer(404, error("invalid_request"))])
    answer(lambda s: next(replies))
    async with Admin(server, token="adm") as a:
        assert await a.untrust_issuer("https://i/") is None
        assert len(_Api.seen) == 2
        _Api.seen.clear()
        answer(lambda s: Answer(404, error("invalid_request")))
        with pytest.raises(NotFoundError):
            await a.clear_webhook()
    assert len(_Api.seen) == 1, "a 404 is not retried"


async def test_checks_before_sending_and_unreadable_answers(server: str) -> None:
    async with Admin(server, token="adm") as a:
        for bad in (
            lambda: a.get_webhook(""),
            lambda: a.set_webhook(""),
            lambda: a.set_webhook("https://h/", mode="sometimes"),  # type: ignore[arg-type]
            lambda: a.set_webhook("https://h/", ttl_s=-5),
            lambda: a.rotate_webhook(overlap_s=1.5),  # type: ignore[arg-type]
            lambda: a.untrust_issuer(""),
        ):
            with pytest.raises(ValueError):
                await bad()
        assert _Api.seen == []
        answer(lambda s: Answer(200, "not json"))
        with pytest.raises(ProtocolError) as e:
            await a.get_limits()
        assert e.value.code == "decode"
        answer(lambda s: Answer(200, {"scope": "tenant", "mode": "fallback"}))
        with pytest.raises(ProtocolError):
            await a.get_webhook()
        answer(lambda s: Answer(200, {"issuers": [{"issuer": "x", "owner": {"tenant": "t"}, "keys": {"type": "pigeon"}}]}))
        with pytest.raises(ProtocolError):
            await a.list_issuers()
    async with Admin("http://127.0.0.1:9", token="adm", max_retries=0) as a:
        with pytest.raises(ServerError) as e2:
            await a.get_limits()
    assert e2.value.code == "unavailable"


async def test_an_injected_http_client_is_used_and_not_closed(server: str) -> None:
    answer(lambda s: Answer(200, {"revocations": []}))
    async with httpx.AsyncClient(headers={"x-mine": "1"}) as http:
        async with Admin(server.rstrip("/") + "/", token="adm", http=http) as a:
            assert await a.list_revocations() == []
        assert not http.is_closed
    assert only().raw_path == "/v1/admin/revocations"
