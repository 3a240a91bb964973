"""Limits that hold under abuse, each configurable: request body size, JSON depth, SETs per
poll, long polls per stream, management API rate per client, failed push authentication
per client address, JWKS re-fetching on unknown ``kid``s."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from ssf.events import SessionRevoked
from ssf.keys import generate_signing_key
from ssf.subjects import Subject
from tests.receiver.conftest import run_receiver
from tests.reliability.support import SESSION_REVOKED, wait_until
from tests.reliability.test_receiver_redis import fake_transmitter
from tests.support.services import free_port, serve
from transmitter.app import create_app
from transmitter.service import Transmitter
from transmitter.settings import TransmitterSettings


@contextlib.contextmanager
def transmitter(tmp: Path, **over: Any) -> Iterator[tuple[str, Transmitter]]:
    port = free_port()
    values: dict[str, Any] = {
        "issuer": f"http://127.0.0.1:{port}",
        "dev_mode": True,
        "database_url": f"sqlite:///{tmp / 'tx.db'}",
        "secret_file": tmp / "secret",
        "signing_alg": "ES256",
        "min_verification_interval": 0,
        **over,
    }
    tx = Transmitter(TransmitterSettings(**values))
    with serve(create_app(transmitter=tx), port=port) as url:
        yield url, tx
    tx.close()


def _token(tx: Transmitter, scopes: list[str] | None = None) -> str:
    info, _ = tx.auth.add_client("c-" + str(len(tx.auth.clients())), scopes)
    return str(tx.auth.issue_token(info, None)["access_token"])


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth - 1):
        value = {"d": value}
    return value


def test_transmitter_body_size_json_depth_and_management_rate(tmp_path: Path) -> None:
    with transmitter(
        tmp_path, max_body_bytes=2048, max_json_depth=6, management_rate=0.001, management_burst=5
    ) as (
        url,
        tx,
    ):
        token, other = _token(tx), _token(tx)
        with httpx.Client(base_url=url, timeout=10) as http:
            h = {"Authorization": f"Bearer {token}"}
            big = http.post("/ssf/streams", headers=h, content=json.dumps({"description": "x" * 3000}))
            assert big.status_code == 413 and big.json()["err"] == "invalid_request"
            deep = http.post("/ssf/streams", headers=h, json={"description": "d", "x": _nested(7)})
            assert deep.status_code == 400 and "deeper" in deep.json()["description"]
            assert not tx.list_streams()  # neither created anything
            ok = http.post("/ssf/streams", headers=h, json={"events_requested": [_nested(3)]})
            assert ok.status_code == 400  # parsed (depth fine), then refused by the model
            answers = [http.get("/ssf/streams", headers=h).status_code for _ in range(6)]
            assert 429 in answers
            r = http.get("/ssf/streams", headers=h)
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
            assert r.json()["err"] == "too_many_requests"
            # per client: another client is not affected
            assert http.get("/ssf/streams", headers={"Authorization": f"Bearer {other}"}).status_code == 200


def test_sets_per_poll_and_long_polls_per_stream(tmp_path: Path) -> None:
    with transmitter(tmp_path, max_poll_events=5, max_poll_connections_per_stream=2, long_poll_timeout=5) as (
        url,
        tx,
    ):
        token, pub = _token(tx), _token(tx, ["ssf.publish"])
        with httpx.Client(base_url=url, timeout=20) as http:
            h = {"Authorization": f"Bearer {token}"}
            sid = http.post("/ssf/streams", headers=h, json={"events_requested": [SESSION_REVOKED]}).json()[
                "stream_id"
            ]
            for i in range(8):
                r = http.post(
                    "/events",
                    headers={"Authorization": f"Bearer {pub}"},
                    json={
                        "subject": {"format": "email", "email": f"p{i}@x.example"},
                        "events": {SESSION_REVOKED: {}},
                    },
                )
                assert r.status_code == 202
            got = http.post(
                f"/ssf/poll/{sid}", headers=h, json={"maxEvents": 1000, "returnImmediately": True}
            ).json()
            assert len(got["sets"]) == 5 and got["moreAvailable"] is True
            http.post(f"/ssf/poll/{sid}", headers=h, json={"ack": list(got["sets"]), "maxEvents": 0})
            rest = http.post(f"/ssf/poll/{sid}", headers=h, json={"returnImmediately": True}).json()
            http.post(f"/ssf/poll/{sid}", headers=h, json={"ack": list(rest["sets"]), "maxEvents": 0})

            results: list[int] = []

            def long_poll() -> None:
                with httpx.Client(base_url=url, timeout=20) as c:
                    results.append(c.post(f"/ssf/poll/{sid}", headers=h, json={}).status_code)

            waiting = [threading.Thread(target=long_poll) for _ in range(2)]
            for t in waiting:
                t.start()
            wait_until(lambda: tx.notifier.waiting(sid) == 2, what="two long polls waiting")
            third = http.post(f"/ssf/poll/{sid}", headers=h, json={})
            assert third.status_code == 429 and "retry-after" in third.headers
            # a short poll is not a held connection: still served
            assert (
                http.post(f"/ssf/poll/{sid}", headers=h, json={"returnImmediately": True}).status_code == 200
            )
            for t in waiting:
                t.join(20)
            assert results == [200, 200]


def test_receiver_failed_push_authentication_is_rate_limited(tmp_path: Path) -> None:
    with (
        fake_transmitter() as fake,
        run_receiver(
            fake, tmp_path, verify_on_start=False, push_auth_failure_limit=3, push_auth_failure_window=60
        ) as rcv,
    ):
        good = fake.sign(Subject.opaque("auth-limit"), SessionRevoked())
        codes = [rcv.push(good, auth=f"Bearer guess-{i}").status_code for i in range(3)]
        assert codes == [401, 401, 401]
        blocked = rcv.push(good, auth="Bearer guess-4")
        assert blocked.status_code == 429 and blocked.json()["err"] == "too_many_requests"
        assert "retry-after" in blocked.headers
        # while blocked, even the right credential is not evaluated: guessing gains nothing
        assert rcv.push(good).status_code == 429
        assert rcv.receiver.stats["accepted"] == 0


def test_receiver_jwks_refetch_is_bounded_under_garbage_kids(tmp_path: Path) -> None:
    with (
        fake_transmitter() as fake,
        run_receiver(fake, tmp_path, verify_on_start=False, jwks_min_refresh_interval=30) as rcv,
    ):
        before = fake.jwks_fetches
        for i in range(15):
            rogue = generate_signing_key("ES256", kid=f"garbage-{i}")
            r = rcv.push(fake.sign(Subject.opaque(f"g-{i}"), SessionRevoked(), key=rogue))
            assert r.status_code == 400
        assert fake.jwks_fetches - before <= 1
