"""Status (SSF §8.1.2), stream-updated (§8.1.5), inactivity, subjects (§8.1.3), verification (§8.1.4)."""

from __future__ import annotations

import time
from typing import Any

from ssf import uris
from ssf.subjects import Subject
from tests.transmitter.conftest import SESSION_REVOKED, Server, ServerFactory, Sink, wait_until

ALICE = Subject.email("alice@example.com")
BOB = Subject.email("bob@example.com")


def decode_all(server: Server, sets: dict[str, str]) -> list[Any]:
    v = server.verifier()
    return [v.verify(t) for t in sets.values()]


def test_status_read_update_and_paused_hold_in_order(server: Server) -> None:
    rx = server.client()
    s = server.create(rx, {"events_requested": [SESSION_REVOKED]})
    sid = s["stream_id"]
    r = server.req("GET", "/ssf/status", rx, params={"stream_id": sid})
    assert r.status_code == 200 and r.json() == {"stream_id": sid, "status": "enabled"}
    r = server.req(
        "POST",
        "/ssf/status",
        rx,
        params={"stream_id": sid},
        json={"stream_id": sid, "status": "paused", "reason": "maintenance"},
    )
    assert r.status_code == 200 and r.json() == {
        "stream_id": sid,
        "status": "paused",
        "reason": "maintenance",
    }
    held = [server.tx.publish(sub, {SESSION_REVOKED: {}})[sid] for sub in (ALICE, BOB, ALICE)]
    assert server.poll(rx, s) == {"sets": {}}  # paused: nothing delivered, no stream-updated (receiver's own)
    server.req("POST", "/ssf/status", rx, json={"stream_id": sid, "status": "enabled"})
    assert list(server.poll(rx, s)["sets"]) == held  # generation order kept


def test_disabled_keeps_nothing(server: Server) -> None:
    rx = server.client()
    s = server.create(rx, {"events_requested": [SESSION_REVOKED]})
    sid = s["stream_id"]
    server.tx.publish(ALICE, {SESSION_REVOKED: {}})
    assert (
        server.req("POST", "/ssf/status", rx, json={"stream_id": sid, "status": "disabled"}).status_code
        == 200
    )
    assert server.tx.publish(ALICE, {SESSION_REVOKED: {}}) == {}
    server.req("POST", "/ssf/status", rx, json={"stream_id": sid, "status": "enabled"})
    assert server.poll(rx, s) == {"sets": {}}
    assert server.tx.outbox_counts(sid) == {"expired": 1}


BAD_STATUS_UPDATES_ARE_400_CASES: list[Any] = [
    {"status": "paused"},
    {"stream_id": "x", "status": "sleeping"},
    {"stream_id": 1, "status": "paused"},
    {"stream_id": "x", "status": "paused", "extra": 1},
]


def test_bad_status_updates_are_400(server: Server) -> None:
    rx = server.client()
    for body in BAD_STATUS_UPDATES_ARE_400_CASES:
        assert server.req("POST", "/ssf/status", rx, json=body).status_code == 400, body


def test_status_query_and_body_must_agree(server: Server) -> None:
    rx = server.client()
    s = server.create(rx, {})
    r = server.req(
        "POST",
        "/ssf/status",
        rx,
        params={"stream_id": "other"},
        json={"stream_id": s["stream_id"], "status": "paused"},
    )
    assert r.status_code == 400


def test_transmitter_initiated_changes_send_stream_updated(server: Server) -> None:
    rx = server.client()
    s = server.create(rx, {"events_requested": [SESSION_REVOKED]})
    sid = s["stream_id"]
    server.tx.set_status(sid, "paused", "operator maintenance")
    held = server.tx.publish(ALICE, {SESSION_REVOKED: {}})[sid]
    got = server.poll(rx, s)
    (notice,) = decode_all(server, got["sets"])  # only the notice, the event is held
    assert notice.event_type == uris.STREAM_UPDATED
    assert notice.event.payload() == {"status": "paused", "reason": "operator maintenance"}
    assert notice.sub_id == Subject.opaque(sid)
    server.tx.set_status(sid, "enabled")
    got = server.poll(rx, s, ack=list(got["sets"]))
    events = decode_all(server, got["sets"])
    assert [e.event_type for e in events] == [uris.STREAM_UPDATED, SESSION_REVOKED]
    assert events[0].event.payload() == {"status": "enabled"} and events[1].jti == held


