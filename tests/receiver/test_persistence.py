"""State survives restarts (SQLite) and is shared between instances (Redis pub/sub)."""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from receiver.core import Receiver
from receiver.redis_store import RedisStore
from receiver.settings import ReceiverSettings
from receiver.state import CUTOFF, DISABLED, Mutation, RevocationState, TokenSubjects, is_revoked
from receiver.store import JtiTracker, SQLStore, WriteBatch
from ssf.errors import InvalidRequest
from ssf.events import DeviceComplianceChange, SessionRevoked
from ssf.events.risc import AccountDisabled
from ssf.keys import KeySet, PublicKeys, generate_signing_key
from ssf.set import SecurityEventToken, sign_set
from ssf.subjects import Subject
from tests.receiver.conftest import run_receiver
from tests.receiver.fake import FakeTransmitter
from tests.support.services import free_port, postgres_schema, require_redis


def test_restart_keeps_every_revocation_and_the_jti_memory(fake: FakeTransmitter, tmp_path: Path) -> None:
    port = free_port()
    user = Subject.iss_sub(fake.base + "/as", "max")
    now = int(time.time())
    old_token = fake.mint("max", iat=now - 100, sid="m-2", device_id="dev-9")
    session_token = fake.mint("nora", sid="n-1")
    device = Subject.complex(user=user, device=Subject.opaque("dev-9"))
    sets = [
        fake.sign(Subject.opaque("n-1"), SessionRevoked(), jti="r-1"),
        fake.sign(user, SessionRevoked(event_timestamp=now - 50), jti="r-2"),
        fake.sign(
            device,
            DeviceComplianceChange(previous_status="compliant", current_status="not-compliant"),
            jti="r-3",
        ),
        fake.sign(Subject.email("olga@example.com"), AccountDisabled(), jti="r-4"),
    ]
    with run_receiver(fake, tmp_path, port=port) as rcv:
        for s in sets:
            assert rcv.push(s).status_code == 202
        assert rcv.whoami(old_token).status_code == 401
    with run_receiver(fake, tmp_path, port=port) as rcv:
        assert rcv.whoami(session_token).status_code == 401
        assert rcv.whoami(old_token).status_code == 401
        # A newer token from another device is fine (one with no device claim would match the
        # user + device subject by the SSF §8.1.3.1 wildcard rule, and be refused).
        assert rcv.whoami(fake.mint("max", sid="m-3", device_id="dev-1")).status_code == 200
        assert rcv.whoami(fake.mint("max", device_id="dev-9")).status_code == 401  # device still bad
        assert rcv.whoami(fake.mint("olga", email="olga@example.com")).status_code == 401
        # The transmitter retries a SET from before the restart: 202, nothing changes.
        gen = rcv.receiver.state.generation
        assert rcv.push(sets[0]).status_code == 202
        assert rcv.receiver.state.generation == gen
        # A different SET reusing a jti from before the restart is still refused.
        reuse = fake.sign(Subject.opaque("zz"), SessionRevoked(), jti="r-1")
        assert rcv.push(reuse).json()["err"] == "invalid_request"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/s.db"
        return
    with postgres_schema("rcv_") as url:
        yield url


async def test_sql_store_group_commits_and_prunes(db_url: str) -> None:
    store = SQLStore(db_url)
    await store.open()
    state = RevocationState()
    batches = []
    for i in range(50):
        m = Mutation(Subject.opaque(f"s{i}"), CUTOFF, math.inf, 1.0)
        state.apply(m)
        batches.append(
            WriteBatch(
                jtis=[(f"j{i}", b"d" * 16, 100.0 + i)],
                mutations=[m],
                snapshots={m.subject.key: [x.to_json() for x in state.export(m.subject)]},
            )
        )
    await asyncio.gather(*(store.commit(b) for b in batches))
    assert store.transactions < 50  # concurrent commits shared transactions
    assert await store.prune(125.0) == 25
    loaded, jtis = RevocationState(), JtiTracker(10**10)
    await store.load(loaded, jtis)
    assert len(loaded.cutoffs) == 50 and len(jtis) == 25
    await store.save_stream("https://t", {"stream_id": "s"})
    assert await store.load_stream("https://t") == {"stream_id": "s"}
    await store.close()


