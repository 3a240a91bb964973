"""The middleware end to end: real tokens, real SETs pushed, the next request judged."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Request

from receiver.policy import ALLOW, Decision, DefaultPolicy, RequestContext
from receiver.state import SubjectState
from receiver.tokens import CompositeValidator
from ssf.events import (
    AssuranceLevelChange,
    CredentialChange,
    DeviceComplianceChange,
    RiskLevelChange,
    SessionRevoked,
    TokenClaimsChange,
)
from ssf.events.risc import (
    AccountCredentialChangeRequired,
    AccountDisabled,
    AccountEnabled,
    AccountPurged,
    CredentialCompromise,
    IdentifierRecycled,
    SessionsRevoked,
)
from ssf.keys import generate_signing_key
from ssf.subjects import Subject
from tests.receiver.conftest import Running, run_receiver
from tests.receiver.fake import AUDIENCE, FakeTransmitter


def _user(rcv: Running, sub: str = "alice") -> Subject:
    return Subject.iss_sub(rcv.fake.base + "/as", sub)


def test_whoami_returns_the_principal(rcv: Running) -> None:
    token = rcv.fake.mint("alice", sid="s1", acr="nist-aal2", device_id="d1", email="Alice@Example.COM")
    resp = rcv.whoami(token)
    assert resp.status_code == 200
    body = resp.json()
    assert (body["sub"], body["sid"], body["acr"], body["device"]) == ("alice", "s1", "nist-aal2", "d1")


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({}, None),
        ({"Authorization": "Basic abc"}, None),
        ({"Authorization": "Bearer not-a-token"}, "invalid_token"),
    ],
)
def test_missing_or_bad_tokens_get_rfc6750_challenges(
    rcv: Running, headers: dict[str, str], error: str | None
) -> None:
    resp = rcv.http.get("/protected/whoami", headers=headers)
    assert resp.status_code == 401
    challenge = resp.headers["www-authenticate"]
    assert challenge.startswith("Bearer realm=")
    if error:
        assert f'error="{error}"' in challenge
    else:
        assert "error=" not in challenge


def test_expired_wrong_audience_and_wrong_typ_tokens_are_refused(rcv: Running) -> None:
    fake = rcv.fake
    expired = fake.mint("alice", iat=int(time.time()) - 7200, lifetime=60)
    assert rcv.whoami(expired).status_code == 401
    wrong_aud = fake.mint("alice", aud="https://other.example")
    assert rcv.whoami(wrong_aud).status_code == 401
    # A token in the query string is never looked at (RFC 6750 §2.3 not supported).
    good = fake.mint("alice")
    assert rcv.http.get(f"/protected/whoami?access_token={good}").status_code == 401


def test_session_revoked_by_sid_refuses_only_that_session(rcv: Running) -> None:
    fake = rcv.fake
    t1, t2 = fake.mint("alice", sid="s-1"), fake.mint("alice", sid="s-2")
    assert rcv.whoami(t1).status_code == 200 and rcv.whoami(t2).status_code == 200
    assert rcv.push(fake.sign(Subject.opaque("s-1"), SessionRevoked())).status_code == 202
    assert rcv.whoami(t1).status_code == 401
    assert rcv.whoami(t2).status_code == 200
    assert t1 not in rcv.receiver.tokens or rcv.receiver.tokens.get(t1).state.revoked  # type: ignore[union-attr]


def test_user_cutoff_refuses_older_tokens_and_accepts_newer(rcv: Running) -> None:
    fake = rcv.fake
    now = int(time.time())
    old = fake.mint("alice", iat=now - 60, sid="a")
    other_user = fake.mint("bob", iat=now - 60)
    assert rcv.whoami(old).status_code == 200
    event = SessionRevoked(event_timestamp=now - 30)
    assert rcv.push(fake.sign(_user(rcv), event)).status_code == 202
    assert rcv.whoami(old).status_code == 401
    assert rcv.whoami(other_user).status_code == 200
    assert rcv.whoami(fake.mint("alice", iat=now, sid="b")).status_code == 200


def test_a_token_dated_in_the_future_is_still_refused_by_a_later_cutoff(rcv: Running) -> None:
    """No token was issued after it was presented: its iat counts as the validation time."""
    fake = rcv.fake
    ahead = fake.mint("carol", iat=int(time.time()) + 3600, sid="c")
    assert rcv.whoami(ahead).status_code == 200  # validated and cached now
    revoked_at = int(time.time()) + 1  # after the validation, before the token's own iat
    revocation = fake.sign(_user(rcv, "carol"), SessionRevoked(event_timestamp=revoked_at))
    assert rcv.push(revocation).status_code == 202
    assert rcv.whoami(ahead).status_code == 401


@pytest.mark.parametrize(
    "event",
    [
        AccountPurged(),
        SessionsRevoked(),
    ],
)
def test_cutoff_events_by_email(rcv: Running, event: Any) -> None:
    fake = rcv.fake
    name = type(event).__name__.lower()
    token = fake.mint(name, iat=int(time.time()) - 10, email=f"{name}@EXAMPLE.com")
    assert rcv.whoami(token).status_code == 200
    assert rcv.push(fake.sign(Subject.email(f"{name}@example.com"), event)).status_code == 202
    assert rcv.whoami(token).status_code == 401


@pytest.mark.parametrize(
    "event",
    [
        CredentialChange(credential_type="password", change_type="update"),
        AccountCredentialChangeRequired(),
        CredentialCompromise(credential_type="password"),
        AccountPurged(),
        IdentifierRecycled(),
        SessionsRevoked(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_every_cutoff_event_refuses_the_users_older_tokens_only(rcv: Running, event: Any) -> None:
    """Each cutoff event (by its time: event_timestamp, else the SET's iat) refuses the tokens
    of that user issued by then, and no newer one nor another user's."""
    fake = rcv.fake
    name = "cut-" + type(event).__name__.lower()
    now = int(time.time())
    old = fake.mint(name, iat=now - 20, email=f"{name}@example.com")
    newer = fake.mint(name, iat=now, email=f"{name}@example.com")
    other = fake.mint("other-" + name, iat=now - 20, email=f"other-{name}@example.com")
    for token in (old, newer, other):
        assert rcv.whoami(token).status_code == 200
    if "event_timestamp" in type(event).model_fields:
        event = event.model_copy(update={"event_timestamp": now - 10})
    assert rcv.push(fake.sign(Subject.email(f"{name}@example.com"), event, iat=now - 10)).status_code == 202
    assert rcv.whoami(old).status_code == 401
    assert rcv.whoami(newer).status_code == 200
    assert rcv.whoami(other).status_code == 200


def test_an_event_time_ahead_of_the_clock_counts_as_the_time_of_receipt(
    fake: FakeTransmitter, tmp_path: Path
) -> None:
    """An event_timestamp years ahead (a transmitter's bad clock) would lock the user out until
    then, and outrank every later fact; it is taken as no later than receipt + CLOCK_SKEW."""
    with run_receiver(fake, tmp_path, verify_on_start=False, clock_skew=0) as rcv:
        rcv.wait(lambda: rcv.receiver.verifier is not None, "ready")
        now = int(time.time())
        ahead = now + 10 * 365 * 86400
        user = _user(rcv, "clocky")
        old = fake.mint("clocky", iat=now - 5)
        assert (
            rcv.push(
                fake.sign(
                    user,
                    CredentialChange(credential_type="password", change_type="update", event_timestamp=ahead),
                )
            ).status_code
            == 202
        )
        assert rcv.whoami(old).status_code == 401
        assert rcv.receiver.state.counts()["revoked_sessions"] == 0  # a cutoff, not a revocation
        time.sleep(1.1)
        assert rcv.whoami(fake.mint("clocky")).status_code == 200  # issued after receipt
        device = Subject.complex(user=user, device=Subject.opaque("clock-dev"))
        on_device = fake.mint("clocky", device_id="clock-dev")
        bad = DeviceComplianceChange(
            previous_status="compliant", current_status="not-compliant", event_timestamp=ahead
        )
        assert rcv.push(fake.sign(device, bad)).status_code == 202
        assert rcv.whoami(on_device).status_code == 401
        time.sleep(1.1)
        good = DeviceComplianceChange(
            previous_status="not-compliant", current_status="compliant", event_timestamp=int(time.time())
        )
        assert rcv.push(fake.sign(device, good)).status_code == 202
        assert rcv.whoami(on_device).status_code == 200  # the later fact wins


def test_account_disabled_until_enabled(rcv: Running) -> None:
    fake = rcv.fake
    token = fake.mint("dave")
    user = _user(rcv, "dave")
    now = int(time.time())
    assert rcv.push(fake.sign(user, AccountDisabled(reason="hijacking"), iat=now)).status_code == 202
    resp = rcv.whoami(token)
    assert resp.status_code == 401 and "disabled" in resp.json()["error_description"]
    assert rcv.whoami(fake.mint("dave")).status_code == 401  # new tokens too
    assert rcv.push(fake.sign(user, AccountEnabled(), iat=now + 1)).status_code == 202
    assert rcv.whoami(token).status_code == 200


def test_device_compliance_via_complex_subject(rcv: Running) -> None:
    fake = rcv.fake
    on_device = fake.mint("erin", device_id="laptop-1")
    other_device = fake.mint("erin", device_id="phone-1")
    subject = Subject.complex(user=_user(rcv, "erin"), device=Subject.opaque("laptop-1"))
    now = int(time.time())
    bad = DeviceComplianceChange(
        previous_status="compliant", current_status="not-compliant", event_timestamp=now
    )
    assert rcv.push(fake.sign(subject, bad)).status_code == 202
    resp = rcv.whoami(on_device)
    assert resp.status_code == 401 and "device" in resp.json()["error_description"]
    assert rcv.whoami(other_device).status_code == 200
    good = DeviceComplianceChange(
        previous_status="not-compliant", current_status="compliant", event_timestamp=now + 1
    )
    assert rcv.push(fake.sign(subject, good)).status_code == 202
    assert rcv.whoami(on_device).status_code == 200


def test_complex_user_session_subject_refuses_that_session(rcv: Running) -> None:
    fake = rcv.fake
    t = fake.mint("frank", sid="fs-1")
    other = fake.mint("frank", sid="fs-2")
    subject = Subject.complex(
        user=_user(rcv, "frank"), session=Subject.opaque("fs-1"), tenant=Subject.opaque("t1")
    )
    assert rcv.push(fake.sign(subject, SessionRevoked())).status_code == 202
    assert rcv.whoami(t).status_code == 401
    assert rcv.whoami(other).status_code == 200


def test_a_tenant_subject_cuts_off_that_tenants_older_tokens(rcv: Running) -> None:
    """A complex subject naming only a tenant: every token of that tenant (``tenant`` or
    ``tid``) issued by the event time is refused; other tenants' and tenantless tokens are not."""
    fake = rcv.fake
    now = int(time.time())
    by_tenant = fake.mint("ten-a", iat=now - 20, tenant="acme")
    by_tid = fake.mint("ten-b", iat=now - 20, tid="acme")
    other = fake.mint("ten-c", iat=now - 20, tid="globex")
    no_tenant = fake.mint("ten-d", iat=now - 20)
    for token in (by_tenant, by_tid, other, no_tenant):
        assert rcv.whoami(token).status_code == 200
    event = SessionRevoked(event_timestamp=now - 10)
    assert rcv.push(fake.sign(Subject.complex(tenant=Subject.opaque("acme")), event)).status_code == 202
    assert rcv.whoami(by_tenant).status_code == 401 and rcv.whoami(by_tid).status_code == 401
    assert rcv.whoami(other).status_code == 200 and rcv.whoami(no_tenant).status_code == 200
    assert rcv.whoami(fake.mint("ten-a", tenant="acme")).status_code == 200  # issued after


def test_token_claims_change_replaces_cached_claims(rcv: Running) -> None:
    fake = rcv.fake
    token = fake.mint("gina", role="admin")
    assert rcv.whoami(token).json()["claims"]["role"] == "admin"
    event = TokenClaimsChange(claims={"role": "ro-admin"})
    assert rcv.push(fake.sign(_user(rcv, "gina"), event)).status_code == 202
    assert rcv.whoami(token).json()["claims"]["role"] == "ro-admin"


def test_assurance_drop_asks_for_step_up(rcv: Running) -> None:
    fake = rcv.fake
    token = fake.mint("hank", acr="nist-aal2")
    assert rcv.whoami(token).status_code == 200
    event = AssuranceLevelChange(
        namespace="NIST-AAL",
        current_level="nist-aal1",
        previous_level="nist-aal2",
        change_direction="decrease",
    )
    assert rcv.push(fake.sign(_user(rcv, "hank"), event)).status_code == 202
    resp = rcv.whoami(token)
    assert resp.status_code == 401
    challenge = resp.headers["www-authenticate"]
    assert 'error="insufficient_user_authentication"' in challenge
    assert 'acr_values="nist-aal2"' in challenge
    assert resp.json()["error"] == "insufficient_user_authentication"


def test_risk_is_recorded_for_the_policy(rcv: Running) -> None:
    fake = rcv.fake
    token = fake.mint("ivy")
    event = RiskLevelChange(
        principal="USER", current_level="HIGH", risk_reason="PASSWORD_FOUND_IN_DATA_BREACH"
    )
    assert rcv.push(fake.sign(_user(rcv, "ivy"), event)).status_code == 202
    body = rcv.whoami(token).json()  # the default policy records, it does not deny
    assert body["state"]["risk_level"] == "HIGH"


@pytest.fixture
def strict_rcv(fake: FakeTransmitter, tmp_path: Path) -> Iterator[Running]:
    seen_networks: dict[str, str] = {}
    base = DefaultPolicy(required_acr="nist-aal2", max_age=300)

    def policy(claims: Mapping[str, Any], ctx: RequestContext, state: SubjectState) -> Decision:
        if state.risk_level == "HIGH" and "admin" in str(claims.get("scope", "")).split():
            return Decision.forbidden("high-risk users may not use admin scopes", scope="admin")
        sid = claims.get("sid")
        if isinstance(sid, str) and ctx.user_agent:
            first = seen_networks.setdefault(sid, ctx.user_agent)
            if first != ctx.user_agent:
                return Decision.deny("session seen from a new client")
        return base(claims, ctx, state)

    with run_receiver(fake, tmp_path, policy=policy) as running:
        running.wait(lambda: bool(running.receiver.verified_states), "verification")
        yield running


def test_custom_policy_sees_claims_context_and_state(strict_rcv: Running) -> None:
    rcv = strict_rcv
    fake = rcv.fake
    low = fake.mint("jack", acr="nist-aal1")
    resp = rcv.whoami(low)
    assert resp.status_code == 401
    assert 'acr_values="nist-aal2"' in resp.headers["www-authenticate"]
    assert "max_age=300" in resp.headers["www-authenticate"]
    admin = fake.mint("kim", acr="nist-aal2", scope="read admin", sid="k1")
    assert rcv.whoami(admin, **{"User-Agent": "ua-1"}).status_code == 200
    assert rcv.whoami(admin, **{"User-Agent": "ua-2"}).status_code == 401
    event = RiskLevelChange(principal="USER", current_level="HIGH")
    assert rcv.push(fake.sign(_user(rcv, "kim"), event)).status_code == 202
    resp = rcv.whoami(admin, **{"User-Agent": "ua-1"})
    assert resp.status_code == 403 and 'error="insufficient_scope"' in resp.headers["www-authenticate"]


def test_the_policy_sees_the_request_and_the_route_the_principal(
    fake: FakeTransmitter, tmp_path: Path
) -> None:
    seen: list[tuple[dict[str, Any], RequestContext, SubjectState]] = []

    def policy(claims: Mapping[str, Any], ctx: RequestContext, state: SubjectState) -> Decision:
        seen.append((dict(claims), ctx, state))
        return (
            Decision.deny("from a network this session never used") if ctx.header("x-net") == "new" else ALLOW
        )

    with run_receiver(fake, tmp_path, policy=policy, verify_on_start=False) as rcv:
        rcv.wait(lambda: rcv.receiver.verifier is not None, "ready")
        event = DeviceComplianceChange(previous_status="compliant", current_status="not-compliant")
        subject = Subject.complex(user=_user(rcv, "pol"), device=Subject.opaque("pol-dev"))
        risk = RiskLevelChange(principal="USER", current_level="MEDIUM")
        assert rcv.push(fake.sign(_user(rcv, "pol"), risk)).status_code == 202
        token = fake.mint("pol", sid="pol-s", device_id="pol-ok", team="blue")
        resp = rcv.whoami(token, **{"User-Agent": "ua-pol", "X-Net": "home"})
        assert resp.status_code == 200 and resp.json()["sub"] == "pol"  # the principal reached the route
        claims, ctx, state = seen[-1]
        assert (claims["sub"], claims["sid"], claims["team"]) == ("pol", "pol-s", "blue")
        assert (ctx.method, ctx.path, ctx.client, ctx.user_agent) == (
            "GET",
            "/protected/whoami",
            "127.0.0.1",
            "ua-pol",
        )
        assert state.risk_level == "MEDIUM" and state.device_compliant
        assert rcv.push(fake.sign(subject, event)).status_code == 202
        on_bad_device = fake.mint("pol", device_id="pol-dev")
        assert rcv.whoami(on_bad_device).status_code == 200  # compliance is the policy's call
        assert seen[-1][2].device_compliant is False
        resp = rcv.whoami(token, **{"X-Net": "new"})
        assert resp.status_code == 401 and "never used" in resp.json()["error_description"]


def test_access_tokens_follow_the_authorization_servers_key_rotation_at_a_bounded_rate(
    fake: FakeTransmitter, tmp_path: Path
) -> None:
    with run_receiver(fake, tmp_path, verify_on_start=False, jwks_min_refresh_interval=3.0) as rcv:
        rcv.wait(lambda: rcv.receiver.verifier is not None, "ready")
        validator = rcv.receiver.token_validator
        assert isinstance(validator, CompositeValidator) and validator.jwt is not None
        jwks = validator.jwt.jwks
        real = fake.idp_key
        junk = []
        for key in [generate_signing_key("RS256", kid=f"junk-{i}") for i in range(8)]:
            fake.idp_key = key
            junk.append(fake.mint("rot"))
        fake.idp_key = generate_signing_key("RS256", kid=real.kid)  # a known kid, another key
        forged = fake.mint("rot")
        fake.idp_key = real
        assert rcv.whoami(fake.mint("rot")).status_code == 200
        fetched = jwks.fetches
        time.sleep(3.1)
        fake.idp_key = generate_signing_key("RS256", kid="idp-2")  # the AS rotates its key
        assert rcv.whoami(fake.mint("rot")).status_code == 200  # unknown kid: fetched again
        assert jwks.fetches == fetched + 1
        for token in [forged, *junk]:  # refused; the unknown kids within the interval fetch nothing
            assert rcv.whoami(token).status_code == 401
        assert jwks.fetches == fetched + 1
        other_issuer = fake.mint("rot", iss="https://other-as.example")
        assert rcv.whoami(other_issuer).status_code == 401


@pytest.mark.parametrize(
    "claims",
    [{"sid": 123}, {"sid": ""}, {"device_id": ["d1"]}, {"tenant": {"id": "t"}}, {"tid": 7}, {"email": 1}],
)
def test_a_token_with_a_subject_claim_of_the_wrong_type_is_refused(
    rcv: Running, claims: dict[str, Any]
) -> None:
    # Taken as absent, such a claim would leave the token out of its session's, device's or
    # tenant's revocations: fail closed.
    assert rcv.whoami(rcv.fake.mint("typed", **claims)).status_code == 401
    assert rcv.whoami(rcv.fake.mint("typed", sid="s-ok", device_id="d-ok", tid="t-ok")).status_code == 200


def test_policy_allow_constant_is_an_allow() -> None:
    assert ALLOW.allow and not Decision.deny("x").allow


def _introspecting(
    fake: FakeTransmitter, tmp_path: Path, **over: Any
) -> contextlib.AbstractContextManager[Running]:
    """A receiver that checks opaque tokens at the fake AS's introspection endpoint."""
    values: dict[str, Any] = {
        "token_jwks_url": None,
        "introspection_url": fake.base + "/as/introspect",
        "introspection_client_id": "rs",
        "introspection_client_secret": "rs-secret",
        **over,
    }
    return run_receiver(fake, tmp_path, **values)


def test_introspection_tokens(fake: FakeTransmitter, tmp_path: Path) -> None:
    with _introspecting(fake, tmp_path, introspection_ttl=60) as rcv:
        rcv.wait(lambda: bool(rcv.receiver.verified_states), "verification")
        token = fake.opaque_token("lena", sid="ls-1")
        assert rcv.whoami(token).status_code == 200
        assert rcv.whoami(token).status_code == 200
        assert fake.introspection_calls == 1  # cached within the TTL
        inactive = fake.opaque_token("lena", active=False)
        assert rcv.whoami(inactive).status_code == 401
        assert rcv.push(fake.sign(Subject.opaque("ls-1"), SessionRevoked())).status_code == 202
        assert token not in rcv.receiver.tokens  # evicted at once by the event
        assert rcv.whoami(token).status_code == 401


def test_introspection_answers_are_kept_for_their_ttl_only(fake: FakeTransmitter, tmp_path: Path) -> None:
    """An active answer is reused for INTROSPECTION_TTL, an inactive one for the negative TTL;
    past them the AS is asked again and its new answer holds."""
    with _introspecting(
        fake, tmp_path, verify_on_start=False, introspection_ttl=2.0, introspection_negative_ttl=1.2
    ) as rcv:
        token = fake.opaque_token("tina")
        assert rcv.whoami(token).status_code == 200
        fake.introspected[token]["active"] = False  # revoked at the AS, no event sent
        assert rcv.whoami(token).status_code == 200 and fake.introspection_calls == 1
        time.sleep(2.1)
        assert rcv.whoami(token).status_code == 401 and fake.introspection_calls == 2
        assert rcv.whoami(token).status_code == 401 and fake.introspection_calls == 2  # negative cache
        fake.introspected[token]["active"] = True
        time.sleep(1.3)
        assert rcv.whoami(token).status_code == 200 and fake.introspection_calls == 3


def test_an_introspected_token_for_another_audience_is_refused(fake: FakeTransmitter, tmp_path: Path) -> None:
    with _introspecting(fake, tmp_path, verify_on_start=False) as rcv:
        assert rcv.receiver.settings.token_audience == AUDIENCE
        assert rcv.whoami(fake.opaque_token("aud-a", aud="https://other-api.example")).status_code == 401
        assert (
            rcv.whoami(fake.opaque_token("aud-b", aud=["https://other-api.example", AUDIENCE])).status_code
            == 200
        )
        assert rcv.whoami(fake.opaque_token("aud-c", aud=AUDIENCE)).status_code == 200
        assert rcv.whoami(fake.opaque_token("aud-d")).status_code == 200  # the answer names none
        assert rcv.whoami(fake.opaque_token("typed", sid=42)).status_code == 401  # as for JWTs


def test_websocket_handshakes_are_judged_too(rcv: Running) -> None:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    from receiver.middleware import ContinuousAuthMiddleware
    from tests.support.services import serve

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(websocket.scope["ssf.principal"].sub)
        await websocket.close()

    app = ContinuousAuthMiddleware(Starlette(routes=[WebSocketRoute("/ws", ws)]), receiver=rcv.receiver)
    token = rcv.fake.mint("wendy", sid="w-1")
    with serve(app) as url:
        ws_url = url.replace("http://", "ws://") + "/ws"
        with connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}) as conn:
            assert conn.recv() == "wendy"
        with pytest.raises(InvalidStatus):
            connect(ws_url)
        assert rcv.push(rcv.fake.sign(Subject.opaque("w-1"), SessionRevoked())).status_code == 202
        with pytest.raises(InvalidStatus):
            connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"})