def test_inactivity_timeout_pauses_with_notice_and_activity_resets(server_factory: ServerFactory) -> None:
    with server_factory(inactivity_timeout=1, maintenance_interval=0.2) as server:
        rx = server.client()
        idle = server.create(rx, {})
        busy = server.create(rx, {})
        assert idle["inactivity_timeout"] == 1
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            server.poll(rx, busy)  # a poll is eligible activity
            time.sleep(0.2)
        assert server.tx.stream(idle["stream_id"]).status == "paused"
        assert server.tx.stream(busy["stream_id"]).status == "enabled"
        (notice,) = decode_all(server, server.poll(rx, idle)["sets"])
        assert notice.event.payload() == {"status": "paused", "reason": "inactivity timeout"}


def test_subjects_none_by_default_add_remove_and_complex_matching(server_factory: ServerFactory) -> None:
    with server_factory(default_subjects="NONE") as server:
        rx = server.client()
        s = server.create(rx, {"events_requested": [SESSION_REVOKED]})
        sid = s["stream_id"]
        assert server.tx.publish(ALICE, {SESSION_REVOKED: {}}) == {}
        r = server.req(
            "POST",
            "/ssf/subjects:add",
            rx,
            json={"stream_id": sid, "subject": ALICE.to_dict(), "verified": True},
        )
        assert r.status_code == 200 and r.content == b""
        assert list(server.tx.publish(ALICE, {SESSION_REVOKED: {}})) == [sid]
        tenant = {"format": "complex", "tenant": {"format": "opaque", "id": "T"}}
        server.req("POST", "/ssf/subjects:add", rx, json={"stream_id": sid, "subject": tenant})
        in_tenant = Subject.complex(user=BOB.to_dict(), tenant={"format": "opaque", "id": "T"})
        other = Subject.complex(user=BOB.to_dict(), tenant={"format": "opaque", "id": "U"})
        assert list(server.tx.publish(in_tenant, {SESSION_REVOKED: {}})) == [sid]
        assert server.tx.publish(other, {SESSION_REVOKED: {}}) == {}
        r = server.req(
            "POST", "/ssf/subjects:remove", rx, json={"stream_id": sid, "subject": ALICE.to_dict()}
        )
        assert r.status_code == 204
        assert server.tx.publish(ALICE, {SESSION_REVOKED: {}}) == {}


def test_subjects_all_by_default_minus_removed(server: Server) -> None:
    rx = server.client()
    s = server.create(rx, {"events_requested": [SESSION_REVOKED]})
    sid = s["stream_id"]
    assert list(server.tx.publish(BOB, {SESSION_REVOKED: {}})) == [sid]
    server.req("POST", "/ssf/subjects:remove", rx, json={"stream_id": sid, "subject": BOB.to_dict()})
    assert server.tx.publish(BOB, {SESSION_REVOKED: {}}) == {}
    assert list(server.tx.publish(ALICE, {SESSION_REVOKED: {}})) == [sid]
    server.req("POST", "/ssf/subjects:add", rx, json={"stream_id": sid, "subject": BOB.to_dict()})
    assert list(server.tx.publish(BOB, {SESSION_REVOKED: {}})) == [sid]


SUBJECT_AND_VERIFY_ERRORS_CASES: list[Any] = [
    ("/ssf/subjects:add", {"stream_id": "nope", "subject": {"format": "email", "email": "a@b.c"}}, 404),
    ("/ssf/subjects:add", {"stream_id": "nope", "subject": {"format": "email"}}, 400),
    ("/ssf/subjects:add", {"stream_id": "nope", "subject": "alice"}, 400),
    ("/ssf/subjects:add", {"subject": {"format": "email", "email": "a@b.c"}}, 400),
    (
        "/ssf/subjects:add",
        {"stream_id": "x", "subject": {"format": "opaque", "id": "1"}, "verified": "y"},
        400,
    ),
    ("/ssf/subjects:remove", {"stream_id": "nope", "subject": {"format": "opaque", "id": "1"}}, 404),
    ("/ssf/verify", {"stream_id": "nope"}, 404),
    ("/ssf/verify", {"state": "x"}, 400),
    ("/ssf/verify", {"stream_id": "x", "state": 5}, 400),
]


def test_subject_and_verify_errors(server: Server) -> None:
    rx = server.client()
    for path, body, status in SUBJECT_AND_VERIFY_ERRORS_CASES:
        assert server.req("POST", path, "bad-token", json=body).status_code == 401
        r = server.req("POST", path, rx, json=body)
        assert r.status_code == status and "err" in r.json(), (path, body)


