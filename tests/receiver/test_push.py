"""RFC 8935 push endpoint over real HTTP: 202 only after apply, 400 codes, dedupe, verification."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jws

from receiver.app import create_app
from receiver.core import Receiver
from receiver.state import is_revoked
from receiver.store import MemoryStore, WriteBatch
from ssf import uris
from ssf.events import (
    EVENT_MODELS,
    CredentialChange,
    SessionRevoked,
    StreamUpdated,
    Verification,
    example_payload,
)
from ssf.keys import generate_signing_key
from ssf.set import SecurityEventToken, sign_set
from ssf.subjects import Subject
from tests.receiver.conftest import Running, receiver_settings, run_receiver
from tests.receiver.fake import FakeTransmitter
from tests.support.services import free_port, serve

USER = "alice"


def _sid(rcv: Running) -> str:
    assert rcv.receiver.stream_id
    return rcv.receiver.stream_id


def test_startup_created_a_push_stream_and_verified_it(rcv: Running) -> None:
    fake = rcv.fake
    (stream,) = fake.streams.values()
    assert stream["delivery"]["method"] == uris.PUSH
    assert stream["delivery"]["endpoint_url"] == f"{rcv.url}/ssf/push"
    assert stream["delivery"]["authorization_header"] == rcv.receiver.push_authorization
    # The state the receiver asked for came back in a pushed verification SET and got 202.
    assert fake.verifications and fake.verifications[-1] in rcv.receiver.verified_states
    rcv.wait(lambda: bool(fake.push_results), "the verification push's answer")
    assert fake.push_results[-1][0] == 202
    # Create body held no transmitter-supplied property; the token asked for both scopes.
    create = next(body for method, _, body in fake.requests if method == "POST")
    assert set(create) <= {"events_requested", "delivery", "description"}
    assert fake.token_scopes == ["ssf.read ssf.manage"]
    health = rcv.http.get("/health").json()
    assert health["ready"] and health["verified"] and health["stream_id"] == _sid(rcv)


def test_valid_set_is_202_with_empty_body_and_applied(rcv: Running) -> None:
    token = rcv.fake.mint(USER, sid="s-1")
    assert rcv.whoami(token).status_code == 200
    set_ = rcv.fake.sign(Subject.opaque("s-1"), SessionRevoked(initiating_entity="policy"))
    resp = rcv.push(set_)
    assert resp.status_code == 202 and resp.content == b""
    # The very next request with a token of that session is refused.
    refused = rcv.whoami(token)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]


@pytest.mark.parametrize("ctype", ["application/json", "text/plain", "application/jwt"])
def test_a_set_sent_as_another_media_type_is_refused_and_changes_nothing(rcv: Running, ctype: str) -> None:
    token = rcv.fake.mint(USER, sid=f"s-ct-{ctype}")
    set_ = rcv.fake.sign(Subject.opaque(f"s-ct-{ctype}"), SessionRevoked())
    resp = rcv.push(set_, **{"Content-Type": ctype})
    assert resp.status_code == 400
    assert resp.json()["err"] == "invalid_request"
    assert rcv.whoami(token).status_code == 200
    # The same SET with the RFC 8935 media type (parameters allowed) is applied.
    assert rcv.push(set_, **{"Content-Type": "Application/SecEvent+JWT; charset=utf-8"}).status_code == 202
    assert rcv.whoami(token).status_code == 401


@pytest.mark.parametrize("auth", [None, "Bearer wrong", False])
def test_push_without_the_configured_authorization_is_refused(rcv: Running, auth: object) -> None:
    set_ = rcv.fake.sign(Subject.opaque("s-x"), SessionRevoked())
    resp = rcv.push(set_, auth=auth)  # type: ignore[arg-type]
    assert resp.status_code == 401
    assert resp.json()["err"] == "authentication_failed"
    assert rcv.receiver.state.cutoffs.get("o:s-x") is None


def test_identical_resend_is_202_and_changes_nothing(rcv: Running) -> None:
    set_ = rcv.fake.sign(
        Subject.iss_sub(rcv.fake.base + "/as", USER),
        CredentialChange(credential_type="password", change_type="update", event_timestamp=1000),
    )
    assert rcv.push(set_).status_code == 202
    gen = rcv.receiver.state.generation
    accepted = rcv.receiver.stats["accepted"]
    assert rcv.push(set_).status_code == 202
    assert rcv.receiver.state.generation == gen
    assert rcv.receiver.stats["accepted"] == accepted
    assert rcv.receiver.stats["duplicate"] >= 1


def test_a_different_set_reusing_a_jti_is_refused(rcv: Running) -> None:
    first = rcv.fake.sign(Subject.opaque("s-a"), SessionRevoked(), jti="same-jti")
    second = rcv.fake.sign(Subject.opaque("s-b"), SessionRevoked(), jti="same-jti")
    assert rcv.push(first).status_code == 202
    resp = rcv.push(second)
    assert resp.status_code == 400
    assert resp.json()["err"] == "invalid_request"
    assert "o:s-b" not in rcv.receiver.state.cutoffs


def test_wrong_verification_state_is_invalid_state(rcv: Running) -> None:
    bad = rcv.fake.sign(Subject.opaque(_sid(rcv)), Verification(state="not-ours"))
    resp = rcv.push(bad)
    assert resp.status_code == 400
    assert resp.json() == {"err": "invalid_state", "description": resp.json()["description"]}
    # A transmitter-initiated verification (no state) is fine.
    before = rcv.receiver.unsolicited_verifications
    assert rcv.push(rcv.fake.sign(Subject.opaque(_sid(rcv)), Verification())).status_code == 202
    assert rcv.receiver.unsolicited_verifications == before + 1


def test_error_codes(rcv: Running) -> None:
    fake = rcv.fake
    subject = Subject.opaque("s-err")
    other_key = generate_signing_key("ES256", kid="t-1")  # same kid, different key
    cases = {
        "authentication_failed": fake.sign(subject, SessionRevoked(), key=other_key),
        "invalid_audience": fake.sign(subject, SessionRevoked(), aud="https://someone-else.example"),
        "invalid_key": fake.sign(subject, SessionRevoked(), key=generate_signing_key("ES256", kid="nope")),
        "invalid_request": "not.a.set",
    }
    wrong_iss = SecurityEventToken.create(
        iss="https://evil.example", aud=fake.stream_aud, sub_id=subject, event=SessionRevoked()
    )
    cases["invalid_issuer"] = sign_set(wrong_iss, fake.keys.active)
    for err, token in cases.items():
        resp = rcv.push(token)
        assert resp.status_code == 400, err
        assert resp.headers["content-type"].startswith("application/json")
        body = resp.json()
        assert body["err"] == err and isinstance(body["description"], str)
    assert "o:s-err" not in rcv.receiver.state.cutoffs


def test_future_iat_and_oversized_sets_are_refused(rcv: Running) -> None:
    fake = rcv.fake
    future = fake.sign(Subject.opaque("s-f"), SessionRevoked(), iat=int(time.time()) + 3600)
    assert rcv.push(future).json()["err"] == "invalid_request"
    huge = "a" * (rcv.receiver.settings.max_set_bytes + 2048)
    resp = rcv.push(huge)
    assert resp.status_code == 400 and resp.json()["err"] == "invalid_request"


def test_every_supported_event_type_gets_202(rcv: Running) -> None:
    """The conformance suite's supported-events test: 202 for each, even those we only record."""
    fake = rcv.fake
    for uri in EVENT_MODELS:
        if uri == uris.VERIFICATION:
            continue
        subject = Subject.email("valid@example.com")
        token = fake.sign_uri(subject, uri, example_payload(uri))
        resp = rcv.push(token)
        assert resp.status_code == 202, (uri, resp.text)


