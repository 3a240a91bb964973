"""Whatever a peer sends, the answer is a 4xx with a JSON error body, never a 500."""

from __future__ import annotations

import json
import random
from typing import Any

from tests.transmitter.conftest import Server

ENDPOINTS = [
    ("POST", "/ssf/streams"),
    ("PATCH", "/ssf/streams"),
    ("PUT", "/ssf/streams"),
    ("POST", "/ssf/status"),
    ("POST", "/ssf/subjects:add"),
    ("POST", "/ssf/subjects:remove"),
    ("POST", "/ssf/verify"),
    ("POST", "/events"),
]
BODIES: list[bytes] = [
    b"",
    b"null",
    b"[]",
    b"{}",
    b'"x"',
    b"\xff\xfe\x00garbage",
    b"[" * 5000 + b"]" * 5000,
    b'{"stream_id": null}',
    b'{"stream_id": {"$ne": 1}}',
    b'{"stream_id": "x", "subject": {"format": "complex", "user": {"format": "complex"}}}',
    b'{"subject": {"format": "aliases", "identifiers": []}, "events": {"x": {}}}',
    b'{"subject": {"format": "email", "email": "a@b.c"}, "events": {"": {}}}',
    b'{"delivery": {"method": null}}',
    b'{"events_requested": [1, 2]}',
    b'{"stream_id": "x", "status": ["enabled"]}',
    b'{"stream_id": "x", "state": "' + b"s" * 5000 + b'"}',
]


def test_no_body_ever_gets_a_500(server: Server) -> None:
    server.tx.settings.long_poll_timeout = 0.1  # valid empty polls return quickly
    rx = server.client(scopes=["ssf.read", "ssf.manage", "ssf.publish"])
    s = server.create(rx, {})
    rng = random.Random(8417)
    bodies = BODIES + [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))) for _ in range(20)]
    endpoints = [*ENDPOINTS, ("POST", f"/ssf/poll/{s['stream_id']}")]
    for method, path in endpoints:
        for body in bodies:
            r = server.req(method, path, rx, content=body, headers={"Content-Type": "application/json"})
            assert r.status_code < 500, (method, path, body[:40], r.status_code, r.text)
            if body not in (b"{}", b"") or (not path.startswith("/ssf/poll/") and body == b""):
                assert r.status_code >= 400 and "err" in r.json(), (method, path, body[:40], r.text)
    for params in ({"stream_id": ""}, {"stream_id": "x" * 3000}, {}):
        for method, path in (("GET", "/ssf/status"), ("DELETE", "/ssf/streams")):
            r = server.req(method, path, rx, params=params)
            assert r.status_code in (400, 404) and "err" in r.json()
    r = server.req("GET", "/ssf/streams", rx, params={"stream_id": "\u2603"})
    assert r.status_code == 404
    r = server.http.post(server.url + "/oauth/token", content=b"\xff\xfe", headers={"Content-Type": "x"})
    assert r.status_code == 400 and "error" in r.json()


