"""A receiver endpoint that fails for a while (500, 503 + Retry-After, 429 + Retry-After,
time-outs, reset connections): the transmitter process backs off within its bounds, then
catches up with nothing lost, one push in flight per stream (no burst); past the cap the
stream is paused with a stream-updated event."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import httpx

from ssf import uris
from tests.reliability.support import RecordingReceiver, TcpProxy, recording_receiver, tx_cluster, wait_until
from tests.support.services import require_postgres

BASE, MAX = 0.05, 0.5


def _fault_script(rec: RecordingReceiver) -> dict[str, float]:
    first: dict[str, float] = {}
    paused = {"cap": False}

    def fault(stream: str, _n: int) -> tuple[int, dict[str, str], float] | None:
        now = time.monotonic()
        t0 = first.setdefault(stream, now)
        attempts = sum(1 for a in rec.answers if a[0] == stream)
        if stream == "e500" and now - t0 < 1.0:
            return 500, {}, 0.0
        if stream == "e503" and attempts == 0:
            return 503, {"Retry-After": "1"}, 0.0
        if stream == "e429" and attempts == 0:
            return 429, {"Retry-After": "1"}, 0.0
        if stream == "slow" and now - t0 < 1.0:
            return 503, {}, 1.0  # answered after the transmitter's push timeout
        if stream == "cap" and not paused["cap"]:
            return 500, {}, 0.0
        return None

    rec.fault = fault
    return first


def test_failing_receiver_backoff_catch_up_and_pause_past_the_cap(tmp_path: Path) -> None:
    url = require_postgres()
    with (
        tx_cluster(url, tmp_path, 1, push_timeout="0.4", retry_cap_seconds="2.5") as cluster,
        httpx.Client(timeout=10) as http,
    ):
        cluster.start_all()
        with (
            recording_receiver(cluster.issuer, cluster.audience) as rec,
            TcpProxy(int(rec.url.rsplit(":", 1)[1])) as proxy,
        ):
            rec.set_keys(cluster.jwks())
            _fault_script(rec)
            names = ["e500", "e503", "e429", "slow", "cap"]
            sids = {n: cluster.create_push_stream(http, f"{rec.url}/push/{n}") for n in names}
            sids["reset"] = cluster.create_push_stream(http, f"http://127.0.0.1:{proxy.port}/push/reset")
            proxy.set_mode("down")
            accepted: dict[str, list[str]] = {n: [] for n in sids}
            for k in range(8):
                r = cluster.publish(http, 0, f"f{k % 2}@example.com", f"f{k % 2}@example.com#{k // 2}")
                assert r.status_code == 202
                for n, sid in sids.items():
                    accepted[n].append(r.json()["jti"][sid])
            time.sleep(1.0)
            proxy.set_mode("pass")
            auth = {"Authorization": f"Bearer {cluster.receiver_token}"}

            def status(name: str) -> dict[str, str]:
                return dict(
                    http.get(
                        cluster.url(0) + "/ssf/status", params={"stream_id": sids[name]}, headers=auth
                    ).json()
                )

            # past the cap: paused, with the reason recorded
            wait_until(lambda: status("cap")["status"] == "paused", timeout=20, what="cap stream paused")
            assert "failing" in status("cap").get("reason", "")
            for n in ("e500", "e503", "e429", "slow", "reset"):
                wait_until(lambda n=n: set(accepted[n]) <= rec.jtis(), timeout=30, what=f"{n} caught up")
                assert status(n)["status"] == "enabled"
            # the cap stream's endpoint recovers: the stream-updated notice arrives, the held
            # SETs wait for the receiver to enable the stream again, then all arrive
            _fault_script(rec).clear()
            rec.fault = None
            wait_until(
                lambda: any(a.stream == "cap" and a.event_type == uris.STREAM_UPDATED for a in rec.applied),
                what="stream-updated notice",
            )
            notice = next(a for a in rec.applied if a.stream == "cap" and a.event_type == uris.STREAM_UPDATED)
            assert notice.event["status"] == "paused"
            assert not set(accepted["cap"]) & rec.jtis()
            r = http.post(
                cluster.url(0) + "/ssf/status",
                headers=auth,
                json={"stream_id": sids["cap"], "status": "enabled"},
            )
            assert r.status_code == 200
            wait_until(lambda: set(accepted["cap"]) <= rec.jtis(), what="held SETs delivered on re-enable")

            # nothing lost, nothing applied twice, order kept, never two pushes at once per stream
            assert rec.duplicates_applied() == 0
            assert rec.order_violations() == 0
            # (a timed-out push is still being handled by the slow receiver when the retry comes)
            assert sum(n for s, n in rec.overlap_by_stream.items() if s != "slow") == 0
            assert proxy.swallowed == 0

            answers = sorted(rec.answers, key=lambda a: a[1])

            def times(stream: str) -> list[tuple[float, int]]:
                return [(t, s) for st, t, s in answers if st == stream]

            # 500s: exponential backoff with jitter from BASE: the k-th retry waits at least
            # half of min(BASE * 2**(k-1), MAX), so a 1 s outage costs a bounded number of tries
            e500 = times("e500")
            fails = [t for t, s in e500 if s == 500]
            assert len(fails) >= 3
            for k, (a, b) in enumerate(itertools.pairwise(fails), start=1):
                assert b - a >= 0.5 * min(BASE * 2 ** (k - 1), MAX) * 0.9
            assert len(fails) <= 20
            # Retry-After honoured for 503 and 429
            for name in ("e503", "e429"):
                got = times(name)
                assert got[0][1] in (503, 429)
                assert got[1][0] - got[0][0] >= 0.9
