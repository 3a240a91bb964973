"""Publishing (POST /events, Python API) and poll delivery (RFC 8936)."""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

import httpx
import sqlalchemy

from ssf.subjects import Subject
from tests.support.services import free_port, require_postgres
from tests.transmitter.conftest import (
    CREDENTIAL_CHANGE,
    SESSION_REVOKED,
    Server,
    ServerFactory,
    make_settings,
    running,
)

ALICE = {"format": "email", "email": "alice@example.com"}


def publish(
    server: Server,
    pub: str,
    subject: Any = None,
    event: str = SESSION_REVOKED,
    payload: Any = None,
    **extra: Any,
) -> dict[str, str]:
    body = {"subject": subject or ALICE, "events": {event: payload or {}}, **extra}
    r = server.req("POST", "/events", pub, json=body)
    assert r.status_code == 202, r.text
    return dict(r.json()["jti"])


def test_publish_routes_signs_per_audience_and_polls(server: Server) -> None:
    rx1, rx2 = server.client(audience="https://rx1.example"), server.client(audience="https://rx2.example")
    s1 = server.create(rx1, {"events_requested": [SESSION_REVOKED]})
    s2 = server.create(rx2, {"events_requested": [SESSION_REVOKED, CREDENTIAL_CHANGE]})
    s3 = server.create(rx2, {"events_requested": [CREDENTIAL_CHANGE]})
    pub = server.publisher()
    jtis = publish(
        server, pub, payload={"initiating_entity": "policy", "reason_admin": {"en": "x"}}, txn="t-1"
    )
    assert set(jtis) == {s1["stream_id"], s2["stream_id"]}
    got = server.poll(rx1, s1)
    assert list(got["sets"]) == [jtis[s1["stream_id"]]]
    tok = server.verifier(audience="https://rx1.example").verify(got["sets"][jtis[s1["stream_id"]]])
    assert tok.iss == server.url and tok.sub_id == Subject.email("alice@example.com") and tok.txn == "t-1"
    assert tok.event_type == SESSION_REVOKED and tok.event.payload()["initiating_entity"] == "policy"
    got2 = server.poll(rx2, s2)
    tok2 = server.verifier(audience="https://rx2.example").verify(next(iter(got2["sets"].values())))
    assert tok2.aud == "https://rx2.example"
    assert server.poll(rx2, s3)["sets"] == {}


def test_session_revoked_and_credential_change_always_carry_reason_admin(server: Server) -> None:
    """CAEP interoperability profile: the transmitter MUST populate ``reason_admin`` on these
    two; the identity provider's own text wins when it gives one."""
    rx = server.client()
    s = server.create(rx, {"events_requested": [SESSION_REVOKED, CREDENTIAL_CHANGE]})
    pub = server.publisher()
    change = {"credential_type": "password", "change_type": "update"}
    publish(server, pub)
    publish(server, pub, event=CREDENTIAL_CHANGE, payload=change)
    publish(server, pub, payload={"reason_admin": {"de": "Sitzung beendet"}})
    got = server.poll(rx, s)["sets"].values()
    reasons = [server.verifier().verify(t).event.payload()["reason_admin"] for t in got]
    assert all(r.get("en") for r in reasons[:2]) and reasons[2] == {"de": "Sitzung beendet"}


BAD_PUBLISH_IS_400_NAMING_THE_PROBLEM_CASES: list[Any] = [
    ({"subject": {"format": "email"}, "events": {SESSION_REVOKED: {}}}, "email"),
    ({"subject": ALICE, "events": {}}, "exactly one"),
    ({"subject": ALICE, "events": {CREDENTIAL_CHANGE: {"credential_type": "password"}}}, "change_type"),
    (
        {"subject": ALICE, "events": {SESSION_REVOKED: {"initiating_entity": "martians"}}},
        "initiating_entity",
    ),
    ({"subject": ALICE, "events": {SESSION_REVOKED: {}}, "txn": 5}, "txn"),
    ({"subject": ALICE, "events": {SESSION_REVOKED: []}}, "object"),
    (
        {
            "subject": ALICE,
            "events": {"https://schemas.openid.net/secevent/ssf/event-type/verification": {}},
        },
        "transmitter",
    ),
    ({"subject": ALICE}, "required"),
    ({"subject": ALICE, "events": {SESSION_REVOKED: {}}, "extra": 1}, "extra"),
]


