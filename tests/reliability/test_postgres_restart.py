"""A real PostgreSQL restarted and stopped under running transmitter instances.

The cluster is private (``initdb`` on a free port, see ``tests/support/private_services``),
so the shared server at 127.0.0.1:5432 is never touched. Documented behaviour
(transmitter/README.md, "Deployment shape"), checked here:

- while the database is away ``POST /events`` answers ``503 temporarily_unavailable`` with
  ``Retry-After`` (never 202 for something not committed, never a 500), ``/readyz`` answers
  503 naming the database, ``/metrics`` has ``ssf_transmitter_database_up 0``, management
  calls answer 503 as well, the process keeps serving what needs no database (``/jwks.json``);
- once it is back every instance serves again by itself (no restart, no operator), delivery
  resumes, every SET answered 202 reaches the receiver exactly once and in per-subject order.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import sqlalchemy
import sqlalchemy.pool

from tests.reliability.chaos import FaultFigures
from tests.reliability.support import (
    CHAOS,
    RecordingReceiver,
    TxCluster,
    per_subject_txn,
    recording_receiver,
    wait_until,
)
from tests.support.private_services import PgCluster, pg_cluster


@dataclass
class Publisher:
    """Publishes round-robin over the instances until stopped; records every answer."""

    cluster: TxCluster
    stream: str
    prefix: str = "pg"
    subjects: int = 3
    accepted: set[str] = field(default_factory=set)
    codes: Counter[int] = field(default_factory=Counter)
    #: (monotonic time sent, time answered, status) of every publish (0: no HTTP answer).
    answers: list[tuple[float, float, int]] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        k = 0
        with httpx.Client(timeout=10) as http:
            while not self.stop.is_set():
                subject = f"{self.prefix}{k % self.subjects}@example.com"
                sent = time.monotonic()
                try:
                    r = self.cluster.publish(
                        http, k % self.cluster.n, subject, per_subject_txn(subject, k // self.subjects)
                    )
                except httpx.HTTPError as exc:
                    self.bad.append(f"no answer: {exc!r}")
                    self.answers.append((sent, time.monotonic(), 0))
                    time.sleep(0.05)
                    continue
                self.codes[r.status_code] += 1
                self.answers.append((sent, time.monotonic(), r.status_code))
                if r.status_code == 202:
                    self.accepted.add(r.json()["jti"][self.stream])
                elif r.status_code == 503:
                    if r.json().get("err") != "temporarily_unavailable" or "retry-after" not in r.headers:
                        self.bad.append(f"503 without the documented body/header: {r.text}")
                else:
                    self.bad.append(f"{r.status_code}: {r.text[:300]}")
                k += 1
                time.sleep(0.02)

    def wait_for_202(self, since: float, timeout: float, what: str) -> float:
        """Seconds from ``since`` to the first 202 of a publish sent after it."""

        def first() -> float | None:
            return next((t for sent, t, s in list(self.answers) if sent > since and s == 202), None)

        return float(wait_until(first, timeout=timeout, interval=0.05, what=what)) - since


def _ready(cluster: TxCluster, i: int) -> httpx.Response:
    return httpx.get(cluster.url(i) + "/readyz", timeout=10)


def _listening(pg: PgCluster) -> int:
    """``LISTEN`` connections the instances hold on the private cluster (cross-instance wake-ups)."""
    engine = sqlalchemy.create_engine(pg.url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sqlalchemy.text("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %'")
                ).scalar_one()
            )
    finally:
        engine.dispose()


def _database_up(cluster: TxCluster, i: int) -> float:
    for line in httpx.get(cluster.url(i) + "/metrics", timeout=10).text.splitlines():
        if line.startswith("ssf_transmitter_database_up "):
            return float(line.split()[1])
    raise AssertionError("ssf_transmitter_database_up not in /metrics")


def _order_report(rec: RecordingReceiver) -> str:
    """First applications per subject as ``seq@time``, and overlapping pushes (diagnosis)."""
    seqs: dict[str, list[str]] = {}
    for a in rec.applied:
        subject, seq = str(a.txn).rsplit("#", 1)
        seqs.setdefault(subject, []).append(f"{seq}@{a.at % 100:.2f}")
    return f"overlapping pushes={rec.overlaps}; " + "; ".join(f"{k}: {' '.join(v)}" for k, v in seqs.items())


def _restart_run(
    pg: PgCluster, tmp: Path, *, restarts: int, stops: int, stop_seconds: float, publishers: int = 1
) -> FaultFigures:
    """``publishers`` threads publish throughout; the first one's answers time the faults."""
    cluster = TxCluster(pg.url, None, tmp, 2)
    cluster.prepare()
    try:
        cluster.start_all()
        with recording_receiver(cluster.issuer, cluster.audience) as rec, httpx.Client(timeout=10) as http:
            rec.set_keys(cluster.jwks())
            sid = cluster.create_push_stream(http, f"{rec.url}/push/pg")
            pubs = [Publisher(cluster, sid, prefix=f"pg{p}-") for p in range(publishers)]
            pub = pubs[0]
            threads = [threading.Thread(target=p.run) for p in pubs]
            for t in threads:
                t.start()
            try:
                wait_until(lambda: len(pub.accepted) >= 5, what="publishing before the fault")
                wait_until(lambda: _listening(pg) >= cluster.n, what="every instance listening")
                recover = _faults(
                    pg, cluster, pub, rec, restarts=restarts, stops=stops, stop_seconds=stop_seconds
                )
            finally:
                for p in pubs:
                    p.stop.set()
                for t in threads:
                    t.join(30)
            codes = sum((p.codes for p in pubs), Counter[int]())
            accepted = set().union(*(p.accepted for p in pubs))
            bad = [b for p in pubs for b in p.bad]
            assert not bad, bad[:5]
            assert set(codes) <= {202, 503}, codes
            assert cluster.alive() == [0, 1]  # recovered by themselves, nobody restarted them
            wait_until(lambda: accepted <= rec.jtis(), timeout=60, what="every accepted SET delivered")
            assert rec.duplicates_applied() == 0
            assert rec.order_violations() == 0, _order_report(rec)
            assert len(accepted) >= 10, codes  # it did publish through the faults
            figures = FaultFigures(
                name=f"postgres restart x{restarts} stop x{stops}",
                published=len(accepted),
                delivered=sum(1 for a in rec.answers if a[2] == 202),
                applied=len(rec.jtis() & accepted),
                lost=len(accepted - rec.jtis()),
                duplicates_applied=rec.duplicates_applied(),
                order_violations=rec.order_violations(),
                overlapping_pushes=rec.overlaps,
                faults=codes[503],
                recover_seconds=recover,
                fault_label="publishes_answered_503",
            )
            print(figures.row())
            return figures
    finally:
        cluster.stop_all()


