"""PostgreSQL going away under a running transmitter process (a TCP proxy we cut, so the
shared server other tests use is untouched): publish answers 503 rather than accepting what
it cannot keep, and everything recovers by itself once the database is back."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.reliability.support import (
    CHAOS,
    TcpProxy,
    TxCluster,
    per_subject_txn,
    pg_schema,
    recording_receiver,
    tx_cluster,
    wait_until,
)
from tests.support.services import require_postgres


def test_publish_answers_503_while_the_database_is_away_and_recovers(tmp_path: Path) -> None:
    direct = require_postgres()
    with TcpProxy(5432) as proxy, pg_schema(direct) as schema, httpx.Client(timeout=10) as http:
        via_proxy = direct.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        cluster = TxCluster(via_proxy, schema, tmp_path, 1)
        cluster.prepare()
        try:
            cluster.start_all()
            with recording_receiver(cluster.issuer, cluster.audience) as rec:
                rec.set_keys(cluster.jwks())
                sid = cluster.create_push_stream(http, f"{rec.url}/push/db")
                accepted: list[str] = []
                r = cluster.publish(http, 0, "before@example.com")
                assert r.status_code == 202
                accepted.append(r.json()["jti"][sid])

                proxy.set_mode("down")
                refused = 0
                for k in range(5):
                    r = cluster.publish(http, 0, f"during{k}@example.com")
                    assert r.status_code in (202, 503), r.text  # never a 500
                    if r.status_code == 503:
                        refused += 1
                        assert r.json()["err"] == "temporarily_unavailable"
                        assert "retry-after" in r.headers
                    else:
                        accepted.append(r.json()["jti"][sid])
                assert refused == 5  # nothing can be kept, nothing is accepted
                # the process is still alive and serves what needs no database
                assert http.get(cluster.url(0) + "/jwks.json").status_code == 200
                time.sleep(0.5)

                proxy.set_mode("pass")

                def publishes() -> bool:
                    r = cluster.publish(http, 0, "after@example.com")
                    if r.status_code == 202:
                        accepted.append(r.json()["jti"][sid])
                        return True
                    assert r.status_code == 503, r.text
                    return False

                wait_until(publishes, timeout=20, interval=0.2, what="publish recovers")
                wait_until(lambda: set(accepted) <= rec.jtis(), timeout=20, what="delivery recovers")
                assert rec.duplicates_applied() == 0
                assert cluster.alive() == [0]
        finally:
            cluster.stop_all()


@pytest.mark.skipif(
    not (CHAOS and os.environ.get("SSF_CHAOS_PG_RESTART")),
    reason="restarts the shared PostgreSQL (other tests in the run would see it): "
    "set SSF_CHAOS=1 SSF_CHAOS_PG_RESTART=1 and run it alone",
)
@pytest.mark.timeout(600)
def test_real_postgresql_restart_mid_run(tmp_path: Path) -> None:
    """The real thing: ``pg_ctlcluster … restart`` while two instances take publishes."""
    url = require_postgres()
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    with tx_cluster(url, tmp_path, 2) as cluster, httpx.Client(timeout=10) as http:
        cluster.start_all()
        with recording_receiver(cluster.issuer, cluster.audience) as rec:
            rec.set_keys(cluster.jwks())
            sid = cluster.create_push_stream(http, f"{rec.url}/push/pg")
            accepted: set[str] = set()
            codes: list[int] = []
            stop = threading.Event()

            def publish() -> None:
                k = 0
                with httpx.Client(timeout=10) as c:
                    while not stop.is_set():
                        subject = f"pg{k % 3}@example.com"
                        try:
                            r = cluster.publish(c, k % 2, subject, per_subject_txn(subject, k // 3))
                        except httpx.HTTPError:
                            codes.append(0)
                            continue
                        codes.append(r.status_code)
                        if r.status_code == 202:
                            accepted.add(r.json()["jti"][sid])
                        k += 1
                        time.sleep(0.01)

            t = threading.Thread(target=publish)
            t.start()
            time.sleep(2)
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
                check=True,
                timeout=120,
            )
            time.sleep(5)
            stop.set()
            t.join(30)
            assert set(codes) <= {202, 503}, sorted(set(codes))
            assert codes[-1] == 202  # recovered by itself
            wait_until(lambda: accepted <= rec.jtis(), timeout=60, what="every accepted SET applied")
            assert rec.duplicates_applied() == 0 and rec.order_violations() == 0
