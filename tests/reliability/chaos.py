"""Fault runs shared by the tests (short form) and ``bench.cluster_bench`` (figures).

:func:`kill_chaos`: transmitter instances on one PostgreSQL are SIGKILLed at random points
and restarted while publishers spread events over the live instances; every accepted SET must
then be applied exactly once by the receiver engine, in per-subject order.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.reliability.support import per_subject_txn, recording_receiver, tx_cluster, wait_until


@dataclass
class FaultFigures:
    name: str
    published: int
    delivered: int  # POSTs the receiver answered 202 (re-sends included)
    applied: int
    lost: int
    duplicates_applied: int
    order_violations: int
    overlapping_pushes: int
    faults: int
    recover_seconds: float
    fault_label: str = "faults"

    def row(self) -> str:
        return (
            f"{self.name:<28} published={self.published:<6} delivered={self.delivered:<6} "
            f"applied={self.applied:<6} lost={self.lost} dup_applied={self.duplicates_applied} "
            f"order_violations={self.order_violations} overlaps={self.overlapping_pushes} "
            f"{self.fault_label}={self.faults} recover={self.recover_seconds:.2f}s"
        )


def kill_chaos(
    database_url: str,
    tmp: Path,
    *,
    events: int,
    instances: int = 3,
    streams: int = 2,
    publishers: int = 4,
    kill_every: tuple[float, float] = (0.5, 1.2),
    seed: int | None = None,
) -> FaultFigures:
    rnd = random.Random(seed)
    with tx_cluster(database_url, tmp, instances) as cluster, httpx.Client(timeout=5) as http:
        cluster.start_all()
        with recording_receiver(cluster.issuer, cluster.audience) as rec:
            rec.set_keys(cluster.jwks())
            for j in range(streams):
                cluster.create_push_stream(http, f"{rec.url}/push/c{j}")
            accepted: set[str] = set()
            lock = threading.Lock()
            done = threading.Event()
            per_publisher = events // publishers
            faults = 0
            last_fault = time.monotonic()

            def publish(p: int) -> None:
                with httpx.Client(timeout=5) as client:
                    for k in range(per_publisher):
                        subject = f"p{p}-s{k % 5}@example.com"
                        txn = per_subject_txn(subject, k // 5)
                        for _attempt in range(20):
                            alive = cluster.alive() or [0]
                            try:
                                r = cluster.publish(client, rnd.choice(alive), subject, txn)
                            except httpx.HTTPError:
                                time.sleep(0.05)
                                continue
                            if r.status_code == 202:
                                with lock:
                                    accepted.update(r.json()["jti"].values())
                                break
                            time.sleep(0.05)

            def killer() -> None:
                nonlocal faults, last_fault
                while not done.is_set():
                    if done.wait(rnd.uniform(*kill_every)):
                        break
                    alive = cluster.alive()
                    if len(alive) > 1:
                        victim = rnd.choice(alive)
                        cluster.kill(victim)
                        faults += 1
                        last_fault = time.monotonic()
                        if done.wait(rnd.uniform(0.2, 0.8)):
                            cluster.start(victim, wait=False)
                            break
                        cluster.start(victim, wait=False)
                        last_fault = time.monotonic()

            threads = [threading.Thread(target=publish, args=(p,)) for p in range(publishers)]
            k = threading.Thread(target=killer)
            k.start()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            done.set()
            k.join()
            for i in range(instances):
                if i in cluster.procs:
                    cluster.wait_up(i)
            try:
                wait_until(lambda: accepted <= rec.jtis(), timeout=60 + events / 100, what="drain")
            except AssertionError:
                pass
            recover = time.monotonic() - last_fault
            applied = rec.jtis()
            delivered = sum(1 for a in rec.answers if a[2] == 202)
            return FaultFigures(
                name=f"kill -9 x{instances} instances",
                fault_label="kills",
                published=len(accepted),
                delivered=delivered,
                applied=len(applied & accepted),
                lost=len(accepted - applied),
                duplicates_applied=rec.duplicates_applied(),
                order_violations=rec.order_violations(),
                overlapping_pushes=rec.overlaps,
                faults=faults,
                recover_seconds=recover,
            )


def endpoint_faults(
    database_url: str, tmp: Path, *, mode: str, events: int = 200, outage: float = 2.0
) -> FaultFigures:
    """The receiver's endpoint fails (``mode``: 500, 503, 429, timeout, reset) for ``outage``
    seconds while events are published; figures once everything is applied."""
    from tests.reliability.support import TcpProxy

    env = {"push_timeout": "0.5", "retry_cap_seconds": "600"}
    with tx_cluster(database_url, tmp, 1, **env) as cluster, httpx.Client(timeout=10) as http:
        cluster.start_all()
        with recording_receiver(cluster.issuer, cluster.audience) as rec:
            port = int(rec.url.rsplit(":", 1)[1])
            with TcpProxy(port) as proxy:
                rec.set_keys(cluster.jwks())
                until = [0.0]
                responses = {
                    "500": (500, {}, 0.0),
                    "503": (503, {"Retry-After": "1"}, 0.0),
                    "429": (429, {"Retry-After": "1"}, 0.0),
                    "timeout": (503, {}, 1.0),
                }

                def fault(_stream: str, _n: int) -> tuple[int, dict[str, str], float] | None:
                    if time.monotonic() < until[0] and mode in responses:
                        return responses[mode]
                    return None

                rec.fault = fault
                cluster.create_push_stream(http, f"http://127.0.0.1:{proxy.port}/push/f")
                until[0] = time.monotonic() + outage
                if mode == "reset":
                    proxy.set_mode("down")
                accepted: set[str] = set()
                for k in range(events):
                    subject = f"f{k % 4}@example.com"
                    r = cluster.publish(http, 0, subject, per_subject_txn(subject, k // 4))
                    if r.status_code == 202:
                        accepted.update(r.json()["jti"].values())
                left = until[0] - time.monotonic()
                if left > 0:
                    time.sleep(left)
                if mode == "reset":
                    proxy.set_mode("pass")
                end = time.monotonic()
                # answers the fault produced (resets never reach the receiver: counted as 0)
                attempts_during = sum(1 for a in rec.answers if a[1] < end and a[2] != 202)
                try:
                    wait_until(lambda: accepted <= rec.jtis(), timeout=60, what="catch-up")
                except AssertionError:
                    pass
                recover = time.monotonic() - end
                applied = rec.jtis()
                return FaultFigures(
                    name=f"receiver answers {mode} {outage:.0f}s",
                    published=len(accepted),
                    delivered=sum(1 for a in rec.answers if a[2] == 202),
                    applied=len(applied & accepted),
                    lost=len(accepted - applied),
                    duplicates_applied=rec.duplicates_applied(),
                    order_violations=rec.order_violations(),
                    overlapping_pushes=rec.overlap_by_stream["f"] if mode != "timeout" else 0,
                    faults=attempts_during,
                    recover_seconds=recover,
                    fault_label="failed_pushes",
                )


def database_outage(database_url: str, tmp: Path, *, outage: float = 3.0, rate: float = 50.0) -> FaultFigures:
    """PostgreSQL cut (proxy) for ``outage`` seconds under a steady publish rate."""
    from tests.reliability.support import TcpProxy, TxCluster, pg_schema

    with TcpProxy(5432) as proxy, pg_schema(database_url) as schema, httpx.Client(timeout=10) as http:
        via = database_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        cluster = TxCluster(via, schema, tmp, 1)
        cluster.prepare()
        try:
            cluster.start_all()
            with recording_receiver(cluster.issuer, cluster.audience) as rec:
                rec.set_keys(cluster.jwks())
                cluster.create_push_stream(http, f"{rec.url}/push/db")
                accepted: set[str] = set()
                refused = errors = 0
                cut_at = restore_at = first_ok_after = 0.0
                start = time.monotonic()
                k = 0
                while True:
                    now = time.monotonic()
                    if not cut_at and now - start > 1.0:
                        proxy.set_mode("down")
                        cut_at = time.monotonic()
                    if cut_at and not restore_at and now - cut_at > outage:
                        proxy.set_mode("pass")
                        restore_at = time.monotonic()
                    r = cluster.publish(
                        http, 0, f"d{k % 4}@example.com", per_subject_txn(f"d{k % 4}@example.com", k // 4)
                    )
                    k += 1
                    if r.status_code == 202:
                        accepted.update(r.json()["jti"].values())
                        if restore_at and not first_ok_after:
                            first_ok_after = time.monotonic() - restore_at
                    elif r.status_code == 503:
                        refused += 1
                    else:
                        errors += 1
                    if first_ok_after and time.monotonic() - restore_at > 1.0:
                        break
                    time.sleep(1 / rate)
                try:
                    wait_until(lambda: accepted <= rec.jtis(), timeout=60, what="drain")
                except AssertionError:
                    pass
                applied = rec.jtis()
                fig = FaultFigures(
                    name=f"postgres away {outage:.0f}s",
                    published=len(accepted),
                    delivered=sum(1 for a in rec.answers if a[2] == 202),
                    applied=len(applied & accepted),
                    lost=len(accepted - applied),
                    duplicates_applied=rec.duplicates_applied(),
                    order_violations=rec.order_violations(),
                    overlapping_pushes=rec.overlaps,
                    faults=refused,
                    recover_seconds=first_ok_after,
                    fault_label="publishes_answered_503",
                )
                fig.name += f" (other 5xx={errors})"
                return fig
        finally:
            cluster.stop_all()