def test_verification_poll_carries_state(server: Server) -> None:
    rx = server.client()
    s = server.create(rx, {})
    r = server.req("POST", "/ssf/verify", rx, json={"stream_id": s["stream_id"], "state": "st-1"})
    assert r.status_code == 204
    (tok,) = decode_all(server, server.poll(rx, s, maxEvents=10)["sets"])
    assert tok.event_type == uris.VERIFICATION and tok.event.payload() == {"state": "st-1"}
    assert tok.sub_id == Subject.opaque(s["stream_id"]) and tok.iss == server.url
    server.tx.send_verification(s["stream_id"])
    (tok,) = decode_all(server, server.poll(rx, s, ack=[tok.jti])["sets"])
    assert tok.event.payload() == {}  # transmitter-initiated: no state


def test_a_disabled_stream_keeps_no_verification_event(server: Server) -> None:
    """SSF §8.1.2: a disabled stream keeps no events. A receiver's verification request is
    answered (204) and nothing is kept for later; an operator's is refused (409)."""
    import pytest

    from transmitter.errors import Conflict

    rx = server.client()
    s = server.create(rx, {"events_requested": [SESSION_REVOKED]})
    sid = s["stream_id"]
    status = {"stream_id": sid, "status": "disabled", "reason": "maintenance"}
    assert server.req("POST", "/ssf/status", rx, json=status).status_code == 200
    assert (
        server.req("POST", "/ssf/verify", rx, json={"stream_id": sid, "state": "st-off"}).status_code == 204
    )
    with pytest.raises(Conflict):
        server.tx.send_verification(sid)
    status["status"] = "enabled"
    assert server.req("POST", "/ssf/status", rx, json=status).status_code == 200
    server.tx.publish(BOB, {SESSION_REVOKED: {}})
    kinds = [t.event_type for t in decode_all(server, server.poll(rx, s, maxEvents=10)["sets"])]
    assert kinds == [SESSION_REVOKED]  # what came after the re-enable, and nothing from before


def test_verification_push_and_rate_limit(server_factory: ServerFactory, sink: Sink) -> None:
    # the worker's periodic look for work is 10 s away: the request itself must start the push
    with server_factory(min_verification_interval=30, worker_poll_interval=10) as server:
        rx = server.client()
        s = server.create(
            rx,
            {
                "delivery": {
                    "method": "urn:ietf:rfc:8935",
                    "endpoint_url": sink.url,
                    "authorization_header": "Bearer push_token_x",
                }
            },
        )
        assert s["min_verification_interval"] == 30
        asked = time.time()
        assert (
            server.req(
                "POST", "/ssf/verify", rx, json={"stream_id": s["stream_id"], "state": "abc"}
            ).status_code
            == 204
        )
        (push,) = sink.wait_for(1)
        assert push.at - asked < 1.0  # delivered within one second of the request
        tok = server.verifier().verify(push.body)
        assert tok.event.payload() == {"state": "abc"}
        assert push.headers["authorization"] == "Bearer push_token_x"
        r = server.req("POST", "/ssf/verify", rx, json={"stream_id": s["stream_id"], "state": "again"})
        assert r.status_code == 429 and 0 < int(r.headers["retry-after"]) <= 30


def test_min_verification_interval_holds_under_concurrent_requests(server_factory: ServerFactory) -> None:
    """Requests racing each other (each reading the last verification time before any
    committed) must still get one 204 and 429s, and queue one verification SET."""
    from concurrent.futures import ThreadPoolExecutor

    with server_factory(min_verification_interval=30) as server:
        rx = server.client()
        s = server.create(rx, {})
        body = {"stream_id": s["stream_id"]}
        with ThreadPoolExecutor(10) as pool:
            codes = list(
                pool.map(lambda _i: server.req("POST", "/ssf/verify", rx, json=body).status_code, range(10))
            )
        assert sorted(codes) == [204] + [429] * 9, codes
        assert len(server.poll(rx, s, maxEvents=20)["sets"]) == 1