def test_unknown_event_type_and_unrelated_subjects_still_202(rcv: Running) -> None:
    token = SecurityEventToken.create(
        iss=rcv.fake.issuer,
        aud=rcv.fake.stream_aud,
        sub_id=Subject.opaque("nobody"),
        event=SessionRevoked(),
        event_type="https://example.com/event-type/custom",
    )
    assert rcv.push(sign_set(token, rcv.fake.keys.active)).status_code == 202


def test_key_rotation_refetches_the_jwks_once(rcv: Running) -> None:
    fake = rcv.fake
    before = fake.jwks_fetches
    new = fake.rotate("RS256", kid="t-2")
    time.sleep(0.25)  # past the configured minimum refresh interval
    token = fake.sign(Subject.opaque("s-rot"), SessionRevoked(), key=new)
    assert rcv.push(token).status_code == 202
    assert fake.jwks_fetches == before + 1
    # Garbage kids cannot make the receiver hammer the transmitter: at most one fetch per interval.
    junk = [
        fake.sign(Subject.opaque("s-j"), SessionRevoked(), key=generate_signing_key("ES256", kid=f"j{i}"))
        for i in range(20)
    ]
    started = time.monotonic()
    for token in junk:
        assert rcv.push(token).json()["err"] == "invalid_key"
    intervals = (time.monotonic() - started) / rcv.receiver.settings.jwks_min_refresh_interval
    assert fake.jwks_fetches - (before + 1) <= intervals + 1