def _faults(
    pg: PgCluster,
    cluster: TxCluster,
    pub: Publisher,
    rec: RecordingReceiver,
    *,
    restarts: int,
    stops: int,
    stop_seconds: float,
) -> float:
    """Runs the faults; returns the longest time from the database being back to a 202."""
    worst = 0.0
    for _ in range(restarts):
        # a fast restart: every connection is cut, the server is back within a second
        pg.restart("fast")
        back = time.monotonic()
        worst = max(worst, pub.wait_for_202(back, 30, "publish resumes after the restart"))
        time.sleep(0.5)
    for _ in range(stops):
        pg.stop("fast")
        down_at = time.monotonic()
        n = len(pub.answers)
        # while it is down: publishes refused with 503 (no 202: nothing can be committed)
        wait_until(lambda n=n: len(pub.answers) >= n + 5, timeout=30, what="publishes during the outage")
        for i in range(cluster.n):
            r = _ready(cluster, i)
            assert r.status_code == 503 and r.json()["checks"]["database"].startswith("error"), r.text
            assert _database_up(cluster, i) == 0
            # management answers 503 too; what needs no database is still served
            r = httpx.get(
                cluster.url(i) + "/ssf/streams",
                headers={"Authorization": f"Bearer {cluster.receiver_token}"},
                timeout=10,
            )
            assert r.status_code == 503 and r.json()["err"] == "temporarily_unavailable", r.text
            assert "retry-after" in r.headers
            assert httpx.get(cluster.url(i) + "/jwks.json", timeout=10).status_code == 200
        time.sleep(max(0.0, stop_seconds - (time.monotonic() - down_at)))
        during = [s for sent, _t, s in list(pub.answers)[n:] if sent > down_at]
        assert during and set(during) == {503}, Counter(during)
        delivered_before = len(rec.jtis())
        pg.start()
        up_at = time.monotonic()
        worst = max(worst, pub.wait_for_202(up_at, 30, "publish resumes after the start"))
        wait_until(
            lambda: all(_ready(cluster, i).status_code == 200 for i in range(cluster.n)),
            timeout=30,
            what="readyz 200 again on every instance",
        )
        assert all(_database_up(cluster, i) == 1 for i in range(cluster.n))
        # each instance's LISTEN connection is back (long polls wake across instances again)
        wait_until(lambda: _listening(pg) >= cluster.n, timeout=30, what="LISTEN re-established")
        # delivery resumes by itself: SETs accepted after the start reach the receiver
        wait_until(lambda d=delivered_before: len(rec.jtis()) > d, timeout=30, what="delivery resumes")
        time.sleep(0.5)
    return worst


