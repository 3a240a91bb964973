"""The OpenID conformance suite's transmitter modules, replayed step by step over HTTP
(spec-digest §11.2-11.3): metadata, stream-control happy path, verification on push and poll."""

from __future__ import annotations

from typing import Any

from ssf import uris
from ssf.subjects import Subject
from tests.transmitter.conftest import Server, Sink

CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
SUITE_EVENTS = [CAEP + "session-revoked", CAEP + "credential-change", CAEP + "device-compliance-change"]
JSON = {"Content-Type": "application/json"}


def suite_token(server: Server) -> str:
    """Dynamic auth: client_credentials with client_secret_basic and scope "ssf.read ssf.manage"."""
    info, secret = server.tx.auth.add_client("oidf-suite")
    meta = server.http.get(server.url + "/.well-known/oauth-authorization-server").json()
    r = server.http.post(
        meta["token_endpoint"],
        auth=(info.client_id, secret),
        data={"grant_type": "client_credentials", "scope": "ssf.read ssf.manage"},
    )
    assert r.json()["expires_in"] <= 3600
    return str(r.json()["access_token"])


def call(server: Server, method: str, url: str, token: str, **kw: Any) -> Any:
    return server.http.request(method, url, headers={**JSON, "Authorization": f"Bearer {token}"}, **kw)


def test_stream_control_happy_path(server: Server) -> None:
    meta = server.http.get(server.url + "/.well-known/ssf-configuration").json()
    tok = suite_token(server)
    cfg_url = meta["configuration_endpoint"]
    body = {
        "description": "Stream for OIDF Conformance Test-Suite",
        "events_requested": SUITE_EVENTS,
        "delivery": {"method": uris.POLL},
    }
    # clean-up step: GET without stream_id is an array
    assert call(server, "GET", cfg_url, tok).json() == []
    r = call(server, "POST", cfg_url, tok, json=body)
    assert r.status_code == 201
    created = r.json()
    assert created["iss"].rstrip("/") == meta["issuer"].rstrip("/")
    assert all(k in created for k in ("stream_id", "iss", "aud", "events_delivered", "delivery"))
    assert created["delivery"]["method"] in (uris.PUSH, uris.POLL)
    assert set(created["events_delivered"]) == set(SUITE_EVENTS)
    sid = created["stream_id"]
    read = call(server, "GET", cfg_url, tok, params={"stream_id": sid})
    assert read.status_code == 200 and read.json()["iss"] == meta["issuer"]
    assert all(e.startswith("https://schemas.openid.net/secevent/") for e in read.json()["events_supported"])
    patch = call(server, "PATCH", cfg_url, tok, json={**body, "stream_id": sid, "description": "patched"})
    assert patch.status_code == 200 and patch.json()["description"] == "patched"
    put = call(server, "PUT", cfg_url, tok, json={**body, "stream_id": sid, "description": "replaced"})
    assert put.status_code == 200 and put.json()["iss"] == meta["issuer"]
    assert call(server, "GET", meta["status_endpoint"], tok, params={"stream_id": sid}).status_code == 200
    for status in ("enabled", "paused", "disabled"):
        r = call(
            server,
            "POST",
            meta["status_endpoint"],
            tok,
            params={"stream_id": sid},
            json={"stream_id": sid, "status": status, "reason": f"suite {status}"},
        )
        assert r.status_code == 200 and r.json()["status"] == status
    assert call(server, "DELETE", cfg_url, tok, params={"stream_id": sid}).status_code == 204


def test_subject_control(server: Server) -> None:
    meta = server.http.get(server.url + "/.well-known/ssf-configuration").json()
    tok = suite_token(server)
    sid = call(
        server, "POST", meta["configuration_endpoint"], tok, json={"events_requested": SUITE_EVENTS}
    ).json()["stream_id"]
    subject = {"format": "email", "email": "example.user@example.com"}
    r = call(
        server,
        "POST",
        meta["add_subject_endpoint"],
        tok,
        json={"stream_id": sid, "subject": subject, "verified": True},
    )
    assert r.status_code == 200
    r = call(
        server, "POST", meta["remove_subject_endpoint"], tok, json={"stream_id": sid, "subject": subject}
    )
    assert r.status_code == 204


