"""Receiver instances sharing Redis: refusal everywhere, start from shared state, and Redis
going away (a proxy we cut, not the shared server): local enforcement, degraded health and
metrics, then recovery by itself with nothing lost."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

from receiver.redis_store import RedisStore
from ssf.events import SessionRevoked
from ssf.subjects import Subject
from tests.receiver.conftest import Running, run_receiver
from tests.receiver.fake import FakeTransmitter
from tests.reliability.support import TcpProxy, wait_until
from tests.support.services import free_port, require_redis, serve


@contextlib.contextmanager
def fake_transmitter() -> Iterator[FakeTransmitter]:
    port = free_port()
    fake = FakeTransmitter(port)
    with serve(fake.app, port=port):
        yield fake


def _health(r: Running) -> dict[str, object]:
    return dict(r.http.get("/health").json())


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


def test_redis_down_keeps_enforcing_locally_says_so_and_recovers(tmp_path: Path) -> None:
    url = require_redis()
    ns = "rel-" + secrets.token_hex(4)
    with TcpProxy(6379) as proxy, fake_transmitter() as fake:
        common = {
            "redis_url": f"redis://127.0.0.1:{proxy.port}/0",
            "redis_namespace": ns,
            "verify_on_start": False,
            "store_retry_interval": 0.2,
        }
        try:
            with (
                run_receiver(fake, tmp_path / "a", **common) as a,
                run_receiver(fake, tmp_path / "b", **common) as b,
            ):
                token = fake.mint("dora", sid="rd-1")
                assert a.whoami(token).status_code == 200 and b.whoami(token).status_code == 200
                assert _health(a)["degraded"] is False
                proxy.set_mode("down")
                wait_until(lambda: _health(a)["degraded"] is True, what="a reports degraded")
                metrics = a.http.get("/metrics").text
                assert "ssf_receiver_store_up 0" in metrics
                revoke = fake.sign(Subject.opaque("rd-1"), SessionRevoked())
                r = a.push(revoke)
                # not stored: the transmitter must retry; but enforced here at once
                assert r.status_code == 503 and r.json()["err"] == "temporarily_unavailable"
                assert a.whoami(token).status_code == 401
                health = _health(a)
                assert health["store"]["unsynced_mutations"] >= 1  # type: ignore[index]
                proxy.set_mode("pass")
                # recovers by itself: the change is stored and reaches the other instance
                wait_until(lambda: _health(a)["degraded"] is False, what="a recovered")
                wait_until(
                    lambda: _health(a)["store"]["unsynced_mutations"] == 0,  # type: ignore[index]
                    what="a stored its pending change",
                )
                b.wait(lambda: b.whoami(token).status_code == 401, "b refuses after recovery")
                assert "ssf_receiver_store_up 1" in a.http.get("/metrics").text
                # the transmitter's retry of the same SET is answered 202 and changes nothing
                accepted = a.receiver.stats["accepted"]
                assert a.push(revoke).status_code == 202
                assert a.receiver.stats["accepted"] == accepted + 1  # stored now (it was not before)
                assert a.push(revoke).status_code == 202
                assert a.receiver.stats["duplicate"] >= 1
            # a fresh instance sees it in the shared keys
            with run_receiver(fake, tmp_path / "c", **common) as c:
                assert c.whoami(token).status_code == 401
        finally:
            asyncio.run(RedisStore(url, namespace=ns).clear())
