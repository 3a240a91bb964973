"""Several `ssf transmitter serve` processes on one PostgreSQL database share the work."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy

from tests.reliability.support import (
    RecordingReceiver,
    TxCluster,
    per_subject_txn,
    recording_receiver,
    tx_cluster,
    wait_until,
)
from tests.support.services import require_postgres


def _publish_round_robin(
    cluster: TxCluster, http: httpx.Client, n: int, subjects: int, instances: list[int]
) -> list[dict[str, str]]:
    accepted = []
    for k in range(n):
        subject = f"u{k % subjects}@example.com"
        i = instances[k % len(instances)]
        r = cluster.publish(http, i, subject, per_subject_txn(subject, k // subjects))
        assert r.status_code == 202, r.text
        accepted.append(r.json()["jti"])
    return accepted


def _check_exactly_once(rec: RecordingReceiver, jtis: set[str]) -> None:
    wait_until(lambda: jtis <= rec.jtis(), timeout=30, what="every accepted SET applied")
    assert rec.duplicates_applied() == 0
    assert rec.order_violations() == 0
    assert not rec.refused


def test_any_instance_manages_and_publishes_and_no_set_is_pushed_twice_at_once(tmp_path: Path) -> None:
    url = require_postgres()
    with tx_cluster(url, tmp_path, 2) as cluster, httpx.Client(timeout=10) as http:
        cluster.start_all()
        with recording_receiver(cluster.issuer, cluster.audience) as rec:
            rec.set_keys(cluster.jwks())
            rec.delay = 0.003  # a push in flight lasts long enough for an overlap to show
            streams = [cluster.create_push_stream(http, f"{rec.url}/push/s{j}", i=j % 2) for j in range(3)]
            auth = {"Authorization": f"Bearer {cluster.receiver_token}"}
            # management through the other instance sees and changes the same streams
            for j, sid in enumerate(streams):
                other = cluster.url((j + 1) % 2)
                got = http.get(other + "/ssf/streams", params={"stream_id": sid}, headers=auth)
                assert got.status_code == 200 and got.json()["stream_id"] == sid
            r = http.patch(
                cluster.url(1) + "/ssf/streams",
                headers=auth,
                json={"stream_id": streams[0], "description": "patched on instance 1"},
            )
            assert r.status_code == 200
            got = http.get(cluster.url(0) + "/ssf/streams", params={"stream_id": streams[0]}, headers=auth)
            assert got.json()["description"] == "patched on instance 1"

            accepted = _publish_round_robin(cluster, http, 60, 6, [0, 1])
            jtis = {j for per in accepted for j in per.values()}
            assert len(jtis) == 60 * 3
            _check_exactly_once(rec, jtis)
            assert rec.overlaps == 0


def test_long_poll_on_one_instance_wakes_for_a_publish_on_another(tmp_path: Path) -> None:
    url = require_postgres()
    # The worker's re-check interval is longer than the long poll: only NOTIFY can wake it.
    with (
        tx_cluster(url, tmp_path, 2, worker_poll_interval="60", long_poll_timeout="20") as cluster,
        httpx.Client(timeout=40) as http,
    ):
        cluster.start_all()
        sid = cluster.create_poll_stream(http, 0)
        result: dict[str, Any] = {}

        def long_poll() -> None:
            r = http.post(
                cluster.url(1) + f"/ssf/poll/{sid}",
                headers={"Authorization": f"Bearer {cluster.receiver_token}"},
                json={"maxEvents": 10, "returnImmediately": False},
            )
            result["status"], result["body"] = r.status_code, r.json()

        t = threading.Thread(target=long_poll)
        t.start()
        engine = sqlalchemy.create_engine(url)
        try:
            # The long poll is registered once its first (empty) selection touched the stream.
            def waiting() -> bool:
                with engine.connect() as conn:
                    n = conn.execute(
                        sqlalchemy.text("SELECT count(*) FROM pg_stat_activity WHERE query = :q"),
                        {"q": f'LISTEN "ssf_outbox_{cluster.schema}"'},
                    ).scalar_one()
                return bool(n >= 2)

            wait_until(waiting, what="both instances listening")
        finally:
            engine.dispose()
        time.sleep(0.5)
        r = cluster.publish(http, 0, "poller@example.com")
        assert r.status_code == 202
        jti = r.json()["jti"][sid]
        t.join(30)
        assert result["status"] == 200
        assert jti in result["body"]["sets"]


def test_an_instance_killed_mid_push_has_its_claims_taken_over(tmp_path: Path) -> None:
    url = require_postgres()
    with tx_cluster(url, tmp_path, 2) as cluster, httpx.Client(timeout=10) as http:
        cluster.start_all()
        with recording_receiver(cluster.issuer, cluster.audience) as rec:
            rec.set_keys(cluster.jwks())
            rec.delay = 0.15  # slow receiver: the claim is held mid-push when the owner dies
            sid = cluster.create_push_stream(http, f"{rec.url}/push/k")
            accepted = _publish_round_robin(cluster, http, 20, 2, [0, 1])
            jtis = {per[sid] for per in accepted}
            wait_until(lambda: len(rec.applied) >= 2, what="pushing started")
            engine = sqlalchemy.create_engine(url)
            try:
                with engine.connect() as conn:
                    owner = conn.execute(
                        sqlalchemy.text(f'SELECT lease_owner FROM "{cluster.schema}".ssf_stream')
                    ).scalar_one()
            finally:
                engine.dispose()
            assert owner is not None
            victim = int(owner[2 : owner.index("-")])
            before = len(rec.applied)
            cluster.kill(victim)
            assert before < len(jtis)  # the kill left SETs to deliver
            rec.delay = 0.0
            _check_exactly_once(rec, jtis)
            assert cluster.alive() == [1 - victim]
            assert rec.overlaps == 0