def test_subject_inside_the_event_dialect_is_accepted(rcv: Running) -> None:
    """Pre-1.0 CAEP put the subject inside the event; both dialects must apply."""
    from joserfc import jws

    fake = rcv.fake
    claims = {
        "iss": fake.issuer,
        "jti": "legacy-1",
        "iat": int(time.time()),
        "aud": fake.stream_aud,
        "events": {
            SessionRevoked.event_type: {
                "subject": {"subject_type": "opaque", "id": "s-legacy"},
                "event_timestamp": int(time.time()),
            }
        },
    }
    key = fake.keys.active
    header = {"alg": key.alg, "typ": "secevent+jwt", "kid": key.kid}
    token = jws.serialize_compact(header, json.dumps(claims).encode(), key.key, algorithms=[key.alg])
    assert rcv.push(token).status_code == 202
    assert is_revoked(rcv.receiver.state.cutoffs["o:s-legacy"])


def test_critical_subject_members_we_cannot_process_discard_the_event(
    fake_factory: Callable[..., FakeTransmitter], tmp_path: Path
) -> None:
    fake = fake_factory(critical_subject_members=["group", "user"])
    with run_receiver(fake, tmp_path) as rcv:
        rcv.wait(lambda: bool(rcv.receiver.verified_states), "verification")
        user = Subject.iss_sub(fake.base + "/as", "gus")
        token = fake.mint("gus")
        with_group = Subject.complex(user=user, group=Subject.opaque("admins"))
        assert rcv.push(fake.sign(with_group, SessionRevoked())).status_code == 202  # valid SET: 202
        assert rcv.whoami(token).status_code == 200  # ... but discarded (SSF §3.6)
        assert rcv.receiver.stats["discarded_critical"] == 1
        with_tenant = Subject.complex(user=user, tenant=Subject.opaque("t1"))  # 'user' is understood
        assert rcv.push(fake.sign(with_tenant, SessionRevoked())).status_code == 202
        assert rcv.whoami(token).status_code == 401


class FlakyStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail = True

    async def commit(self, batch: WriteBatch) -> None:
        if self.fail:
            raise OSError("disk full")
        await super().commit(batch)