def test_lone_surrogates_in_json_strings_are_400(server: Server) -> None:
    """``"\\ud800"`` is valid JSON but no Unicode text: it cannot be stored, signed into a SET
    or sent on; every route answers 400 (it was a 500 from the database driver)."""
    rx = server.client(scopes=["ssf.read", "ssf.manage", "ssf.publish"])
    sid = server.create(rx, {})["stream_id"]
    bad = "\ud800"  # json.dumps writes it as the escape a peer would send
    revoked = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
    opaque = {"format": "opaque", "id": "x"}
    cases: list[tuple[str, str, Any]] = [
        ("POST", "/ssf/streams", {"description": bad}),
        ("PATCH", "/ssf/streams", {"stream_id": bad}),
        ("PATCH", "/ssf/streams", {"stream_id": sid, "description": bad}),
        ("PUT", "/ssf/streams", {"stream_id": sid, "events_requested": [bad]}),
        ("POST", "/ssf/status", {"stream_id": sid, "status": "paused", "reason": bad}),
        ("POST", "/ssf/status", {"stream_id": bad, "status": "paused"}),
        ("POST", "/ssf/subjects:add", {"stream_id": sid, "subject": {"format": "opaque", "id": bad}}),
        ("POST", "/ssf/subjects:remove", {"stream_id": bad, "subject": opaque}),
        ("POST", "/ssf/verify", {"stream_id": bad}),
        ("POST", "/ssf/verify", {"stream_id": sid, "state": bad}),
        ("POST", f"/ssf/poll/{sid}", {"returnImmediately": True, "ack": [bad]}),
        ("POST", "/events", {"subject": {"format": "opaque", "id": bad}, "events": {revoked: {}}}),
        ("POST", "/events", {"subject": opaque, "events": {revoked: {bad: 1}}}),
    ]
    for method, path, body in cases:
        raw = json.dumps(body).encode()
        r = server.req(method, path, rx, content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, (method, path, raw, r.status_code, r.text)
        assert r.json()["err"] == "invalid_request" and "Unicode" in r.json()["description"], r.text


def test_nan_and_infinity_are_not_json(server: Server) -> None:
    """RFC 8259 has no NaN or Infinity; Python's parser takes them, and an event member holding
    one was published as ``null`` (a SET other than the one the publisher sent)."""
    rx = server.client(scopes=["ssf.read", "ssf.manage", "ssf.publish"])
    revoked = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
    s = server.create(rx, {"events_requested": [revoked]})
    for word in ("NaN", "Infinity", "-Infinity"):
        raw = '{"subject": {"format": "opaque", "id": "x"}, "events": {"%s": {"n": %s}}}' % (revoked, word)  # noqa: UP031
        r = server.req("POST", "/events", rx, content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and word.lstrip("-") in r.json()["description"], r.text
        r = server.req("POST", "/ssf/verify", rx, content='{"stream_id": "x", "state": %s}' % word)  # noqa: UP031
        assert r.status_code == 400 and word.lstrip("-") in r.json()["description"], r.text
    assert server.poll(rx, s) == {"sets": {}}


def test_admin_console_odd_input_is_never_a_500(server: Server) -> None:
    """Non-ASCII CSRF and notice signatures (``hmac.compare_digest`` refuses non-ASCII text)
    and unparsable Origin or Referer URLs were 500s in the console."""
    import re

    rx = server.client(scopes=["ssf.read", "ssf.manage"])
    sid = server.create(rx, {})["stream_id"]
    auth = {"Authorization": f"Bearer {rx}"}
    page = server.http.get(f"{server.url}/admin/streams/{sid}", headers=auth)
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert page.status_code == 200 and found is not None
    csrf = found.group(1)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status_url = f"{server.url}/admin/streams/{sid}/status"
    answers = [
        server.http.get(f"{server.url}/admin", params={"flash": "\u00e9", "sig": "\u00e9"}, headers=auth),
        server.http.post(status_url, content=b"status=paused&csrf=%C3%A9", headers={**auth, **form}),
        server.http.post(f"{server.url}/admin/login", data={"token": rx}, headers={"Origin": "http://[::1"}),
        server.http.post(
            status_url, data={"status": "enabled", "csrf": csrf}, headers={**auth, "Origin": "http://[::1"}
        ),
        server.http.post(
            status_url, data={"status": "paused", "csrf": csrf}, headers={**auth, "Referer": "http://[::1"}
        ),
    ]
    for r in answers:
        assert r.status_code < 500, (r.request.method, r.request.url, r.status_code)
    assert [r.status_code for r in answers[1:4]] == [403, 403, 403]
    assert answers[4].status_code == 303 and server.tx.stream(sid).status == "paused"


def test_nul_characters_are_4xx_on_both_databases(server: Server) -> None:
    """PostgreSQL text cannot hold NUL: a NUL in a stream id, a client id or a JSON string
    reached the driver and answered 500 there (SQLite took it). Same answers on both now."""
    rx = server.client(scopes=["ssf.read", "ssf.manage", "ssf.publish"])
    sid = server.create(rx, {})["stream_id"]
    for method, path in (
        ("GET", "/ssf/streams?stream_id=%00"),
        ("GET", "/ssf/status?stream_id=s_%00"),
        ("DELETE", "/ssf/streams?stream_id=%00"),
        ("POST", "/ssf/poll/s_%00"),
        ("GET", "/admin/streams/s_%00"),
    ):
        r = server.req(method, path, rx, json={"returnImmediately": True} if method == "POST" else None)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
    nul = "a\u0000b"
    revoked = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
    for method, path, body in [
        ("POST", "/ssf/streams", {"description": nul}),
        ("PATCH", "/ssf/streams", {"stream_id": nul, "description": "x"}),
        ("POST", "/ssf/status", {"stream_id": sid, "status": "paused", "reason": nul}),
        ("POST", "/ssf/subjects:add", {"stream_id": sid, "subject": {"format": "opaque", "id": nul}}),
        ("POST", "/ssf/verify", {"stream_id": sid, "state": nul}),
        ("POST", f"/ssf/poll/{sid}", {"returnImmediately": True, "ack": [nul]}),
        ("POST", "/events", {"subject": {"format": "opaque", "id": nul}, "events": {revoked: {}}}),
    ]:
        r = server.req(method, path, rx, json=body)
        assert r.status_code == 400 and "NUL" in r.json()["description"], (method, path, r.text)
    token_url = server.url + "/oauth/token"
    r = server.http.post(
        token_url, data={"grant_type": "client_credentials", "client_id": nul, "client_secret": "x"}
    )
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
    r = server.http.post(token_url, data={"grant_type": "client_credentials"}, auth=("a%00b", "x"))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
