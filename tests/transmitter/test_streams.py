"""Stream configuration (SSF §8.1.1): create, read, PATCH, PUT, DELETE and their errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import select

from ssf.subjects import Subject
from tests.transmitter.conftest import CREDENTIAL_CHANGE, SESSION_REVOKED, Server, ServerFactory
from transmitter.db import stream_t

PUSH, POLL = "urn:ietf:rfc:8935", "urn:ietf:rfc:8936"
SUITE_BODY: dict[str, Any] = {
    "description": "Stream for OIDF Conformance Test-Suite",
    "events_requested": [
        SESSION_REVOKED,
        CREDENTIAL_CHANGE,
        "https://schemas.openid.net/secevent/caep/event-type/device-compliance-change",
    ],
}


def test_create_poll_by_default_with_full_config(server: Server) -> None:
    tok = server.client()
    r = server.req(
        "POST",
        "/ssf/streams",
        tok,
        json={**SUITE_BODY, "events_requested": [SESSION_REVOKED, "https://example.com/unknown-event"]},
    )
    assert r.status_code == 201
    assert r.headers["cache-control"] == "no-store"
    cfg = r.json()
    for name in ("stream_id", "iss", "aud", "events_delivered", "delivery", "events_supported"):
        assert name in cfg
    assert cfg["iss"] == server.url
    assert cfg["delivery"]["method"] == POLL
    assert cfg["delivery"]["endpoint_url"] == f"{server.url}/ssf/poll/{cfg['stream_id']}"
    assert cfg["events_delivered"] == [SESSION_REVOKED]  # unknown requested types are ignored
    assert cfg["description"] == SUITE_BODY["description"]


def test_read_object_with_id_array_without(server: Server) -> None:
    tok = server.client()
    assert server.req("GET", "/ssf/streams", tok).json() == []
    a = server.create(tok, SUITE_BODY)
    b = server.create(tok, {"delivery": {"method": POLL}})
    assert a["stream_id"] != b["stream_id"]
    listed = server.req("GET", "/ssf/streams", tok).json()
    assert [s["stream_id"] for s in listed] == [a["stream_id"], b["stream_id"]]
    one = server.req("GET", "/ssf/streams", tok, params={"stream_id": a["stream_id"]})
    assert one.status_code == 200 and one.json() == a


def test_other_clients_get_404_never_data(server: Server) -> None:
    alice, mallory = server.client(), server.client()
    s = server.create(alice, SUITE_BODY)
    sid = s["stream_id"]
    assert server.req("GET", "/ssf/streams", mallory).json() == []
    assert server.req("GET", "/ssf/streams", mallory, params={"stream_id": sid}).status_code == 404
    assert (
        server.req("PATCH", "/ssf/streams", mallory, json={"stream_id": sid, "description": "x"}).status_code
        == 404
    )
    assert server.req("DELETE", "/ssf/streams", mallory, params={"stream_id": sid}).status_code == 404
    assert server.req("GET", "/ssf/status", mallory, params={"stream_id": sid}).status_code == 404
    assert server.req("POST", "/ssf/verify", mallory, json={"stream_id": sid}).status_code == 404
    r = server.http.post(
        s["delivery"]["endpoint_url"],
        json={"returnImmediately": True},
        headers={"Authorization": f"Bearer {mallory}"},
    )
    assert r.status_code == 404
    subject = {"format": "email", "email": "a@example.com"}
    for method, path, body in (
        ("PUT", "/ssf/streams", {"stream_id": sid, "description": "x"}),
        ("POST", "/ssf/status", {"stream_id": sid, "status": "disabled"}),
        ("POST", "/ssf/subjects:add", {"stream_id": sid, "subject": subject}),
        ("POST", "/ssf/subjects:remove", {"stream_id": sid, "subject": subject}),
    ):
        r = server.req(method, path, mallory, json=body)
        assert r.status_code == 404 and sid not in r.text, (method, path, r.text)
    assert server.req("GET", "/ssf/streams", alice, params={"stream_id": sid}).json() == s  # untouched
    status = server.req("GET", "/ssf/status", alice, params={"stream_id": sid}).json()
    assert status == {"stream_id": sid, "status": "enabled"}
    assert list(server.tx.publish(Subject.email("a@example.com"), {SESSION_REVOKED: {}})) == [sid]


def test_every_management_response_is_no_store(server: Server) -> None:
    """SSF §8.1.1 responses carry stream configuration: ``Cache-Control: no-store`` on every
    answer of the management API and poll, successes and errors alike."""
    tok, reader = server.client(), server.client(scopes=["ssf.read"])
    s = server.create(tok, SUITE_BODY)
    sid = s["stream_id"]
    subject = {"format": "email", "email": "a@example.com"}
    calls: list[tuple[str, str, str | None, dict[str, Any]]] = [
        ("GET", "/ssf/streams", tok, {}),
        ("GET", "/ssf/streams", tok, {"params": {"stream_id": sid}}),
        ("PATCH", "/ssf/streams", tok, {"json": {"stream_id": sid, "description": "p"}}),
        ("PUT", "/ssf/streams", tok, {"json": {"stream_id": sid, **SUITE_BODY}}),
        ("GET", "/ssf/status", tok, {"params": {"stream_id": sid}}),
        ("POST", "/ssf/status", tok, {"json": {"stream_id": sid, "status": "enabled"}}),
        ("POST", "/ssf/subjects:add", tok, {"json": {"stream_id": sid, "subject": subject}}),
        ("POST", "/ssf/subjects:remove", tok, {"json": {"stream_id": sid, "subject": subject}}),
        ("POST", "/ssf/verify", tok, {"json": {"stream_id": sid}}),
        ("POST", f"/ssf/poll/{sid}", tok, {"json": {"returnImmediately": True}}),
        ("GET", "/ssf/streams", None, {}),  # 401
        ("POST", "/ssf/streams", reader, {"json": {}}),  # 403
        ("POST", "/ssf/streams", tok, {"json": {"delivery": "x"}}),  # 400
        ("GET", "/ssf/status", tok, {"params": {"stream_id": "s_nope"}}),  # 404
        ("DELETE", "/ssf/streams", tok, {"params": {"stream_id": sid}}),  # 204
    ]
    for method, path, token, kw in calls:
        r = server.req(method, path, token, **kw)
        assert r.status_code < 500 and r.headers.get("cache-control") == "no-store", (
            method,
            path,
            r.status_code,
        )


def test_stream_limit_answers_409(server_factory: ServerFactory) -> None:
    with server_factory(max_streams_per_client=1) as srv:
        tok = srv.client()
        srv.create(tok, SUITE_BODY)
        r = srv.req("POST", "/ssf/streams", tok, json=SUITE_BODY)
        assert r.status_code == 409 and r.json()["err"] == "conflict"


def test_stream_limit_holds_under_concurrent_creates(server_factory: ServerFactory) -> None:
    """Creates racing each other (counted before any of them committed) must not get past
    MAX_STREAMS_PER_CLIENT."""
    from concurrent.futures import ThreadPoolExecutor

    with server_factory(max_streams_per_client=3) as srv:
        tok = srv.client()
        for _ in range(3):
            with ThreadPoolExecutor(12) as pool:
                codes = list(
                    pool.map(lambda _i: srv.req("POST", "/ssf/streams", tok, json={}).status_code, range(12))
                )
            assert sorted(set(codes)) in ([409], [201, 409]), codes
            listed = srv.req("GET", "/ssf/streams", tok).json()
            assert len(listed) <= 3, len(listed)
            for s in listed:
                srv.req("DELETE", "/ssf/streams", tok, params={"stream_id": s["stream_id"]})


def test_patch_applies_present_members_only(server: Server) -> None:
    tok = server.client()
    s = server.create(tok, SUITE_BODY)
    r = server.req("PATCH", "/ssf/streams", tok, json={"stream_id": s["stream_id"], "description": "new"})
    assert r.status_code == 200
    cfg = r.json()
    assert cfg["description"] == "new"
    assert cfg["events_requested"] == SUITE_BODY["events_requested"]
    # matching transmitter-supplied values are accepted, a mismatch is 400
    ok = server.req(
        "PATCH",
        "/ssf/streams",
        tok,
        json={
            "stream_id": s["stream_id"],
            "iss": server.url,
            "aud": s["aud"],
            "events_delivered": s["events_delivered"],
            "events_requested": [SESSION_REVOKED],
        },
    )
    assert ok.status_code == 200 and ok.json()["events_delivered"] == [SESSION_REVOKED]
    bad = server.req("PATCH", "/ssf/streams", tok, json={"stream_id": s["stream_id"], "aud": "someone-else"})
    assert bad.status_code == 400 and "aud" in bad.json()["description"]
    bad = server.req("PATCH", "/ssf/streams", tok, json={"stream_id": s["stream_id"], "iss": "https://x"})
    assert bad.status_code == 400


def test_put_replaces_receiver_supplied(server: Server) -> None:
    tok = server.client()
    s = server.create(tok, SUITE_BODY)
    r = server.req(
        "PUT",
        "/ssf/streams",
        tok,
        json={"stream_id": s["stream_id"], "events_requested": [CREDENTIAL_CHANGE]},
    )
    assert r.status_code == 200
    cfg = r.json()
    assert "description" not in cfg  # absent receiver-supplied member = deleted
    assert cfg["events_delivered"] == [CREDENTIAL_CHANGE]
    assert cfg["delivery"]["method"] == POLL and cfg["delivery"]["endpoint_url"].endswith(s["stream_id"])


def test_delete_then_404(server: Server) -> None:
    tok = server.client()
    s = server.create(tok, SUITE_BODY)
    r = server.req("DELETE", "/ssf/streams", tok, params={"stream_id": s["stream_id"]})
    assert r.status_code == 204 and r.content == b""
    q = {"stream_id": s["stream_id"]}
    assert server.req("GET", "/ssf/streams", tok, params=q).status_code == 404
    assert server.req("DELETE", "/ssf/streams", tok, params=q).status_code == 404
    assert server.req("PATCH", "/ssf/streams", tok, json={**q, "description": "x"}).status_code == 404
    assert server.req("PUT", "/ssf/streams", tok, json={**q, "description": "x"}).status_code == 404
    assert server.req("DELETE", "/ssf/streams", tok).status_code == 400  # stream_id required


def test_error_ordering_401_before_400_before_404(server: Server) -> None:
    """The conformance suite's error modules: authentication, then body, then lookup."""
    tok = server.client()
    broken = {"content": b";{ broken", "headers": {"Content-Type": "application/json"}}
    for method in ("POST", "PATCH", "PUT"):
        assert server.req(method, "/ssf/streams", "invalid:1", **broken).status_code == 401
        assert server.req(method, "/ssf/streams", tok, **broken).status_code == 400
    ghost = {"stream_id": "s_deleted"}
    assert server.req("DELETE", "/ssf/streams", "invalid:1", params=ghost).status_code == 401
    assert server.req("PATCH", "/ssf/streams", tok, json=ghost).status_code == 404
    assert server.req("GET", "/ssf/status", "invalid:1", params=ghost).status_code == 401
    assert server.req("POST", "/ssf/status", tok, **broken).status_code == 400
    assert server.req("POST", "/ssf/status", tok, json={**ghost, "status": "paused"}).status_code == 404