def test_jti_tracker_prunes_oldest_first() -> None:
    t = JtiTracker(retention=10)
    for i in range(5):
        t.add(f"j{i}", b"x", float(i * 5))
    assert t.prune(now=22) == 3 and "j3" in t and "j2" not in t


async def test_redis_fans_out_between_instances() -> None:
    url = require_redis()
    ns = "ssf-test-" + secrets.token_hex(4)
    a, b = RedisStore(url, namespace=ns), RedisStore(url, namespace=ns)
    settings = ReceiverSettings(database_url="memory")
    ra, rb = Receiver(settings, store=a), Receiver(settings, store=b)
    try:
        await ra.open()
        await rb.open()
        m = Mutation(Subject.email("p@example.com"), DISABLED, True, 5.0)
        ra.state.apply(m)
        await a.commit(WriteBatch(jtis=[("j-1", b"0" * 16, 1.0)], mutations=[m]))
        for _ in range(500):
            if rb.state.records:
                break
            await asyncio.sleep(0.01)
        ts = rb.state.evaluate(
            TokenSubjects.from_claims({"iss": "i", "sub": "s", "email": "p@example.com"}), 0
        )
        assert ts.disabled and "j-1" in rb.jtis
        # A third instance starting later loads the same state from the keys.
        c = RedisStore(url, namespace=ns)
        rc = Receiver(settings, store=c)
        await rc.open()
        assert "e:p@example.com" in rc.state.records and "j-1" in rc.jtis
        await rc.stop()
    finally:
        await a.clear()
        await ra.stop()
        await rb.stop()


def test_redis_backed_receivers_refuse_on_every_instance(fake: FakeTransmitter, tmp_path: Path) -> None:
    url = require_redis()
    ns = "ssf-test-" + secrets.token_hex(4)
    common: dict[str, Any] = {"redis_url": url, "redis_namespace": ns}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with run_receiver(fake, tmp_path / "a", **common) as one:
        one.wait(lambda: bool(one.receiver.verified_states), "verification")
        with run_receiver(fake, tmp_path / "b", **common) as two:
            token = fake.mint("quinn", sid="q-1")
            assert one.whoami(token).status_code == 200 and two.whoami(token).status_code == 200
            assert one.push(fake.sign(Subject.opaque("q-1"), SessionRevoked())).status_code == 202
            assert one.whoami(token).status_code == 401
            two.wait(lambda: two.whoami(token).status_code == 401, "fan-out to the second instance")
    asyncio.run(RedisStore(url, namespace=ns).clear())


def test_jtis_beyond_memory_capacity_are_recalled_from_the_store(
    fake: FakeTransmitter, tmp_path: Path
) -> None:
    with run_receiver(fake, tmp_path, jti_memory=2, verify_on_start=False) as rcv:
        sets = [fake.sign(Subject.opaque(f"cap-{i}"), SessionRevoked(), jti=f"cap-{i}") for i in range(4)]
        for s in sets:
            assert rcv.push(s).status_code == 202
        assert len(rcv.receiver.jtis) == 2 and rcv.receiver.jtis.overflowed
        accepted = rcv.receiver.stats["accepted"]
        assert rcv.push(sets[0]).status_code == 202  # an identical re-send: recalled, not re-applied
        assert rcv.receiver.stats["accepted"] == accepted
        reuse = fake.sign(Subject.opaque("other"), SessionRevoked(), jti="cap-1")
        assert rcv.push(reuse).json()["err"] == "invalid_request"