def test_storage_failure_is_503_and_the_retry_is_applied(fake: FakeTransmitter, tmp_path: Path) -> None:
    store = FlakyStore()
    settings = receiver_settings(fake, tmp_path, free_port(), database_url="memory", verify_on_start=False)
    receiver = Receiver(settings, store=store)
    with serve(create_app(settings, receiver=receiver)) as url, httpx.Client(base_url=url) as http:
        token = fake.sign(Subject.opaque("flaky-1"), SessionRevoked())
        headers = {
            "Authorization": receiver.push_authorization or "",
            "Content-Type": "application/secevent+jwt",
        }
        resp = http.post("/ssf/push", content=token, headers=headers)
        assert resp.status_code == 503 and resp.json()["err"] == "temporarily_unavailable"
        assert "Retry-After" in resp.headers
        store.fail = False
        assert http.post("/ssf/push", content=token, headers=headers).status_code == 202
        assert store.commits == 1  # the retry was applied and stored, not taken for a duplicate


class SlowStore(MemoryStore):
    """The first commit takes ``delay`` seconds, then fails or succeeds; records stored jtis."""

    def __init__(self, delay: float, first_fails: bool) -> None:
        super().__init__()
        self.delay, self.first_fails = delay, first_fails
        self.stored: list[str] = []

    async def commit(self, batch: WriteBatch) -> None:
        first = self.commits == 0
        self.commits += 1
        if first:
            await asyncio.sleep(self.delay)
            if self.first_fails:
                raise OSError("disk full")
        self.stored += [jti for jti, _, _ in batch.jtis]


@pytest.mark.parametrize("first_fails", [False, True], ids=["first-stored", "first-failed"])
def test_a_resend_while_the_first_is_being_stored_waits_for_it(
    fake: FakeTransmitter, tmp_path: Path, first_fails: bool
) -> None:
    """RFC 8935: 202 means the SET is ours. A transmitter's retry arriving while the first copy
    is still being stored is answered once that store is done, never before; if it failed,
    the retry stores the SET itself."""
    store = SlowStore(0.8, first_fails)
    settings = receiver_settings(fake, tmp_path, free_port(), database_url="memory", verify_on_start=False)
    receiver = Receiver(settings, store=store)
    token = fake.sign(Subject.opaque("slow-1"), SessionRevoked(), jti="slow-1")
    answers: dict[str, tuple[int, float]] = {}

    def push(name: str, url: str) -> None:
        headers = {
            "Authorization": receiver.push_authorization or "",
            "Content-Type": "application/secevent+jwt",
        }
        with httpx.Client(base_url=url, timeout=10) as http:
            resp = http.post("/ssf/push", content=token, headers=headers)
        answers[name] = (resp.status_code, time.monotonic())

    with serve(create_app(settings, receiver=receiver)) as url:
        first = threading.Thread(target=push, args=("first", url))
        first.start()
        time.sleep(0.3)  # the first is inside its slow commit
        retry = threading.Thread(target=push, args=("retry", url))
        retry.start()
        first.join(10)
        retry.join(10)
    assert answers["first"][0] == (503 if first_fails else 202)
    assert answers["retry"][0] == 202
    assert answers["retry"][1] >= answers["first"][1] - 0.05  # not answered before the first
    assert store.stored == ["slow-1"]


def test_metrics_count_sets_and_requests(rcv: Running) -> None:
    token = rcv.fake.mint("mona", sid="mo-1")
    assert rcv.whoami(token).status_code == 200
    assert rcv.push(rcv.fake.sign(Subject.opaque("mo-1"), SessionRevoked())).status_code == 202
    assert rcv.whoami(token).status_code == 401
    text = rcv.http.get("/metrics").text
    assert 'ssf_receiver_sets_total{outcome="accepted"}' in text
    assert 'ssf_receiver_requests_total{outcome="refused",error="invalid_token"}' in text
    assert 'ssf_receiver_requests_total{outcome="authorized"}' in text
    assert "ssf_receiver_ready 1" in text