MALFORMED_CREATE_BODIES_ARE_400_CASES: list[Any] = [
    [],
    "x",
    {"events_requested": "not-a-list"},
    {"description": 5},
    {"delivery": {"method": "urn:example:carrier-pigeon"}},
    {"delivery": {"method": PUSH}},
    {"delivery": "push"},
    {"stream_id": "mine"},
    {"aud": "x"},
    {"unknown_member": 1},
    {"delivery": {"method": POLL, "authorization_header": "Bearer x"}},
    {"delivery": {"method": PUSH, "endpoint_url": "ftp://example.com/x"}},
    {
        "delivery": {
            "method": PUSH,
            "endpoint_url": "https://example.com/x",
            "authorization_header": "a\r\nb",
        }
    },
    {  # HTTP cannot carry it (not ISO-8859-1)
        "delivery": {
            "method": PUSH,
            "endpoint_url": "https://example.com/x",
            "authorization_header": "Bearer \u2603",
        }
    },
]


def test_malformed_create_bodies_are_400(server: Server) -> None:
    tok = server.client()
    for body in MALFORMED_CREATE_BODIES_ARE_400_CASES:
        r = server.req("POST", "/ssf/streams", tok, json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["err"] == "invalid_request" and r.json()["description"]


def test_oversized_body_is_413(server: Server) -> None:
    tok = server.client()
    big = {"description": "x" * (server.tx.settings.max_body_bytes + 10)}
    r = server.req("POST", "/ssf/streams", tok, json=big)
    assert r.status_code == 413 and r.json()["err"] == "invalid_request"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        yield b'{"description": "'
        for _ in range(server.tx.settings.max_body_bytes // 1024 + 1):
            yield b"x" * 1024
        yield b'"}'

    both = server.client(scopes=["ssf.manage", "ssf.publish"])
    for path in ("/ssf/streams", "/events"):
        r = server.req("POST", path, both, content=chunks(), headers={"Content-Type": "application/json"})
        assert "content-length" not in r.request.headers and r.status_code == 413, r.text


def test_push_authorization_header_is_masked_and_encrypted(server: Server, sink: Any) -> None:
    tok = server.client()
    secret = "Bearer push_token_0123456789abcdef"
    s = server.create(
        tok, {"delivery": {"method": PUSH, "endpoint_url": sink.url, "authorization_header": secret}}
    )
    shown = s["delivery"]["authorization_header"]
    assert secret not in shown and "0123456789" not in shown
    # a GET-then-PUT round trip keeps the real secret
    cfg = server.req("GET", "/ssf/streams", tok, params={"stream_id": s["stream_id"]}).json()
    body = {k: cfg[k] for k in ("stream_id", "delivery", "events_requested") if k in cfg}
    assert server.req("PUT", "/ssf/streams", tok, json=body).status_code == 200
    assert server.tx.stream(s["stream_id"]).auth_header == secret
    with server.tx.engine.connect() as conn:
        stored = conn.execute(select(stream_t.c.auth_header)).scalar_one()
    assert secret.encode() not in stored and b"0123456789abcdef" not in stored
