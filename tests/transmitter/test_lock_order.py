"""Multi-row outbox writes on PostgreSQL take their rows in one order (id), so a poll's
acknowledgements, a disable, maintenance and publishers trimming a paused stream never
deadlock each other. Before, a disable racing an acknowledgement of the same stream's SETs
(the jti index visits them in jti order) failed with ``deadlock detected`` within a few rounds
of this test; SQLite runs it too (one writer at a time: nothing to order, nothing may fail)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

from ssf.poll import PollRequest
from ssf.stream import StreamRequest
from ssf.subjects import Subject
from tests.transmitter.conftest import SESSION_REVOKED
from transmitter.auth import Principal
from transmitter.db import DELIVERED, EXPIRED, PENDING
from transmitter.service import Transmitter
from transmitter.settings import TransmitterSettings

_SECONDS = 8.0  # rounds until then; the old statements deadlocked in about one round in six


def _poll(**members: Any) -> PollRequest:
    return PollRequest.model_validate({"returnImmediately": True, **members})


def _round(tx: Transmitter, p: Principal, sid: str, paused: bool, failures: list[str]) -> None:
    subject = Subject.email("a@example.com")
    tx.set_status(sid, "enabled")
    tx.poll_once(p, sid, _poll(maxEvents=0))
    tx.publish_many([(subject, {SESSION_REVOKED: {}}, None)] * 800)
    sets, _ = tx.poll_once(p, sid, _poll(maxEvents=800))
    jtis = list(sets)
    random.shuffle(jtis)
    if paused:
        tx.set_status(sid, "paused")  # maintenance and trims expire its SETs
    err = {"err": "invalid_request", "description": "bad"}
    work = {
        "ack": lambda: tx.poll_once(p, sid, _poll(ack=jtis, maxEvents=0)),
        "ack+setErrs": lambda: tx.poll_once(
            p, sid, _poll(ack=jtis[-50:], setErrs={j: err for j in jtis[:3]}, maxEvents=0)
        ),
        "disable": lambda: tx.set_status(sid, "disabled"),
        "maintain+publish": lambda: (
            tx.maintain(time.time() + 10 * tx.settings.paused_retention_seconds),
            tx.publish(subject, {SESSION_REVOKED: {}}),
        ),
    }
    barrier = threading.Barrier(len(work))

    def run(name: str, fn: Any) -> None:
        barrier.wait()
        try:
            fn()
        except Exception as exc:  # the test reports every failure
            failures.append(f"{name}: {exc}".split("\n")[0])

    threads = [threading.Thread(target=run, args=item) for item in work.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_acks_disable_maintenance_and_trims_do_not_deadlock(
    tmp_path: Path, db_config: dict[str, Any]
) -> None:
    tx = Transmitter(
        TransmitterSettings(
            issuer="https://tx.example",
            secret_file=tmp_path / "secret",
            signing_alg="ES256",
            paused_max_events=700,
            outbox_keep_seconds=0,  # keeps the done rows this test counts
            **db_config,
        )
    )
    try:
        info, _ = tx.auth.add_client("rx")
        p = Principal(info.client_id, frozenset({"ssf.read", "ssf.manage"}), info.client_id)
        sid = tx.create_stream(p, StreamRequest(events_requested=[SESSION_REVOKED]))["stream_id"]
        failures: list[str] = []
        rounds = 0
        deadline = time.monotonic() + _SECONDS
        while time.monotonic() < deadline or rounds < 2:
            _round(tx, p, sid, rounds % 2 == 1, failures)
            rounds += 1
        assert failures == []
        counts = tx.outbox_counts(sid)
        assert counts.get(DELIVERED, 0) > 0 and counts.get(EXPIRED, 0) > 0  # the writes did run
        assert counts.get(PENDING, 0) < 800
    finally:
        tx.close()