def test_racing_adds_and_removes_of_one_subject(server: Server) -> None:
    """Adds and removes of the same subject at once (the delete-then-insert of one raced the
    other's insert into the unique index: 500 on PostgreSQL) each get their 200 or 204."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    rx = server.client()
    sid = server.create(rx, {"events_requested": [SESSION_REVOKED]})["stream_id"]
    body = {"stream_id": sid, "subject": BOB.to_dict()}

    def one(i: int) -> int:
        path = "/ssf/subjects:add" if i % 2 else "/ssf/subjects:remove"
        with httpx.Client(timeout=15) as http:  # a connection each: really at once
            r = http.post(server.url + path, json=body, headers={"Authorization": f"Bearer {rx}"})
        return r.status_code

    for _ in range(3):
        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(one, range(12)))
        assert sorted(codes) == [200] * 6 + [204] * 6, codes
    server.req("POST", "/ssf/subjects:add", rx, json=body)
    assert list(server.tx.publish(BOB, {SESSION_REVOKED: {}})) == [sid]


def test_a_deleted_stream_keeps_no_subjects_added_while_it_was_deleted(server: Server) -> None:
    """Subject adds racing the stream's DELETE either land before it (and go with the stream)
    or get 404; none leaves a row behind for the deleted stream."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    from sqlalchemy import func, select

    from transmitter.db import subject_t

    rx = server.client()
    auth = {"Authorization": f"Bearer {rx}"}
    for _ in range(4):
        sid = server.create(rx, {})["stream_id"]

        def one(i: int, sid: str = sid) -> int:
            with httpx.Client(timeout=15) as http:
                if i == 4:
                    return http.delete(
                        server.url + "/ssf/streams", params={"stream_id": sid}, headers=auth
                    ).status_code
                body = {"stream_id": sid, "subject": {"format": "opaque", "id": f"u{i}"}}
                return http.post(server.url + "/ssf/subjects:add", json=body, headers=auth).status_code

        with ThreadPoolExecutor(10) as pool:
            codes = list(pool.map(one, range(10)))
        assert codes[4] == 204 and all(c in (200, 404) for c in codes[:4] + codes[5:]), codes
        with server.tx.engine.connect() as conn:
            left = conn.execute(select(func.count()).where(subject_t.c.stream_id == sid)).scalar_one()
        assert left == 0


def test_paused_retention_by_count(server_factory: ServerFactory) -> None:
    with server_factory(paused_max_events=2) as server:
        rx = server.client()
        s = server.create(rx, {"events_requested": [SESSION_REVOKED]})
        sid = s["stream_id"]
        server.req("POST", "/ssf/status", rx, json={"stream_id": sid, "status": "paused"})
        jtis = [server.tx.publish(ALICE, {SESSION_REVOKED: {}})[sid] for _ in range(4)]
        server.req("POST", "/ssf/status", rx, json={"stream_id": sid, "status": "enabled"})
        assert list(server.poll(rx, s)["sets"]) == jtis[2:]  # the newest, still in order
        wait_until(lambda: server.tx.outbox_counts(sid).get("expired") == 2)


def test_unverified_subject_starts_no_events(server_factory: ServerFactory) -> None:
    with server_factory(default_subjects="NONE") as server:
        rx = server.client()
        s = server.create(rx, {"events_requested": [SESSION_REVOKED]})
        sid = s["stream_id"]
        body = {"stream_id": sid, "subject": ALICE.to_dict(), "verified": False}
        assert server.req("POST", "/ssf/subjects:add", rx, json=body).status_code == 200
        assert server.tx.publish(ALICE, {SESSION_REVOKED: {}}) == {}
        body["verified"] = True
        server.req("POST", "/ssf/subjects:add", rx, json=body)
        assert list(server.tx.publish(ALICE, {SESSION_REVOKED: {}})) == [sid]
        server.req("POST", "/ssf/subjects:add", rx, json={"stream_id": sid, "subject": BOB.to_dict()})
        assert list(server.tx.publish(BOB, {SESSION_REVOKED: {}})) == [sid]  # absent = verified


def test_finished_outbox_rows_are_purged(server_factory: ServerFactory) -> None:
    with server_factory(outbox_keep_seconds=1) as server:
        rx = server.client()
        s = server.create(rx, {"events_requested": [SESSION_REVOKED]})
        jti = server.tx.publish(ALICE, {SESSION_REVOKED: {}})[s["stream_id"]]
        server.poll(rx, s, ack=[jti])
        assert server.poll(rx, s, ack=[jti]) == {"sets": {}}
        wait_until(lambda: server.tx.outbox_counts(s["stream_id"]) == {})


