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

    def row(self) -> str:
        return (
            f"{self.name:<28} published={self.published:<6} delivered={self.delivered:<6} "
            f"applied={self.applied:<6} lost={self.lost} dup_applied={self.duplicates_applied} "
            f"order_violations={self.order_violations} overlaps={self.overlapping_pushes} "
            f"faults={self.faults} recover={self.recover_seconds:.2f}s"
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
