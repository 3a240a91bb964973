"""Poll delivery (RFC 8936): acknowledgements and errors touch only the polled stream's SETs,
paused and disabled streams serve none, only the owner polls, hostile bodies are 400."""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any

import httpx
from sqlalchemy import select

from tests.transmitter.conftest import SESSION_REVOKED, Server
from tests.transmitter.test_publish_poll import publish
from transmitter.db import outbox_t


def _states(server: Server, stream_id: str) -> dict[str, tuple[str, str | None]]:
    """jti -> (state, last_error) of one stream's outbox rows."""
    with server.tx.engine.connect() as conn:
        rows = conn.execute(
            select(outbox_t.c.jti, outbox_t.c.state, outbox_t.c.last_error).where(
                outbox_t.c.stream_id == stream_id
            )
        ).all()
    return {r.jti: (r.state, r.last_error) for r in rows}


def test_ack_and_set_errs_touch_only_the_polled_stream(server: Server) -> None:
    """A jti of another stream (the same client's, or another client's) named in ``ack`` or
    ``setErrs`` is left as it is; unknown jtis are ignored; setErrs are recorded."""
    alice, mallory = server.client(), server.client()
    mine = server.create(alice, {"events_requested": [SESSION_REVOKED]})
    mine2 = server.create(alice, {"events_requested": [SESSION_REVOKED]})
    theirs = server.create(mallory, {"events_requested": [SESSION_REVOKED]})
    pub = server.publisher()
    sent = [publish(server, pub, subject={"format": "email", "email": f"u{i}@example.com"}) for i in range(3)]
    own = [s[mine["stream_id"]] for s in sent]
    own2 = [s[mine2["stream_id"]] for s in sent]
    other = [s[theirs["stream_id"]] for s in sent]

    # mallory names alice's jtis from her own stream: nothing of alice's changes
    body = server.poll(
        mallory,
        theirs,
        maxEvents=0,
        ack=[own[0], own2[0]],
        setErrs={own[1]: {"err": "jwt_aud", "description": "x"}, own2[1]: {"err": "jwt_aud"}},
    )
    assert body == {"sets": {}}
    assert {v[0] for v in _states(server, mine["stream_id"]).values()} == {"pending"}
    assert {v[0] for v in _states(server, mine2["stream_id"]).values()} == {"pending"}
    # alice, polling one stream, names SETs of her other stream: they stay pending too
    got = server.poll(alice, mine, ack=[own2[0], "no-such-jti"], setErrs={own2[1]: {"err": "jwt_aud"}})
    assert list(got["sets"]) == own
    assert {v[0] for v in _states(server, mine2["stream_id"]).values()} == {"pending"}
    # her own acks and errors apply (before selection), and the error is recorded as sent
    err = {"err": "invalid_issuer", "description": "not ours", "extra": "kept"}
    got = server.poll(alice, mine, ack=[own[0], "unknown"], setErrs={own[1]: err, "nope": {"err": "x"}})
    assert list(got["sets"]) == [own[2]]
    states = _states(server, mine["stream_id"])
    assert states[own[0]][0] == "delivered" and states[own[2]][0] == "pending"
    assert states[own[1]][0] == "rejected" and json.loads(states[own[1]][1] or "") == err
    # mallory's own SETs were never touched by any of this
    assert list(server.poll(mallory, theirs)["sets"]) == other


def test_only_the_owner_polls(server: Server) -> None:
    alice, mallory = server.client(), server.client()
    s = server.create(alice, {"events_requested": [SESSION_REVOKED]})
    jti = publish(server, server.publisher())[s["stream_id"]]
    url = s["delivery"]["endpoint_url"]
    for body in ({"returnImmediately": True}, {"returnImmediately": True, "ack": [jti]}):
        r = server.http.post(url, json=body, headers={"Authorization": f"Bearer {mallory}"})
        assert r.status_code == 404 and r.json()["err"] == "not_found", r.text
    assert _states(server, s["stream_id"])[jti][0] == "pending"
    assert list(server.poll(alice, s)["sets"]) == [jti]


def test_paused_and_disabled_streams_serve_no_sets(server: Server) -> None:
    rx = server.client()
    s = server.create(rx, {"events_requested": [SESSION_REVOKED]})
    sid = s["stream_id"]
    pub = server.publisher()
    held = publish(server, pub)[sid]

    def set_status(status: str) -> None:
        r = server.req("POST", "/ssf/status", rx, json={"stream_id": sid, "status": status})
        assert r.status_code == 200, r.text

    set_status("paused")
    later = publish(server, pub)[sid]
    assert server.poll(rx, s) == {"sets": {}}
    set_status("enabled")
    assert list(server.poll(rx, s)["sets"]) == [held, later]  # held while paused, in order
    set_status("disabled")
    publish(server, pub)
    assert server.poll(rx, s) == {"sets": {}}
    set_status("enabled")
    assert server.poll(rx, s) == {"sets": {}}  # a disabled stream kept nothing


def test_more_available_is_exact(server: Server) -> None:
    rx = server.client()
    s = server.create(rx, {"events_requested": [SESSION_REVOKED]})
    pub = server.publisher()
    jtis = [publish(server, pub)[s["stream_id"]] for _ in range(3)]
    exact = server.poll(rx, s, maxEvents=3)
    assert list(exact["sets"]) == jtis and "moreAvailable" not in exact
    one_short = server.poll(rx, s, maxEvents=2)
    assert list(one_short["sets"]) == jtis[:2] and one_short["moreAvailable"] is True
    huge = server.poll(rx, s, maxEvents=10**30)
    assert list(huge["sets"]) == jtis and "moreAvailable" not in huge