def test_bad_publish_is_400_naming_the_problem(server: Server) -> None:
    pub = server.publisher()
    for body, needle in BAD_PUBLISH_IS_400_NAMING_THE_PROBLEM_CASES:
        r = server.req("POST", "/events", pub, json=body)
        assert r.status_code == 400, r.text
        assert needle in r.json()["description"]


def test_ack_before_select_max_events_and_more_available(server: Server) -> None:
    rx = server.client()
    s = server.create(rx, {"events_requested": [SESSION_REVOKED]})
    pub = server.publisher()
    order = [publish(server, pub)[s["stream_id"]] for _ in range(5)]
    first = server.poll(rx, s, maxEvents=2)
    assert list(first["sets"]) == order[:2] and first["moreAvailable"] is True
    # unacknowledged SETs come again; acked ones never
    again = server.poll(rx, s, maxEvents=2, ack=order[:2])
    assert list(again["sets"]) == order[2:4] and again["moreAvailable"] is True
    errs = {order[2]: {"err": "invalid_audience", "description": "not me"}}
    rest = server.poll(rx, s, ack=[order[3]], setErrs=errs)
    assert list(rest["sets"]) == order[4:] and "moreAvailable" not in rest
    ack_only = server.poll(rx, s, maxEvents=0, ack=[order[4]])
    assert ack_only == {"sets": {}}
    assert server.poll(rx, s) == {"sets": {}}
    counts = server.tx.outbox_counts(s["stream_id"])
    assert counts == {"delivered": 4, "rejected": 1}


def test_long_poll_wakes_at_once_not_on_its_recheck(server_factory: ServerFactory) -> None:
    """The held poll is woken by the publish itself: with the periodic re-check 10 s away, the
    SET still arrives well within a second."""
    with server_factory(worker_poll_interval=10, long_poll_timeout=20) as server:
        rx = server.client()
        s = server.create(rx, {"events_requested": [SESSION_REVOKED]})
        pub = server.publisher()
        result: dict[str, Any] = {}

        def waiter() -> None:
            result["body"] = server.poll(rx, s, returnImmediately=False)
            result["at"] = time.monotonic()

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.5)
        assert t.is_alive()  # held open: nothing queued yet
        sent = time.monotonic()
        jti = publish(server, pub)[s["stream_id"]]
        t.join(15)
        assert list(result["body"]["sets"]) == [jti]
        assert result["at"] - sent < 1.0


def test_long_poll_times_out_empty(server: Server) -> None:
    server.tx.settings.long_poll_timeout = 0.5
    rx = server.client()
    s = server.create(rx, {})
    assert server.poll(rx, s, returnImmediately=False) == {"sets": {}}


MALFORMED_POLL_IS_400_CASES: list[Any] = [
    {"maxEvents": -1},
    {"maxEvents": "3"},
    {"returnImmediately": "yes"},
    {"ack": "jti"},
    {"setErrs": {"x": "bad"}},
    {"bogus": True},
    [],
]


def test_malformed_poll_is_400(server: Server) -> None:
    rx = server.client()
    s = server.create(rx, {})
    for body in MALFORMED_POLL_IS_400_CASES:
        r = server.http.post(
            s["delivery"]["endpoint_url"], json=body, headers={"Authorization": f"Bearer {rx}"}
        )
        assert r.status_code == 400 and r.json()["err"] == "invalid_request", body


def test_poll_needs_auth_and_poll_stream(server: Server, sink: Any) -> None:
    rx = server.client()
    s = server.create(rx, {})
    assert server.http.post(s["delivery"]["endpoint_url"], json={}).status_code == 401
    push = server.create(rx, {"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": sink.url}})
    r = server.req("POST", f"/ssf/poll/{push['stream_id']}", rx, json={"returnImmediately": True})
    assert r.status_code == 400