def test_postgresql_restarted_and_stopped_under_two_instances(tmp_path: Path) -> None:
    with pg_cluster() as pg:
        _restart_run(pg, tmp_path, restarts=1, stops=1, stop_seconds=2)


@pytest.mark.skipif(not CHAOS, reason="long form: set SSF_CHAOS=1 (make chaos)")
@pytest.mark.timeout(900)
def test_postgresql_restarted_and_stopped_repeatedly(tmp_path: Path) -> None:
    with pg_cluster() as pg:
        figures = _restart_run(pg, tmp_path, restarts=5, stops=3, stop_seconds=5, publishers=3)
        assert figures.published >= 200


@pytest.mark.skipif(not CHAOS, reason="long form: set SSF_CHAOS=1 (make chaos)")
def test_long_polls_wake_across_instances_after_restarts(tmp_path: Path) -> None:
    """Before any fault, after each restart and after a stop/start, a long poll held on one
    instance wakes for the first publish through the other: only NOTIFY on the re-established
    connections can wake it (the re-check interval is longer than the long poll)."""
    env = {"SSF_TRANSMITTER_WORKER_POLL_INTERVAL": "60", "SSF_TRANSMITTER_LONG_POLL_TIMEOUT": "20"}
    with pg_cluster() as pg, httpx.Client(timeout=40) as http:
        cluster = TxCluster(pg.url, None, tmp_path, 2, env)
        cluster.prepare()
        try:
            cluster.start_all()
            sid = cluster.create_poll_stream(http, 0)
            auth = {"Authorization": f"Bearer {cluster.receiver_token}"}
            for fault in ("none", "restart", "stop", "restart"):
                if fault == "restart":
                    pg.restart("fast")
                elif fault == "stop":
                    pg.stop("fast")
                    time.sleep(3)
                    pg.start()
                wait_until(
                    lambda: all(_ready(cluster, i).status_code == 200 for i in range(cluster.n)),
                    timeout=30,
                    what="readyz 200 on every instance",
                )
                wait_until(lambda: _listening(pg) >= cluster.n, timeout=30, what="LISTEN re-established")
                result: dict[str, object] = {}

                def long_poll(out: dict[str, object] = result) -> None:
                    r = http.post(
                        cluster.url(1) + f"/ssf/poll/{sid}",
                        headers=auth,
                        json={"maxEvents": 10, "returnImmediately": False},
                    )
                    out["status"], out["body"], out["at"] = r.status_code, r.json(), time.monotonic()

                t = threading.Thread(target=long_poll)
                t.start()
                time.sleep(1.0)  # the long poll is registered and waiting
                r = cluster.publish(http, 0, f"{fault}@example.com")
                assert r.status_code == 202, r.text
                published_at, jti = time.monotonic(), r.json()["jti"][sid]
                t.join(30)
                assert result["status"] == 200 and jti in result["body"]["sets"], result  # type: ignore[index,operator]
                woke = float(result["at"]) - published_at  # type: ignore[arg-type]
                assert woke < 10, (
                    f"{fault}: the long poll waited {woke:.1f}s: woken by its timeout, not NOTIFY"
                )
                ack = http.post(
                    cluster.url(0) + f"/ssf/poll/{sid}",
                    headers=auth,
                    json={"ack": [jti], "returnImmediately": True},
                )
                assert ack.status_code == 200, ack.text
        finally:
            cluster.stop_all()
