"""Talking to a transmitter: discovery, the management client, reconciliation, out of band."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from receiver.client import (
    ClientCredentials,
    StaticToken,
    TransmitterClient,
    TransmitterError,
    retry_after_seconds,
)
from receiver.core import Receiver
from receiver.discovery import DiscoveryError, discover, discover_token_endpoint
from receiver.reconcile import desired_config, reconcile
from receiver.settings import ReceiverSettings
from receiver.state import is_revoked
from receiver.store import MemoryStore
from ssf import uris
from ssf.events import CredentialChange, SessionRevoked
from ssf.stream import TRANSMITTER_SUPPLIED, StreamConfiguration
from ssf.subjects import Subject
from tests.receiver.conftest import receiver_settings, run_receiver
from tests.receiver.fake import CLIENT_ID, CLIENT_SECRET, FakeTransmitter
from tests.support.services import free_port, serve


async def test_discovery_uses_path_insertion(fake: FakeTransmitter) -> None:
    async with httpx.AsyncClient() as http:
        meta = await discover(http, fake.issuer, dev_mode=True)
    assert meta.issuer == fake.issuer
    assert meta.jwks_uri == f"{fake.issuer}/jwks"


async def test_discovery_falls_back_to_risc_configuration(
    fake_factory: Callable[..., FakeTransmitter],
) -> None:
    fake = fake_factory(legacy_discovery=True)
    async with httpx.AsyncClient() as http:
        meta = await discover(http, fake.issuer, dev_mode=True)
    assert meta.issuer == fake.issuer


async def test_discovery_refuses_a_different_issuer(fake_factory: Callable[..., FakeTransmitter]) -> None:
    fake = fake_factory(issuer_override="https://evil.example/tenant1")
    async with httpx.AsyncClient() as http:
        with pytest.raises(DiscoveryError, match="issuer"):
            await discover(http, fake.issuer, dev_mode=True)


async def test_discovery_requires_https_outside_dev_mode(fake: FakeTransmitter) -> None:
    async with httpx.AsyncClient() as http:
        with pytest.raises(DiscoveryError, match="https"):
            await discover(http, fake.issuer, dev_mode=False)
        with pytest.raises(DiscoveryError):
            await discover(http, fake.base + "/nope", dev_mode=True)


async def test_a_discovered_token_endpoint_must_be_https_outside_dev_mode(fake: FakeTransmitter) -> None:
    """The client secret goes there: an http token endpoint is refused unless in dev mode."""
    async with httpx.AsyncClient() as http:
        with pytest.raises(DiscoveryError, match="token_endpoint must be an https URL"):
            await discover_token_endpoint(http, fake.issuer, dev_mode=False)
        assert await discover_token_endpoint(http, fake.issuer, dev_mode=True) == f"{fake.issuer}/token"
        assert await discover_token_endpoint(http, fake.issuer) == f"{fake.issuer}/token"  # http issuer


async def test_an_http_poll_endpoint_is_not_polled_outside_dev_mode(fake: FakeTransmitter) -> None:
    """Every poll carries the receiver's bearer token: the transmitter's endpoint_url must be https."""
    rcv = Receiver(
        ReceiverSettings(database_url="memory", delivery="poll", verify_on_start=False), store=MemoryStore()
    )
    async with httpx.AsyncClient() as http:
        rcv.client = await _client(fake, http)
        rcv.stream = StreamConfiguration.model_validate(
            fake._config("s-http", {"delivery": {"method": uris.POLL}})
        )
        assert (rcv.stream.delivery.endpoint_url or "").startswith("http://")
        await asyncio.wait_for(rcv._after_start(), timeout=5)
    assert rcv.poller is None and "https" in (rcv.error or "")
    assert not [u for m, u, _ in fake.requests if "/events" in u]


def _poll_config() -> dict[str, Any]:
    """A poll stream for session-revoked, as reconcile would ask for it."""
    return desired_config(
        events=[SessionRevoked.event_type],
        delivery="poll",
        push_url=None,
        push_authorization=None,
        description="t",
    )


async def _client(fake: FakeTransmitter, http: httpx.AsyncClient) -> TransmitterClient:
    meta = await discover(http, fake.issuer, dev_mode=True)
    creds = ClientCredentials(http, f"{fake.issuer}/token", CLIENT_ID, CLIENT_SECRET, "ssf.read ssf.manage")
    return TransmitterClient(meta, http, creds)


async def test_the_whole_management_api(fake: FakeTransmitter) -> None:
    async with httpx.AsyncClient() as http:
        client = await _client(fake, http)
        desired = _poll_config()
        cfg = await client.create(desired)
        sid = cfg.stream_id
        assert (await client.read(sid)) == cfg
        assert [c.stream_id for c in await client.list()] == [sid]
        updated = await client.update(sid, {"description": "changed"})
        assert updated is not None and updated.description == "changed"
        replaced = await client.replace(sid, desired)
        assert replaced is not None and replaced.description == "t"
        assert (await client.get_status(sid)).status == "enabled"
        status = await client.set_status(sid, "paused", "maintenance")
        assert status is not None and status.status == "paused"
        await client.add_subject(sid, Subject.email("a@example.com"), verified=True)
        await client.remove_subject(sid, Subject.email("a@example.com"))
        await client.verify(sid, "st-1")
        assert fake.verifications == ["st-1"]
        await client.delete(sid)
        assert await client.read(sid) is None
        # Reads/deletes name the stream in the query; no body held a transmitter-supplied property.
        for method, url, body in fake.requests:
            if method in ("DELETE",) or (method == "GET" and "stream_id" in url):
                assert "stream_id=" in url
            if isinstance(body, dict) and method in ("POST", "PATCH", "PUT"):
                assert not set(body) & {"iss", "aud", "events_supported", "events_delivered"}
        assert fake.token_scopes == ["ssf.read ssf.manage"]  # one token, reused


async def test_responses_naming_another_issuer_are_refused(fake: FakeTransmitter) -> None:
    async with httpx.AsyncClient() as http:
        client = await _client(fake, http)
        cfg = await client.create({"events_requested": [], "delivery": {"method": uris.POLL}})
        fake.streams[cfg.stream_id]["iss"] = "https://evil.example"
        with pytest.raises(TransmitterError, match="iss"):
            await client.read(cfg.stream_id)


async def test_transmitter_supplied_properties_are_never_sent(fake: FakeTransmitter) -> None:
    """A configuration read back (iss, aud, events_supported, events_delivered, stream_id …) can
    be handed to create, PATCH and PUT: none of those goes out (the fake answers 400 if one
    does), but a PATCH and PUT name the stream."""
    async with httpx.AsyncClient() as http:
        client = await _client(fake, http)
        desired = _poll_config()
        full = (await client.create(desired)).to_json()
        sid = full["stream_id"]
        assert {"iss", "aud", "events_supported", "events_delivered"} <= set(full)
        assert (await client.update(sid, {**full, "description": "patched"})) is not None
        assert (await client.replace(sid, {**full, "description": "put"})) is not None
        await client.delete(sid)
        again = await client.create(full)
        assert again.stream_id != sid
        sent = [(m, b) for m, _, b in fake.requests if m in ("POST", "PATCH", "PUT")]
        assert [m for m, _ in sent] == ["POST", "PATCH", "PUT", "POST"]
        for method, body in sent:
            assert not set(body) & (TRANSMITTER_SUPPLIED - {"stream_id"}), method
            assert ("stream_id" in body) == (method != "POST"), method


async def test_every_configuration_answer_naming_another_issuer_is_refused(
    fake: FakeTransmitter, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with httpx.AsyncClient() as http:
        client = await _client(fake, http)
        sid = (await client.create({"events_requested": [], "delivery": {"method": uris.POLL}})).stream_id
        made = fake._config

        def evil(stream_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
            return {**made(stream_id, body), "iss": "https://evil.example"}

        monkeypatch.setattr(fake, "_config", evil)
        with pytest.raises(TransmitterError, match="iss"):
            await client.update(sid, {"description": "x"})
        with pytest.raises(TransmitterError, match="iss"):
            await client.replace(sid, {"events_requested": [], "delivery": {"method": uris.POLL}})
        for call in (client.read(sid), client.list()):
            with pytest.raises(TransmitterError, match="iss"):
                await call
        fake.streams.clear()
        with pytest.raises(TransmitterError, match="iss"):
            await client.create({"events_requested": [], "delivery": {"method": uris.POLL}})


async def test_token_is_renewed_before_expiry_and_after_a_401(
    fake_factory: Callable[..., FakeTransmitter],
) -> None:
    short = fake_factory(token_lifetime=1)
    async with httpx.AsyncClient() as http:
        client = await _client(short, http)
        await client.list()
        await client.list()  # lifetime 1 s: renewed before each use
        assert len(short.tokens_issued) == 2
    fake = fake_factory(token_lifetime=3600)
    async with httpx.AsyncClient() as http:
        client = await _client(fake, http)
        await client.list()
        await client.list()  # a long-lived token is reused
        assert len(fake.tokens_issued) == 1
        fake.valid_tokens.clear()  # the transmitter forgets its tokens: 401, renew, retry once
        assert await client.list() == []
        assert len(fake.tokens_issued) == 2
        assert fake.requests[-2][0] == fake.requests[-1][0] == "GET"


async def test_static_token_and_unauthorized(fake: FakeTransmitter) -> None:
    async with httpx.AsyncClient() as http:
        meta = await discover(http, fake.issuer, dev_mode=True)
        client = TransmitterClient(meta, http, StaticToken("wrong"))
        with pytest.raises(TransmitterError) as info:
            await client.list()
        assert info.value.status == 401
        fake.valid_tokens.add("static-1")
        assert await TransmitterClient(meta, http, StaticToken("static-1")).list() == []


async def test_reconcile_reuses_the_stream_on_409_and_updates_it(fake: FakeTransmitter) -> None:
    async with httpx.AsyncClient() as http:
        client = await _client(fake, http)
        old = await client.create({"events_requested": ["x"], "delivery": {"method": uris.POLL}})
        desired = desired_config(
            events=[SessionRevoked.event_type],
            delivery="push",
            push_url="http://127.0.0.1:1/ssf/push",
            push_authorization="Bearer abc",
            description=None,
        )
        cfg = await reconcile(client, desired)
        assert cfg.stream_id == old.stream_id
        assert cfg.delivery.method == uris.PUSH and cfg.delivery.authorization_header == "Bearer abc"
        assert cfg.events_requested == [SessionRevoked.event_type]
        n = len(fake.requests)
        again = await reconcile(client, desired, stream_id=cfg.stream_id)
        assert again == cfg
        assert [m for m, _, _ in fake.requests[n:]] == ["GET"]  # nothing to change: one read


async def test_reconcile_falls_back_to_put_and_tolerates_405(
    fake_factory: Callable[..., FakeTransmitter],
) -> None:
    fake = fake_factory(patch_status=405)
    async with httpx.AsyncClient() as http:
        client = await _client(fake, http)
        old = await client.create({"events_requested": ["x"], "delivery": {"method": uris.POLL}})
        desired = desired_config(
            events=["y"], delivery="poll", push_url=None, push_authorization=None, description=None
        )
        cfg = await reconcile(client, desired)
        assert cfg.stream_id == old.stream_id
        assert [m for m, _, _ in fake.requests[-2:]] == ["PATCH", "PUT"]


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("garbage") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_out_of_band_only_discovers_and_accepts(fake: FakeTransmitter, tmp_path: Path) -> None:
    with run_receiver(fake, tmp_path, out_of_band=True, client_id=None, audience=fake.stream_aud) as rcv:
        assert rcv.receiver.verifier is not None
        assert fake.requests == [] and fake.tokens_issued == []  # no management call at all
        assert rcv.receiver.push_authorization is None
        resp = rcv.push(fake.sign(Subject.opaque("oob-1"), SessionRevoked()), auth=None)
        assert resp.status_code == 202
        assert is_revoked(rcv.receiver.state.cutoffs["o:oob-1"])


def test_jwt_access_tokens_need_an_audience_to_check() -> None:
    """RFC 9068 §4: without TOKEN_AUDIENCE a token issued for any other API would pass."""
    jwt: dict[str, Any] = {
        "database_url": "memory",
        "token_issuer": "https://as.example",
        "token_jwks_url": "https://as.example/j",
    }
    with pytest.raises(ValidationError, match="TOKEN_AUDIENCE"):
        ReceiverSettings(**jwt)
    assert (
        ReceiverSettings(**jwt, token_audience="https://api.example").token_audience == "https://api.example"
    )
    assert (
        ReceiverSettings(database_url="memory", introspection_url="https://as.example/i").token_audience
        is None
    )


def test_an_out_of_band_poll_stream_is_a_configuration_error() -> None:
    """Out of band there is no management client, so no poll loop: said at start, not ignored."""
    with pytest.raises(ValidationError, match="OUT_OF_BAND"):
        ReceiverSettings(database_url="memory", out_of_band=True, delivery="poll")
    assert ReceiverSettings(database_url="memory", out_of_band=True).delivery == "push"


def test_restart_reuses_the_stored_stream(fake: FakeTransmitter, tmp_path: Path) -> None:
    port = free_port()
    with run_receiver(fake, tmp_path, port=port) as rcv:
        first = rcv.receiver.stream_id
        credential = rcv.receiver.push_authorization
    n = len(fake.requests)
    with run_receiver(fake, tmp_path, port=port) as rcv:
        assert rcv.receiver.stream_id == first
        assert len(fake.streams) == 1
        assert rcv.http.get("/health").json()["stream_id"] == first
        # The generated push credential was kept, so the stream needed no update: one read.
        assert rcv.receiver.push_authorization == credential
        assert [m for m, _, _ in fake.requests[n:]] == ["GET"]


def test_a_restart_makes_changed_settings_true_and_verifies_afresh(
    fake: FakeTransmitter, tmp_path: Path
) -> None:
    """Events and push endpoint changed between two starts: the same stream is updated to
    them, and each start asks for verification with a state of its own."""
    with run_receiver(fake, tmp_path, events=[SessionRevoked.event_type]) as rcv:
        rcv.wait(lambda: bool(rcv.receiver.verified_states), "first verification")
        first, first_state = rcv.receiver.stream_id, fake.verifications[-1]
    n = len(fake.requests)
    events = sorted([SessionRevoked.event_type, CredentialChange.event_type])
    with run_receiver(fake, tmp_path, events=events) as rcv:  # another port: another push URL
        rcv.wait(lambda: bool(rcv.receiver.verified_states), "second verification")
        assert rcv.receiver.stream_id == first and len(fake.streams) == 1
        (stream,) = fake.streams.values()
        assert sorted(stream["events_requested"]) == events
        assert stream["delivery"]["endpoint_url"] == f"{rcv.url}/ssf/push"
        assert [m for m, _, _ in fake.requests[n:]][:2] == ["GET", "PATCH"]
        second_state = fake.verifications[-1]
        assert second_state != first_state and list(rcv.receiver.verified_states) == [second_state]


async def test_startup_fails_cleanly_without_a_transmitter(tmp_path: Path) -> None:
    settings = ReceiverSettings(
        transmitter_issuer=f"http://127.0.0.1:{free_port()}/x",
        dev_mode=True,
        push_url="http://x/ssf/push",
        database_url=f"sqlite:///{tmp_path}/r.db",
        startup_timeout=0.3,
        backoff_base=0.05,
        static_token="t",
        require_transmitter=True,
    )
    receiver = Receiver(settings)
    with pytest.raises(DiscoveryError):
        await receiver.start()
    await receiver.stop()
    assert receiver.error


def test_an_unreachable_transmitter_is_retried_in_the_background(tmp_path: Path) -> None:
    """Start-up goes on without the transmitter (persisted revocations are enforced already);
    once it is reachable the receiver connects, reconciles and verifies."""
    tport = free_port()
    fake = FakeTransmitter(tport)
    with run_receiver(fake, tmp_path, startup_timeout=0.2, backoff_base=0.1, backoff_max=0.2) as rcv:
        assert rcv.http.get("/health").status_code == 503
        assert rcv.push("x.y.z").status_code == 503
        with serve(fake.app, port=tport):
            rcv.wait(lambda: bool(rcv.receiver.verified_states), "background connection and verification")
            assert rcv.http.get("/health").json()["ready"]


def test_settings_from_environment(
    monkeypatch: pytest.MonkeyPatch, fake: FakeTransmitter, tmp_path: Path
) -> None:
    monkeypatch.setenv("SSF_RECEIVER_TRANSMITTER_ISSUER", fake.issuer + "/")
    monkeypatch.setenv("SSF_RECEIVER_DELIVERY", "poll")
    monkeypatch.setenv("SSF_RECEIVER_DATABASE_URL", "postgresql://u@h/db")
    with pytest.raises(ValidationError, match="https"):  # the fake's issuer is http: dev mode only
        ReceiverSettings()
    monkeypatch.setenv("SSF_RECEIVER_DEV_MODE", "true")
    s = ReceiverSettings()
    assert s.transmitter_issuer == fake.issuer and s.delivery == "poll"
    assert s.database_url.startswith("postgresql+psycopg://")
    assert receiver_settings(fake, tmp_path, 1).dev_mode


async def test_jwks_fetch_is_rate_limited(fake: FakeTransmitter) -> None:
    from receiver.jwks import JWKSCache

    async with httpx.AsyncClient() as http:
        cache = JWKSCache(f"{fake.issuer}/jwks", http, min_interval=60)
        await cache.load()
        results = await asyncio.gather(*(cache.refresh() for _ in range(10)))
        assert not any(results) and fake.jwks_fetches == 1