def test_python_api_publish_is_durable_and_identical(server: Server) -> None:
    rx = server.client()
    s = server.create(rx, {"events_requested": [SESSION_REVOKED]})
    out = server.tx.publish(Subject.email("bob@example.com"), {SESSION_REVOKED: {}}, "txn-9")
    assert list(out) == [s["stream_id"]]
    assert list(server.poll(rx, s)["sets"]) == [out[s["stream_id"]]]


def test_long_poll_on_one_instance_wakes_for_a_publish_on_another(tmp_path: Any) -> None:
    """PostgreSQL LISTEN/NOTIFY: instance B's long poll wakes for an event published on A
    (B's own re-check interval is set far beyond the test's patience)."""
    url = require_postgres()
    schema = "t_" + secrets.token_hex(6)
    try:
        _two_instances(tmp_path, {"database_url": url, "database_schema": schema})
    finally:
        engine = sqlalchemy.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def _two_instances(tmp_path: Any, db_config: dict[str, Any]) -> None:
    pa, pb = free_port(), free_port()
    sa = make_settings(tmp_path, db_config, pa, issuer="http://127.0.0.1:9")
    sb = make_settings(
        tmp_path, db_config, pb, issuer="http://127.0.0.1:9", worker_poll_interval=60, long_poll_timeout=60
    )
    with running(sa, pa) as a, running(sb, pb) as b:
        info, _ = a.tx.auth.add_client("rx")
        tok = a.tx.auth.issue_token(info, None)["access_token"]
        r = b.http.post(
            f"http://127.0.0.1:{pb}/ssf/streams",
            headers={"Authorization": f"Bearer {tok}"},
            json={"events_requested": [SESSION_REVOKED]},
        )
        sid = r.json()["stream_id"]
        result: dict[str, Any] = {}

        def waiter() -> None:
            resp = b.http.post(
                f"http://127.0.0.1:{pb}/ssf/poll/{sid}", json={}, headers={"Authorization": f"Bearer {tok}"}
            )
            result["sets"] = resp.json()["sets"]

        t = threading.Thread(target=waiter, daemon=True)
        t.start()
        time.sleep(0.5)
        jti = a.tx.publish(Subject.email("x@example.com"), {SESSION_REVOKED: {}})[sid]
        t.join(20)
        assert not t.is_alive(), "the long poll on instance B was not woken"
        assert list(result["sets"]) == [jti]


def test_concurrent_publishes_each_get_their_own_answer(server: Server) -> None:
    """Publishes arriving together share a transaction (group commit): each valid one is
    answered 202 with its own jti once durable, each invalid one 400 with its own reason, and
    one bad request never fails the others."""
    from concurrent.futures import ThreadPoolExecutor

    rx = server.client()
    s = server.create(rx, {"events_requested": [SESSION_REVOKED]})
    pub = server.publisher()

    def one(i: int) -> tuple[int, httpx.Response]:
        subject: Any = {"format": "email", "email": f"u{i}@example.com"}
        if i % 5 == 0:
            subject = {"format": "email"}  # no email: this request alone is refused
        body = {"subject": subject, "events": {SESSION_REVOKED: {}}}
        return i, server.req("POST", "/events", pub, json=body)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(80)))
    accepted: dict[str, int] = {}
    for i, r in answers:
        if i % 5 == 0:
            assert r.status_code == 400, r.text
            assert r.json()["err"] == "invalid_request" and "email" in r.json()["description"]
        else:
            assert r.status_code == 202, r.text
            accepted[r.json()["jti"][s["stream_id"]]] = i
    assert len(accepted) == 64  # 64 distinct jtis: no request got another's answer
    got = server.poll(rx, s, maxEvents=200)["sets"]
    assert set(got) == set(accepted)
    verifier = server.verifier()
    for jti, token in got.items():
        assert verifier.verify(token).sub_id["email"] == f"u{accepted[jti]}@example.com"