HOSTILE_POLL_BODIES: list[bytes] = [
    b"[]",
    b"null",
    b'"x"',
    b"{",
    b"\xff\xfe{}",
    b'{"maxEvents": NaN}',
    b'{"maxEvents": Infinity}',
    b'{"maxEvents": 1e400}',
    b'{"maxEvents": -1}',
    b'{"maxEvents": -9223372036854775809}',
    b'{"maxEvents": 1.5}',
    b'{"maxEvents": true}',
    b'{"maxEvents": "5"}',
    b'{"maxEvents": ' + b"9" * 5000 + b"}",
    b'{"returnImmediately": 1}',
    b'{"returnImmediately": null}',
    b'{"ack": {}}',
    b'{"ack": [1]}',
    b'{"ack": [null]}',
    b'{"ack": ["a\\u0000"]}',
    b'{"ack": ["\\ud800"]}',
    b'{"setErrs": []}',
    b'{"setErrs": {"a": {}}}',
    b'{"setErrs": {"a": {"err": 1}}}',
    b'{"setErrs": {"a": {"err": "x", "description": null}}}',
    b'{"setErrs": {"\\u0000": {"err": "x"}}}',
    b'{"unknown": 1}',
    b'{"ack": [' + b",".join(b'"j%d"' % i for i in range(20000)) + b"]}",  # beyond the body limit
]


def test_hostile_poll_bodies_are_400_with_a_json_error(server: Server) -> None:
    rx = server.client()
    s = server.create(rx, {"events_requested": [SESSION_REVOKED]})
    jti = publish(server, server.publisher())[s["stream_id"]]
    url = s["delivery"]["endpoint_url"]
    headers = {"Authorization": f"Bearer {rx}", "Content-Type": "application/json"}
    for body in HOSTILE_POLL_BODIES:
        r = server.http.post(url, content=body, headers=headers)
        assert r.status_code in (400, 413), (body[:60], r.status_code, r.text)
        assert isinstance(r.json().get("err"), str), body[:60]
    # none of them acknowledged or touched anything
    assert _states(server, s["stream_id"]) == {jti: ("pending", None)}


def test_large_ack_and_set_errs_lists_within_the_body_limit(server: Server) -> None:
    rx = server.client()
    s = server.create(rx, {"events_requested": [SESSION_REVOKED]})
    pub = server.publisher()
    jtis = [publish(server, pub)[s["stream_id"]] for _ in range(3)]
    filler = [f"u{i}" for i in range(2000)]
    errs: dict[str, Any] = {f"b{i}": {"err": "x"} for i in range(600)}
    errs[jtis[1]] = {"err": "jwt_aud"}
    got = server.poll(rx, s, ack=[*filler, jtis[0]], setErrs=errs)
    assert list(got["sets"]) == [jtis[2]]
    states = _states(server, s["stream_id"])
    assert [states[j][0] for j in jtis] == ["delivered", "rejected", "pending"]


def test_concurrent_polls_acks_and_status_changes_never_500(server: Server) -> None:
    """Several pollers of one stream acknowledge overlapping SETs (in different orders) while
    the receiver changes the status, asks for verification and events keep coming: every
    answer is 2xx/4xx (on PostgreSQL a lock-order deadlock shows as a 503)."""
    rx = server.client()
    s = server.create(rx, {"events_requested": [SESSION_REVOKED]})
    sid, url = s["stream_id"], s["delivery"]["endpoint_url"]
    pub = server.publisher()
    stop = time.monotonic() + 5
    problems: list[str] = []
    seen: list[str] = []

    def poller(seed: int) -> None:
        rnd = random.Random(seed)
        with httpx.Client(timeout=30) as http:
            while time.monotonic() < stop:
                acks = rnd.sample(seen, min(len(seen), 20))
                body = {"returnImmediately": True, "maxEvents": 10, "ack": acks}
                if acks and rnd.random() < 0.3:
                    body["setErrs"] = {acks[-1]: {"err": "jwt_aud"}}
                    body["ack"] = acks[:-1]
                r = http.post(url, json=body, headers={"Authorization": f"Bearer {rx}"})
                if r.status_code != 200:
                    problems.append(f"poll: {r.status_code} {r.text}")
                    continue
                seen.extend(r.json()["sets"])

    def receiver() -> None:
        rnd = random.Random(1)
        while time.monotonic() < stop:
            if rnd.random() < 0.6:
                status = rnd.choice(["enabled", "enabled", "paused", "disabled"])
                r = server.req("POST", "/ssf/status", rx, json={"stream_id": sid, "status": status})
            else:
                r = server.req("POST", "/ssf/verify", rx, json={"stream_id": sid})
            if r.status_code >= 300 and r.status_code != 429:  # the management rate limit may answer
                problems.append(f"{r.request.url.path}: {r.status_code} {r.text}")

    def publisher() -> None:
        i = 0
        while time.monotonic() < stop:
            body = {
                "subject": {"format": "email", "email": f"c{i}@example.com"},
                "events": {SESSION_REVOKED: {}},
            }
            r = server.req("POST", "/events", pub, json=body)
            if r.status_code != 202:
                problems.append(f"publish: {r.status_code} {r.text}")
            i += 1

    threads = [threading.Thread(target=poller, args=(n,)) for n in range(3)]
    threads += [threading.Thread(target=receiver), threading.Thread(target=publisher)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not problems, problems[:5]
    assert len(seen) > 10