@pytest.mark.parametrize("backend", ["sql", "redis"])
async def test_old_cutoffs_are_forgotten_in_memory_and_storage(backend: str, tmp_path: Path) -> None:
    from receiver.store import StateStore

    store: StateStore
    if backend == "sql":
        store = SQLStore(f"sqlite:///{tmp_path}/p.db")
    else:
        store = RedisStore(require_redis(), namespace="ssf-test-" + secrets.token_hex(4))
    rcv = Receiver(ReceiverSettings(database_url="memory"), store=store)
    await rcv.open()
    old_user, new_user = Subject.iss_sub("i", "old"), Subject.iss_sub("i", "new")
    both = Subject.iss_sub("i", "both")
    cx = Subject.complex(user=Subject.iss_sub("i", "cx"), device=Subject.opaque("d"))
    muts = [
        Mutation(old_user, CUTOFF, 100.0, 100),
        Mutation(new_user, CUTOFF, 900.0, 900),
        Mutation(Subject.opaque("sess"), CUTOFF, math.inf, 600),  # revoked after the bound: kept
        Mutation(both, CUTOFF, 100.0, 100),
        Mutation(both, DISABLED, True, 100),
        Mutation(cx, CUTOFF, 100.0, 100),
    ]
    batch = WriteBatch(mutations=[m for m in muts if rcv.state.apply(m)])
    from receiver.state import row_key

    for m in batch.mutations:
        batch.snapshots[row_key(m.subject)] = [x.to_json() for x in rcv.state.export(m.subject)]
    await store.commit(batch)
    assert await rcv.prune_state(before=500) == 3
    for state in (rcv.state, await _reload(store)):
        assert "i:i\x1fold" not in state.cutoffs and state.cutoffs["i:i\x1fnew"] == 900
        assert is_revoked(state.cutoffs["o:sess"])
        assert state.records["i:i\x1fboth"].disabled == (True, 100)  # other facts stay
        assert "i:i\x1fboth" not in state.cutoffs
        entry = state.complex.get(cx.key)  # nothing left to remember about it after a reload
        assert entry is None or entry.record.cutoff == -math.inf
    if isinstance(store, RedisStore):
        await store.clear()
    await rcv.stop()


async def _reload(store: object) -> RevocationState:
    state = RevocationState()
    await store.load(state, JtiTracker(100))  # type: ignore[attr-defined]
    return state


async def test_a_set_the_store_cannot_hold_is_refused_and_never_blocks_the_others(db_url: str) -> None:
    """A jti past the stored column's length, or a NUL in a jti or a subject identifier (which
    PostgreSQL text refuses), is refused as that SET's error: it never fails the commit the
    good SETs around it share, which would answer them 503 and re-deliver the batch forever."""
    rcv = Receiver(ReceiverSettings(database_url="memory"), store=SQLStore(db_url))
    await rcv.open()
    key = generate_signing_key("ES256", kid="k")
    rcv.configure("https://tx.example", PublicKeys.from_key_set(KeySet([key])), audience="https://rx.example")

    def signed(jti: str, subject: Subject) -> str:
        token = SecurityEventToken.create(
            iss="https://tx.example",
            aud="https://rx.example",
            sub_id=subject,
            event=SessionRevoked(),
            jti=jti,
        )
        return sign_set(token, key)

    try:
        sets = {
            "good-1": signed("good-1", Subject.opaque("g-1")),
            "j" * 600: signed("j" * 600, Subject.opaque("long")),
            "nul\x00jti": signed("nul\x00jti", Subject.opaque("nul-jti")),
            "nul-subject": signed("nul-subject", Subject.opaque("a\x00b")),
            "good-2": signed("good-2", Subject.iss_sub("https://as.example", "g-2")),
        }
        acks, errs = await rcv.receive_batch(sets)
        assert acks == ["good-1", "good-2"]
        assert set(errs) == {"j" * 600, "nul\x00jti", "nul-subject"}
        assert all(e["err"] == "invalid_request" for e in errs.values())
        assert "o:a\x00b" not in rcv.state.cutoffs and "o:long" not in rcv.state.cutoffs
        with pytest.raises(InvalidRequest):
            await rcv.receive(signed("x" * 513, Subject.opaque("push-long")))
        assert await rcv.receive(signed("y" * 512, Subject.opaque("push-ok")))  # the longest stored
        reloaded, jtis = RevocationState(), JtiTracker(10**10)
        await rcv.store.load(reloaded, jtis)
        assert {"good-1", "good-2", "y" * 512} <= set(jtis._seen) and len(jtis) == 3
        assert is_revoked(reloaded.cutoffs["o:g-1"]) and is_revoked(reloaded.cutoffs["o:push-ok"])
    finally:
        await rcv.stop()
