"""Receiver instances sharing Redis: refusal everywhere, start from shared state, and a real
Redis (a private ``redis-server``, never the shared one) stopped and started under them.

Documented behaviour (receiver/README.md, "Several instances"), checked here:

- while Redis is down every running instance keeps enforcing what it knows from memory, says
  ``degraded`` in ``/health``, ``ssf_receiver_store_up 0`` in ``/metrics`` and 503 in
  ``/readyz``; a SET pushed to an instance is applied there at once but answered 503
  (not durable: the transmitter retries); the other instances learn of it only after it is
  back. A new instance does not start while Redis is away (it would serve without the
  shared revocations).
- once Redis is back each instance re-subscribes and re-reads the shared keys by itself, the
  pending change is written and fanned out, events applied afterwards reach every instance,
  and the transmitter's retry is answered 202.
- Redis without persistence comes back empty: instances that were running keep everything
  in memory, and what was stored or fanned out after the restart is shared; a new instance
  starts from what Redis holds, so facts stored only before the restart are not in it
  (run Redis with persistence in production). With persistence (long form) a new instance
  has everything, even after a SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from receiver.core import Receiver
from receiver.redis_store import RedisStore
from ssf.events import SessionRevoked
from ssf.subjects import Subject
from tests.receiver.conftest import Running, receiver_settings, run_receiver
from tests.receiver.fake import FakeTransmitter
from tests.reliability.support import CHAOS, wait_until
from tests.support.private_services import RedisServer, redis_server
from tests.support.services import free_port, require_redis, serve


@contextlib.contextmanager
def fake_transmitter() -> Iterator[FakeTransmitter]:
    port = free_port()
    fake = FakeTransmitter(port)
    with serve(fake.app, port=port):
        yield fake


def _health(r: Running) -> dict[str, Any]:
    return dict(r.http.get("/health").json())


def _degraded(r: Running) -> bool:
    return bool(_health(r)["degraded"])


def _metric(r: Running, name: str) -> float:
    for line in r.http.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_shared_redis_refuses_on_every_instance_and_a_new_instance_starts_from_it(tmp_path: Path) -> None:
    url = require_redis()
    ns = "rel-" + secrets.token_hex(4)
    common = {"redis_url": url, "redis_namespace": ns, "verify_on_start": False}
    try:
        with fake_transmitter() as fake:
            with (
                run_receiver(fake, tmp_path / "a", **common) as a,
                run_receiver(fake, tmp_path / "b", **common) as b,
            ):
                tokens = [fake.mint(f"user{i}", sid=f"rs-{i}") for i in range(3)]
                for t in tokens:
                    assert a.whoami(t).status_code == 200 and b.whoami(t).status_code == 200
                for i in range(3):
                    assert a.push(fake.sign(Subject.opaque(f"rs-{i}"), SessionRevoked())).status_code == 202
                for t in tokens:
                    assert a.whoami(t).status_code == 401
                    b.wait(lambda t=t: b.whoami(t).status_code == 401, "fan-out to b")
            # a new instance (and a restarted one) starts from the shared state
            with run_receiver(fake, tmp_path / "c", **common) as c:
                for t in tokens:
                    assert c.whoami(t).status_code == 401
                assert c.whoami(fake.mint("someone-else", sid="rs-other")).status_code == 200
    finally:
        asyncio.run(RedisStore(url, namespace=ns).clear())


def _outage_and_recovery(
    redis: RedisServer, fake: FakeTransmitter, tmp: Path, *, how: str, rounds: int = 1
) -> None:
    """Two instances on ``redis``; ``rounds`` times: Redis stopped (``how``), a revocation
    pushed to one instance during the outage, Redis started again, the documented
    degradation and recovery checked on both instances."""
    common = {
        "redis_url": redis.url,
        "redis_namespace": "rel-" + secrets.token_hex(4),
        "verify_on_start": False,
        "store_retry_interval": 0.2,
    }
    with (
        run_receiver(fake, tmp / "a", **common) as a,
        run_receiver(fake, tmp / "b", **common) as b,
    ):
        # before: a revocation applied on a reaches b through Redis
        before = fake.mint("ann", sid="rr-before")
        assert a.push(fake.sign(Subject.opaque("rr-before"), SessionRevoked())).status_code == 202
        b.wait(lambda: b.whoami(before).status_code == 401, "fan-out before the outage")
        for r in (a, b):
            assert not _degraded(r) and _metric(r, "ssf_receiver_store_up") == 1
        survivors = [before]
        recover: list[float] = []
        for n in range(rounds):
            sid = f"rr-during-{n}"
            during, after = fake.mint("bob", sid=sid), fake.mint("cyd", sid=f"rr-after-{n}")
            resyncs = [r.receiver.store.resyncs for r in (a, b)]  # type: ignore[attr-defined]
            for t in (during, after):
                assert a.whoami(t).status_code == 200 and b.whoami(t).status_code == 200

            redis.stop(how)
            for r in (a, b):  # both notice by themselves (the subscription drops)
                wait_until(lambda r=r: _degraded(r), timeout=10, what="degraded reported")
                assert _metric(r, "ssf_receiver_store_up") == 0
                health = _health(r)
                assert health["store"]["available"] is False and health["store"]["error"]
                ready = r.http.get("/readyz")
                assert ready.status_code == 503 and "unavailable" in ready.json()["checks"]["store"]
                for t in survivors:  # enforcing from memory
                    assert r.whoami(t).status_code == 401
            revoke = fake.sign(Subject.opaque(sid), SessionRevoked())
            r = a.push(revoke)
            # not stored, so the transmitter must retry; but enforced on this instance at once
            assert r.status_code == 503 and r.json()["err"] == "temporarily_unavailable", r.text
            assert a.whoami(during).status_code == 401
            assert _metric(a, "ssf_receiver_store_unsynced_mutations") >= 1
            assert _health(a)["store"]["unsynced_mutations"] >= 1
            # b has no way to learn of it while Redis is away
            assert b.whoami(during).status_code == 200
            assert a.whoami(fake.mint("dan", sid="rr-untouched")).status_code == 200
            if n == 0:
                # a new instance does not start without the shared state it would enforce
                fresh = Receiver(receiver_settings(fake, tmp / "x", free_port(), **common))
                with pytest.raises(RedisConnectionError):
                    asyncio.run(fresh.open())

            redis.start()  # same port; without persistence it comes back empty
            up_at = time.monotonic()
            for i, r in enumerate((a, b)):
                wait_until(lambda r=r: not _degraded(r), timeout=15, what="recovered by itself")
                wait_until(
                    lambda r=r, before=resyncs[i]: r.receiver.store.resyncs > before,  # type: ignore[attr-defined]
                    timeout=10,
                    what="re-subscribed and re-read the shared keys",
                )
                assert r.http.get("/readyz").status_code == 200
            wait_until(
                lambda: _metric(a, "ssf_receiver_store_unsynced_mutations") == 0, what="pending stored"
            )
            assert _metric(a, "ssf_receiver_store_up") == 1 and _metric(b, "ssf_receiver_store_up") == 1
            # the change made during the outage reaches the other instance
            b.wait(lambda t=during: b.whoami(t).status_code == 401, "outage change reaches b")
            recover.append(time.monotonic() - up_at)
            # pub/sub works again in both directions: an event applied on b after the restart
            assert b.push(fake.sign(Subject.opaque(f"rr-after-{n}"), SessionRevoked())).status_code == 202
            a.wait(lambda t=after: a.whoami(t).status_code == 401, "post-restart change reaches a")
            # the transmitter's retry of the SET answered 503 is accepted now and changes nothing
            assert a.push(revoke).status_code == 202
            assert a.push(revoke).status_code == 202  # and a re-send is a duplicate
            assert a.receiver.stats["duplicate"] >= 1
            survivors += [during, after]
            for r in (a, b):  # running instances lost nothing
                for t in survivors:
                    assert r.whoami(t).status_code == 401
    print(
        f"redis {how}{' persistent' if redis.persistent else ''} x{rounds}: start to the outage change "
        f"refused on the other instance max={max(recover):.2f}s"
    )
    # a new instance starts from what Redis holds now: everything with persistence; without
    # it, what was written since the last restart (Redis lost what it held before)
    with run_receiver(fake, tmp / "c", **common) as c:
        for t in survivors if redis.persistent else survivors[-2:]:
            assert c.whoami(t).status_code == 401
        assert c.whoami(fake.mint("eve", sid="rr-untouched")).status_code == 200


def test_redis_stopped_and_started_receivers_enforce_locally_say_so_and_recover(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as redis, fake_transmitter() as fake:
        _outage_and_recovery(redis, fake, tmp_path, how="term")


@pytest.mark.skipif(not CHAOS, reason="long form: set SSF_CHAOS=1 (make chaos)")
@pytest.mark.parametrize(
    ("how", "persistent"),
    [("term", False), ("nosave", False), ("kill", False), ("term", True), ("kill", True)],
)
def test_redis_restarted_repeatedly(tmp_path: Path, how: str, persistent: bool) -> None:
    with redis_server(tmp_path / "redis", persistent=persistent) as redis, fake_transmitter() as fake:
        _outage_and_recovery(redis, fake, tmp_path, how=how, rounds=5)


@pytest.mark.skipif(not CHAOS, reason="long form: set SSF_CHAOS=1 (make chaos)")
def test_pushes_through_redis_kills_202_means_stored(tmp_path: Path) -> None:
    """Revocations pushed to two instances while a persistent Redis is SIGKILLed and started
    again, each SET retried on 503 like a transmitter does: at the end every instance,
    and a new one starting from Redis, refuses every token whose SET was answered 202."""
    with redis_server(tmp_path / "redis", persistent=True) as redis, fake_transmitter() as fake:
        common = {
            "redis_url": redis.url,
            "redis_namespace": "rel-" + secrets.token_hex(4),
            "verify_on_start": False,
            "store_retry_interval": 0.2,
        }
        with (
            run_receiver(fake, tmp_path / "a", **common) as a,
            run_receiver(fake, tmp_path / "b", **common) as b,
        ):
            stop = threading.Event()
            accepted: list[str] = []
            answers: Counter[int] = Counter()

            def pusher() -> None:
                k = 0
                while not stop.is_set():
                    sid = f"rk-{k}"
                    token = fake.sign(Subject.opaque(sid), SessionRevoked())
                    for attempt in range(200):  # a transmitter retries until stored
                        r = (a, b)[(k + attempt) % 2].push(token)
                        answers[r.status_code] += 1
                        if r.status_code == 202:
                            accepted.append(sid)
                            break
                        assert r.status_code == 503, r.text
                        time.sleep(0.05)
                    k += 1

            thread = threading.Thread(target=pusher)
            thread.start()
            try:
                for _ in range(4):
                    time.sleep(1.0)
                    redis.stop("kill")
                    time.sleep(1.0)
                    redis.start()
                time.sleep(1.0)
            finally:
                stop.set()
                thread.join(60)
            assert answers[503] > 0 and len(accepted) >= 10, answers
            for r in (a, b):
                wait_until(lambda r=r: not _degraded(r), timeout=15, what="recovered")
            tokens = [fake.mint("kim", sid=sid) for sid in accepted]
            for r in (a, b):
                for t in tokens:
                    r.wait(lambda t=t, r=r: r.whoami(t).status_code == 401, "every accepted SET everywhere")
        with run_receiver(fake, tmp_path / "c", **common) as c:
            refused = sum(1 for t in tokens if c.whoami(t).status_code == 401)
            assert refused == len(tokens), f"a new instance refuses {refused} of {len(tokens)}"
        print(f"redis kill x4 under pushes: answers={dict(answers)} accepted={len(accepted)}")