def _raw_set(fake: FakeTransmitter, claims: dict[str, object], **header: object) -> str:
    """A SET signed with the transmitter's key, with any header and claims (for what
    ``SecurityEventToken.create`` would never make)."""
    key = fake.keys.active
    now = int(time.time())
    body = {
        "iss": fake.issuer,
        "jti": "raw-" + str(time.monotonic_ns()),
        "iat": now,
        "aud": fake.stream_aud,
        "sub_id": {"format": "opaque", "id": "s-raw"},
        "events": {SessionRevoked.event_type: {}},
        **claims,
    }
    head = {k: v for k, v in {"alg": key.alg, "kid": key.kid, "typ": "secevent+jwt", **header}.items() if v}
    return jws.serialize_compact(head, json.dumps(body).encode(), key.key, algorithms=[key.alg])


def test_the_configured_validation_settings_hold_on_the_wire(fake: FakeTransmitter, tmp_path: Path) -> None:
    """SET_ALGORITHMS, CLOCK_SKEW and MAX_SET_BYTES reach the verifier; ``typ`` and the
    claims an SSF SET must not carry are refused; nothing refused changes the state."""
    assert fake.keys.active.alg == "ES256"
    with run_receiver(fake, tmp_path, verify_on_start=False, clock_skew=60, max_set_bytes=2048) as rcv:
        rcv.wait(lambda: rcv.receiver.verifier is not None, "ready")
        now = int(time.time())
        assert rcv.push(_raw_set(fake, {"iat": now + 50, "jti": "in-skew"})).status_code == 202
        refused = {
            "beyond-skew": _raw_set(fake, {"iat": now + 120}),
            "typ-jwt": _raw_set(fake, {}, typ="JWT"),
            "no-typ": _raw_set(fake, {}, typ=None),
            "sub": _raw_set(fake, {"sub": "alice"}),
            "exp": _raw_set(fake, {"exp": now + 600}),
            "too-large": _raw_set(fake, {"pad": "x" * 1500}),
        }
        assert 2048 < len(refused["too-large"]) < 2048 + 1024  # past the limit, within the headroom
        for name, token in refused.items():
            resp = rcv.push(token)
            assert resp.status_code == 400, name
            assert resp.json()["err"] == "invalid_request", name
        assert "o:s-raw" in rcv.receiver.state.cutoffs  # the one accepted SET
    (tmp_path / "rs").mkdir()
    strict: dict[str, Any] = {"verify_on_start": False, "set_algorithms": ["RS256", "PS256"]}
    with run_receiver(fake, tmp_path / "rs", **strict) as rcv:
        rcv.wait(lambda: rcv.receiver.verifier is not None, "ready")
        resp = rcv.push(_raw_set(fake, {"sub_id": {"format": "opaque", "id": "s-es256"}}))
        assert resp.status_code == 400 and resp.json()["err"] == "invalid_key"
        assert "o:s-es256" not in rcv.receiver.state.cutoffs


def test_stream_updated_sets_the_status_of_our_stream_only(rcv: Running) -> None:
    fake = rcv.fake
    for subject in (Subject.opaque("someone-elses-stream"), Subject.email("x@example.com")):
        other = fake.sign(subject, StreamUpdated(status="disabled"))
        assert rcv.push(other).status_code == 202  # valid, not ours: accepted, not acted on
        assert rcv.http.get("/health").json()["stream_status"] != "disabled"
    ours = fake.sign(Subject.opaque(_sid(rcv)), StreamUpdated(status="paused", reason="maintenance"))
    assert rcv.push(ours).status_code == 202
    assert rcv.http.get("/health").json()["stream_status"] == "paused"
    enabled = fake.sign(Subject.opaque(_sid(rcv)), StreamUpdated(status="enabled"))
    assert rcv.push(enabled).status_code == 202
    assert rcv.http.get("/health").json()["stream_status"] == "enabled"