def test_paused_retention_by_age(server_factory: ServerFactory) -> None:
    """PAUSED_RETENTION_SECONDS: held SETs older than it expire; younger ones and the
    stream-updated notice of a transmitter-initiated pause are kept."""
    with server_factory(paused_retention_seconds=1, maintenance_interval=0.2) as server:
        rx = server.client()
        s = server.create(rx, {"events_requested": [SESSION_REVOKED]})
        sid = s["stream_id"]
        server.tx.set_status(sid, "paused", "operator")
        old = server.tx.publish(ALICE, {SESSION_REVOKED: {}})[sid]
        wait_until(lambda: server.tx.outbox_counts(sid).get("expired") == 1)
        young = server.tx.publish(BOB, {SESSION_REVOKED: {}})[sid]
        server.req("POST", "/ssf/status", rx, json={"stream_id": sid, "status": "enabled"})
        got = decode_all(server, server.poll(rx, s)["sets"])
        assert [t.event_type for t in got] == [uris.STREAM_UPDATED, SESSION_REVOKED]
        assert got[1].jti == young and old not in {t.jti for t in got}


def test_inactivity_disables_with_notice_and_management_calls_reset_the_timer(
    server_factory: ServerFactory, sink: Sink
) -> None:
    """SSF §8.1.1: for a push stream any management call naming it restarts the timer;
    INACTIVITY_ACTION=disabled drops what is held and still sends the stream-updated event."""
    with server_factory(
        inactivity_timeout=1, inactivity_action="disabled", maintenance_interval=0.2
    ) as server:
        rx = server.client()
        push = {"method": "urn:ietf:rfc:8935", "endpoint_url": sink.url}
        busy = server.create(rx, {"events_requested": [SESSION_REVOKED], "delivery": push})
        idle = server.create(rx, {"events_requested": [SESSION_REVOKED]})
        server.tx.set_status(idle["stream_id"], "paused", "held")  # its SETs wait
        held = server.tx.publish(ALICE, {SESSION_REVOKED: {}})[idle["stream_id"]]
        server.tx.set_status(idle["stream_id"], "enabled")
        calls = [
            ("GET", "/ssf/status", {"params": {"stream_id": busy["stream_id"]}}),
            (
                "POST",
                "/ssf/subjects:add",
                {"json": {"stream_id": busy["stream_id"], "subject": BOB.to_dict()}},
            ),
            ("GET", "/ssf/streams", {"params": {"stream_id": busy["stream_id"]}}),
        ]
        deadline = time.monotonic() + 2.5
        i = 0
        while time.monotonic() < deadline:
            method, path, kw = calls[i % len(calls)]
            assert server.req(method, path, rx, **kw).status_code == 200
            i += 1
            time.sleep(0.2)
        assert server.tx.stream(busy["stream_id"]).status == "enabled"
        assert server.tx.stream(idle["stream_id"]).status == "disabled"
        sets = server.poll(rx, idle, ack=[])["sets"]
        got = decode_all(server, sets)
        assert [t.event.payload() for t in got if t.event_type == uris.STREAM_UPDATED][-1] == {
            "status": "disabled",
            "reason": "inactivity timeout",
        }
        assert held not in sets  # a disabled stream keeps nothing


def test_sets_a_publish_writes_for_a_stream_deleted_meanwhile_are_swept(server: Server) -> None:
    """A publish routes before the DELETE commits and inserts after it (the interleaving is
    made here by writing that publish's rows after the DELETE): its SETs for the gone stream
    would stay pending forever. Maintenance deletes them."""
    from sqlalchemy import func, select

    from ssf.events import SessionRevoked
    from transmitter import outbox
    from transmitter.db import begin, outbox_t

    rx = server.client()
    sid = server.create(rx, {"events_requested": [SESSION_REVOKED]})["stream_id"]
    assert server.req("DELETE", "/ssf/streams", rx, params={"stream_id": sid}).status_code == 204
    row = outbox.build(
        issuer=server.url,
        key=server.tx.keys.active,
        stream_id=sid,
        aud="https://rx.example",
        subject=BOB,
        event_type=SessionRevoked.event_type,
        event=SessionRevoked(),
    )
    with begin(server.tx.engine) as conn:
        outbox.insert(conn, [row])

    def left() -> int:
        with server.tx.engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(outbox_t.c.stream_id == sid)).scalar_one())

    wait_until(lambda: left() == 0, timeout=10)  # maintenance runs every 0.3 s here
