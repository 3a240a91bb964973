"""The demo identity provider: its tokens verify against its JWKS, and its changes reach the publish API."""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet as JoseKeySet
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from demo.idp import ACCESS_TOKEN_TYP, DemoIdP, IdPError
from demo.publisher import PublishError, TransmitterPublisher
from ssf.events import AssuranceLevelChange, DeviceComplianceChange, SessionRevoked, parse_event
from ssf.subjects import parse_subject, subject_matches
from tests.support.services import free_port, serve

AUD = "https://api.demo.example"


class FakeTransmitter:
    """Records what the identity provider sends: the token request and each publish body."""

    def __init__(self) -> None:
        self.token_requests: list[dict[str, Any]] = []
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.refuse_with: int | None = None
        self.app = Starlette(
            routes=[
                Route("/.well-known/oauth-authorization-server", self.metadata),
                Route("/oauth/token", self.token, methods=["POST"]),
                Route("/events", self.events, methods=["POST"]),
            ]
        )
        self.url = ""

    async def metadata(self, _: Request) -> JSONResponse:
        return JSONResponse({"issuer": self.url, "token_endpoint": f"{self.url}/oauth/token"})

    async def token(self, request: Request) -> JSONResponse:
        form = dict(urllib.parse.parse_qsl((await request.body()).decode()))
        auth = request.headers.get("authorization", "")
        creds = base64.b64decode(auth.removeprefix("Basic ")).decode() if auth.startswith("Basic ") else ""
        self.token_requests.append({"form": form, "basic": creds})
        if creds != "idp:s3cret":
            return JSONResponse({"error": "invalid_client"}, 401)
        return JSONResponse({"access_token": "pub-token", "token_type": "Bearer", "expires_in": 3600})

    async def events(self, request: Request) -> JSONResponse:
        if request.headers.get("authorization") != "Bearer pub-token":
            return JSONResponse({"err": "authentication_failed"}, 401)
        if self.refuse_with:
            return JSONResponse({"err": "invalid_request", "description": "no"}, self.refuse_with)
        body = await request.json()
        self.published.append((request.headers["authorization"], body))
        return JSONResponse({"jti": {"stream-1": f"jti-{len(self.published)}"}})


@pytest.fixture
def transmitter() -> Iterator[FakeTransmitter]:
    fake = FakeTransmitter()
    with serve(fake.app) as url:
        fake.url = url
        yield fake