def test_library_use_in_a_third_party_app(fake: FakeTransmitter, tmp_path: Path) -> None:
    """The receiver package's documented use: any FastAPI app, its own routes, our middleware."""
    import httpx
    from fastapi import FastAPI

    from receiver import ContinuousAuthMiddleware, Receiver
    from receiver.push import push_route
    from tests.receiver.conftest import receiver_settings
    from tests.support.services import free_port, serve

    port = free_port()
    receiver = Receiver(receiver_settings(fake, tmp_path, port))
    app = FastAPI(lifespan=receiver.lifespan)
    app.router.routes.append(push_route(receiver))

    @app.get("/items")
    async def items(request: Request) -> dict[str, Any]:
        return {"owner": request.state.principal.sub}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"ok": "yes"}

    app.add_middleware(ContinuousAuthMiddleware, receiver=receiver, exclude=["/healthz", "/ssf/push"])
    with serve(app, port=port) as url, httpx.Client(base_url=url) as http:
        token = fake.mint("tara", sid="t-9")
        assert http.get("/healthz").status_code == 200
        assert http.get("/items", headers={"Authorization": f"Bearer {token}"}).json() == {"owner": "tara"}
        deadline = time.monotonic() + 10
        while not receiver.verified_states and time.monotonic() < deadline:
            time.sleep(0.01)
        set_ = fake.sign(Subject.opaque("t-9"), SessionRevoked())
        pushed = http.post(
            "/ssf/push",
            content=set_,
            headers={
                "Authorization": receiver.push_authorization or "",
                "Content-Type": "application/secevent+jwt",
            },
        )
        assert pushed.status_code == 202
        assert http.get("/items", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_excluded_paths_are_whole_path_segments(rcv: Running) -> None:
    """``exclude=["/healthz"]`` opens /healthz and what lies under it, never /healthz-admin."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from receiver.middleware import ContinuousAuthMiddleware
    from tests.support.services import serve

    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    paths = ["/healthz", "/healthz/live", "/healthz-admin", "/ssf/push", "/ssf/pushed-secrets", "/public/a"]
    app = ContinuousAuthMiddleware(
        Starlette(routes=[Route(p, ok) for p in paths]),
        receiver=rcv.receiver,
        exclude=["/healthz", "/ssf/push", "/public/"],
    )
    with serve(app) as url, httpx.Client(base_url=url) as http:
        status = {p: http.get(p).status_code for p in paths}
    assert status == {
        "/healthz": 200,
        "/healthz/live": 200,
        "/healthz-admin": 401,
        "/ssf/push": 200,
        "/ssf/pushed-secrets": 401,
        "/public/a": 200,
    }


def test_the_policy_settings_reach_the_default_policy(fake: FakeTransmitter, tmp_path: Path) -> None:
    """REQUIRED_ACR, STEP_UP_MAX_AGE, ACR_ORDER and DENY_RISK_LEVELS, as an operator sets them."""
    with run_receiver(
        fake,
        tmp_path,
        verify_on_start=False,
        required_acr="silver",
        acr_order=["bronze", "silver", "gold"],
        step_up_max_age=120,
        deny_risk_levels=["HIGH"],
    ) as rcv:
        rcv.wait(lambda: rcv.receiver.verifier is not None, "ready")
        low = rcv.whoami(fake.mint("setty", acr="bronze"))
        assert low.status_code == 401
        challenge = low.headers["www-authenticate"]
        assert 'error="insufficient_user_authentication"' in challenge
        assert 'acr_values="silver"' in challenge and "max_age=120" in challenge
        token = fake.mint("setty", acr="gold")
        assert rcv.whoami(token).status_code == 200
        medium = RiskLevelChange(principal="USER", current_level="MEDIUM")
        assert rcv.push(fake.sign(_user(rcv, "setty"), medium)).status_code == 202
        assert rcv.whoami(token).status_code == 200
        high = RiskLevelChange(principal="USER", current_level="HIGH")
        assert rcv.push(fake.sign(_user(rcv, "setty"), high)).status_code == 202
        refused = rcv.whoami(token)
        assert refused.status_code == 401 and "risk level HIGH" in refused.json()["error_description"]