def check_verification_set(server: Server, token: str, stream: dict[str, Any], state: str | None) -> Any:
    """The suite's SET checks: typ, single event, no sub/exp, iss exact, iat not in the future,
    aud within the stream's aud, sub_id opaque stream id, the state echoed."""
    from ssf.set import decode_unverified

    header, claims = decode_unverified(token)
    assert header["typ"] == "secevent+jwt" and "kid" in header
    assert "sub" not in claims and "exp" not in claims and len(claims["events"]) == 1
    tok = server.verifier().verify(token)
    assert tok.iss == server.url
    assert set(tok.audiences) <= ({stream["aud"]} if isinstance(stream["aud"], str) else set(stream["aud"]))
    assert tok.sub_id == Subject.opaque(stream["stream_id"])
    assert tok.event_type == uris.VERIFICATION
    assert tok.event.payload().get("state") == state
    return tok


def test_verification_push_with_and_without_authorization(server: Server, sink: Sink) -> None:
    meta = server.http.get(server.url + "/.well-known/ssf-configuration").json()
    tok = suite_token(server)
    for header in ("Bearer push_token_5b0c3f0a-1f6e-4c55-a1c8-5a2f0b7e9d11", None):
        delivery: dict[str, Any] = {"method": uris.PUSH, "endpoint_url": sink.url}
        if header:
            delivery["authorization_header"] = header
        stream = call(
            server,
            "POST",
            meta["configuration_endpoint"],
            tok,
            json={"events_requested": SUITE_EVENTS, "delivery": delivery},
        ).json()
        before = len(sink.pushes)
        r = call(
            server,
            "POST",
            meta["verification_endpoint"],
            tok,
            json={"stream_id": stream["stream_id"], "state": "st-" + str(before)},
        )
        assert r.status_code == 204
        push = sink.wait_for(before + 1)[before]
        assert push.headers.get("authorization") == header
        check_verification_set(server, push.body.decode(), stream, "st-" + str(before))
        call(server, "DELETE", meta["configuration_endpoint"], tok, params={"stream_id": stream["stream_id"]})


def test_verification_poll_only_poll_and_ack_ack_only(server: Server) -> None:
    meta = server.http.get(server.url + "/.well-known/ssf-configuration").json()
    tok = suite_token(server)
    stream = call(
        server,
        "POST",
        meta["configuration_endpoint"],
        tok,
        json={"events_requested": SUITE_EVENTS, "delivery": {"method": uris.POLL}},
    ).json()
    poll_url = stream["delivery"]["endpoint_url"]
    call(
        server,
        "POST",
        meta["verification_endpoint"],
        tok,
        json={"stream_id": stream["stream_id"], "state": "s1"},
    )
    first = call(server, "POST", poll_url, tok, json={"maxEvents": 10, "returnImmediately": True}).json()[
        "sets"
    ]
    (t1,) = first.values()
    check_verification_set(server, t1, stream, "s1")
    call(
        server,
        "POST",
        meta["verification_endpoint"],
        tok,
        json={"stream_id": stream["stream_id"], "state": "s2"},
    )
    second = call(
        server, "POST", poll_url, tok, json={"maxEvents": 10, "returnImmediately": True, "ack": list(first)}
    ).json()["sets"]
    (t2,) = second.values()  # the acked SET is not sent again
    check_verification_set(server, t2, stream, "s2")
    r = call(
        server, "POST", poll_url, tok, json={"maxEvents": 0, "returnImmediately": True, "ack": list(second)}
    )
    assert r.status_code == 200 and r.json() == {"sets": {}}
    assert call(server, "POST", poll_url, tok, json={"returnImmediately": True}).json() == {"sets": {}}