@pytest.fixture
def idp_server(transmitter: FakeTransmitter) -> Iterator[tuple[DemoIdP, str]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    idp = DemoIdP(url, audience=AUD, publisher=TransmitterPublisher(transmitter.url, "idp", "s3cret"))
    with serve(idp.app, port=port):
        yield idp, url


def test_token_is_rfc9068_and_verifies_with_pyjwt_against_served_jwks(
    idp_server: tuple[DemoIdP, str],
) -> None:
    idp, url = idp_server
    issued = idp.login("ada", device_id="laptop-1", acr="nist-aal2")
    header = pyjwt.get_unverified_header(issued.access_token)
    assert header["typ"] == ACCESS_TOKEN_TYP
    assert header["kid"] == idp.keys.active.kid
    signing_key = pyjwt.PyJWKClient(f"{url}/jwks.json").get_signing_key_from_jwt(issued.access_token)
    claims = pyjwt.decode(
        issued.access_token,
        signing_key.key,
        algorithms=["RS256"],
        audience=AUD,
        issuer=url,
        options={"require": ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"]},
    )
    assert claims["sub"] == "248289761001"
    assert claims["sid"] == issued.session.sid
    assert claims["acr"] == "nist-aal2"
    assert claims["device_id"] == "laptop-1"
    assert claims["email"] == "ada@example.com"
    assert claims["client_id"] == "demo-web-app"
    assert claims["exp"] - claims["iat"] == 3600


def test_token_verifies_with_joserfc_and_not_with_another_key() -> None:
    idp = DemoIdP("http://127.0.0.1:9", audience=AUD)
    other = DemoIdP("http://127.0.0.1:9", audience=AUD)
    token = idp.login("grace", device_id="phone-7", acr="nist-aal3").access_token
    keys = JoseKeySet.import_key_set(idp.jwks())  # type: ignore[arg-type]
    decoded = jose_jwt.decode(token, keys, algorithms=["RS256"])
    assert decoded.header["typ"] == "at+jwt"
    assert decoded.claims["acr"] == "nist-aal3"
    assert decoded.claims["iss"] == "http://127.0.0.1:9"
    with pytest.raises(pyjwt.InvalidSignatureError):
        pyjwt.decode(token, pyjwt.PyJWK(other.jwks()["keys"][0]).key, algorithms=["RS256"], audience=AUD)


def test_jwks_is_public_only() -> None:
    jwks = DemoIdP("http://127.0.0.1:9", audience=AUD).jwks()
    (key,) = jwks["keys"]
    assert key["kty"] == "RSA" and key["use"] == "sig" and key["alg"] == "RS256"
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


def test_every_login_is_a_new_session_and_rules_are_enforced() -> None:
    idp = DemoIdP("http://127.0.0.1:9", audience=AUD)
    a = idp.login("ada", device_id="laptop-1")
    b = idp.login("ada", device_id="laptop-1")
    assert a.session.sid != b.session.sid
    assert a.claims["jti"] != b.claims["jti"]
    with pytest.raises(IdPError, match="no user"):
        idp.login("mallory", device_id="x")
    with pytest.raises(IdPError, match="acr must be"):
        idp.login("ada", device_id="x", acr="gold")


async def test_changes_are_published_as_valid_caep_events(transmitter: FakeTransmitter) -> None:
    idp = DemoIdP(
        "http://127.0.0.1:9", audience=AUD, publisher=TransmitterPublisher(transmitter.url, "idp", "s3cret")
    )
    issued = idp.login("ada", device_id="laptop-1", acr="nist-aal2")
    r1 = await idp.end_session(issued.session.sid)
    r2 = await idp.set_device_compliance("ada", "laptop-1", "not-compliant")
    r3 = await idp.set_assurance_level("ada", "nist-aal1")
    assert (r1.jti, r2.jti, r3.jti) == ({"stream-1": "jti-1"}, {"stream-1": "jti-2"}, {"stream-1": "jti-3"})
    # One client-credentials token, asking for the publish scope, reused for all three calls.
    assert len(transmitter.token_requests) == 1
    assert transmitter.token_requests[0]["form"] == {
        "grant_type": "client_credentials",
        "scope": "ssf.publish",
    }

    bodies = [body for _, body in transmitter.published]
    kinds = [next(iter(b["events"])) for b in bodies]
    assert kinds == [
        SessionRevoked.event_type,
        DeviceComplianceChange.event_type,
        AssuranceLevelChange.event_type,
    ]
    events = [parse_event(k, b["events"][k]) for k, b in zip(kinds, bodies, strict=True)]
    assert isinstance(events[1], DeviceComplianceChange)
    assert (events[1].previous_status, events[1].current_status) == ("compliant", "not-compliant")
    assert isinstance(events[2], AssuranceLevelChange)
    assert (events[2].previous_level, events[2].current_level, events[2].change_direction) == (
        "nist-aal2",
        "nist-aal1",
        "decrease",
    )
    user = parse_subject({"format": "iss_sub", "iss": "http://127.0.0.1:9", "sub": "248289761001"})
    subjects = [parse_subject(b["subject"]) for b in bodies]
    assert subjects[0].member("session") == parse_subject({"format": "opaque", "id": issued.session.sid})
    assert subjects[1].member("device") == parse_subject({"format": "opaque", "id": "laptop-1"})
    assert subjects[2] == user
    assert all(subject_matches(s, user) for s in subjects)
    # A non-compliant device cannot sign in again; an ended session issues no more tokens.
    with pytest.raises(IdPError, match="not compliant"):
        idp.login("ada", device_id="laptop-1")
    with pytest.raises(IdPError, match="has ended"):
        idp.issue(issued.session)


async def test_publish_failures_are_reported(transmitter: FakeTransmitter) -> None:
    bad = DemoIdP("http://x", audience=AUD, publisher=TransmitterPublisher(transmitter.url, "idp", "wrong"))
    issued = bad.login("ada", device_id="d")
    with pytest.raises(PublishError, match="token request refused: HTTP 401"):
        await bad.end_session(issued.session.sid)
    transmitter.refuse_with = 400
    good = DemoIdP("http://x", audience=AUD, publisher=TransmitterPublisher(transmitter.url, "idp", "s3cret"))
    with pytest.raises(PublishError, match="publish refused: HTTP 400"):
        await good.end_session(good.login("ada", device_id="d").session.sid)
    with pytest.raises(IdPError, match="no transmitter"):
        await DemoIdP("http://x", audience=AUD).set_assurance_level("ada", "nist-aal1")


def test_http_routes(idp_server: tuple[DemoIdP, str], transmitter: FakeTransmitter) -> None:
    _, url = idp_server
    with httpx.Client(base_url=url, timeout=5) as http:
        meta = http.get("/.well-known/oauth-authorization-server").json()
        assert (meta["issuer"], meta["jwks_uri"]) == (url, f"{url}/jwks.json")
        login = http.post("/login", json={"username": "ada", "device_id": "laptop-1", "acr": "nist-aal2"})
        assert login.status_code == 200
        token = login.json()
        assert token["token_type"] == "Bearer" and token["expires_in"] == 3600
        claims = json.loads(base64.urlsafe_b64decode(token["access_token"].split(".")[1] + "=="))
        assert claims["sid"] == token["sid"]

        ended = http.post(f"/admin/sessions/{token['sid']}/end")
        assert ended.status_code == 200 and ended.json()["jti"] == {"stream-1": "jti-1"}
        dev = http.post(
            "/admin/devices/laptop-1/compliance", json={"username": "ada", "status": "not-compliant"}
        )
        assert dev.status_code == 200
        lvl = http.post("/admin/users/ada/assurance", json={"level": "nist-aal1"})
        assert lvl.status_code == 200
        assert len(transmitter.published) == 3

        assert http.post("/login", content=b"{nope").status_code == 400
        assert http.post("/login", json=[1]).status_code == 400
        unknown = http.post("/login", json={"username": "mallory"})
        assert unknown.status_code == 404 and unknown.json()["error"] == "invalid_request"
        assert http.post("/login", json={"username": "ada", "device_id": "laptop-1"}).status_code == 403
        assert http.post("/admin/sessions/s-999/end").status_code == 404
        assert http.post("/admin/users/ada/assurance", json={"level": "gold"}).status_code == 400
        transmitter.refuse_with = 500
        failed = http.post("/admin/users/ada/assurance", json={"level": "nist-aal2"})
        assert failed.status_code == 502 and failed.json()["error"] == "temporarily_unavailable"


def test_client_credentials_token_endpoint() -> None:
    from demo.idp import OAuthClient

    client = OAuthClient("api-push", "pw", ("ssf.read", "ssf.manage"), "http://transmitter:8080")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    idp = DemoIdP(url, audience=AUD, oauth_clients=(client,))
    with serve(idp.app, port=port), httpx.Client(base_url=url, timeout=5) as http:
        meta = http.get("/.well-known/oauth-authorization-server").json()
        assert meta["token_endpoint"] == f"{url}/oauth/token"
        ok = http.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=("api-push", "pw"))
        assert ok.status_code == 200 and ok.headers["cache-control"] == "no-store"
        body = ok.json()
        assert body["scope"] == "ssf.read ssf.manage" and body["token_type"] == "Bearer"
        claims = pyjwt.decode(
            body["access_token"],
            pyjwt.PyJWKClient(f"{url}/jwks.json").get_signing_key_from_jwt(body["access_token"]).key,
            algorithms=["RS256"],
            audience="http://transmitter:8080",
            issuer=url,
        )
        assert claims["client_id"] == "api-push" and claims["scope"] == "ssf.read ssf.manage"
        narrowed = http.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "scope": "ssf.read",
                "client_id": "api-push",
                "client_secret": "pw",
            },
        )
        assert narrowed.status_code == 200 and narrowed.json()["scope"] == "ssf.read"
        wrong = http.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=("api-push", "nope")
        )
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
        assert http.post("/oauth/token", data={"grant_type": "client_credentials"}).status_code == 401
        grant = http.post("/oauth/token", data={"grant_type": "password"}, auth=("api-push", "pw"))
        assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"
        scope = http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": "ssf.publish"},
            auth=("api-push", "pw"),
        )
        assert scope.status_code == 400 and scope.json()["error"] == "invalid_scope"


async def test_publisher_can_use_the_idp_as_authorization_server(transmitter: FakeTransmitter) -> None:
    """With ``token_endpoint`` set, the publisher never asks the transmitter for a token."""
    from demo.idp import OAuthClient

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    publisher = TransmitterPublisher(transmitter.url, "idp", "pw", token_endpoint=f"{url}/oauth/token")
    idp = DemoIdP(
        url,
        audience=AUD,
        publisher=publisher,
        oauth_clients=(OAuthClient("idp", "pw", ("ssf.publish",), transmitter.url),),
    )
    with serve(idp.app, port=port):
        # The fake only accepts its own token, so the refusal proves which token was sent.
        with pytest.raises(PublishError, match="HTTP 401"):
            await idp.set_assurance_level("ada", "nist-aal1")
    assert transmitter.token_requests == []
