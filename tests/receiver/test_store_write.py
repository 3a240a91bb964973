"""The SQLite group-commit write path: multi-row statements, big and odd-sized groups, reload."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from pathlib import Path

import pytest

from receiver.state import CUTOFF, DISABLED, Mutation, RevocationState, TokenSubjects, row_key
from receiver.store import JtiTracker, SQLStore, WriteBatch
from ssf.subjects import Subject


def _batch(state: RevocationState, i: int) -> WriteBatch:
    subject = Subject.opaque(f"sid-{i}") if i % 2 else Subject.iss_sub("https://idp.example", f"u-{i}")
    m = Mutation(subject, CUTOFF, math.inf if i % 2 else 1000.0 + i, 1000.0 + i)
    assert state.apply(m)
    b = WriteBatch(jtis=[(f"jti-{i}", bytes([i % 256]) * 16, 1000.0 + i)], mutations=[m])
    b.snapshots[row_key(subject)] = [x.to_json() for x in state.export(subject)]
    return b


@pytest.mark.parametrize("count", [1, 3, 255, 256, 257, 1000])
def test_a_group_of_any_size_is_stored_and_loads_back(tmp_path: Path, count: int) -> None:
    async def run() -> None:
        url = f"sqlite:///{tmp_path / 'rx.db'}"
        state = RevocationState()
        store = SQLStore(url)
        await store.open()
        batches = [_batch(state, i) for i in range(count)]
        # Concurrent commits join one transaction (group commit); every one returns stored.
        await asyncio.gather(*(store.commit(b) for b in batches))
        # The same subject twice in one group, and a jti re-sent: the newest facts, one row.
        again = Subject.opaque("sid-1")
        flag = Mutation(again, DISABLED, True, 5000.0)
        assert state.apply(flag)
        dup = WriteBatch(jtis=[("jti-1", bytes([1]) * 16, 1.0)], mutations=[flag])
        dup.snapshots[row_key(again)] = [x.to_json() for x in state.export(again)]
        await asyncio.gather(store.commit(batches[min(1, count - 1)]), store.commit(dup))
        await store.close()

        with sqlite3.connect(tmp_path / "rx.db") as conn:
            assert conn.execute("SELECT count(*) FROM ssf_receiver_jti").fetchone() == (max(count, 2),)
            subjects = conn.execute("SELECT count(*) FROM ssf_receiver_subject").fetchone()[0]
            assert subjects == max(count, 2)
            digest, at = conn.execute(
                "SELECT digest, received_at FROM ssf_receiver_jti WHERE jti = 'jti-1'"
            ).fetchone()
        if count > 1:
            assert (digest, at) == (bytes([1]) * 16, 1001.0)  # the first sighting is kept

        reopened = SQLStore(url)
        await reopened.open()
        loaded, jtis = RevocationState(), JtiTracker(retention=1e12)
        await reopened.load(loaded, jtis)
        await reopened.close()
        assert len(jtis) == max(count, 2)
        for i in range(count):
            key = f"o:sid-{i}" if i % 2 else f"i:https://idp.example\x1fu-{i}"
            assert loaded.cutoffs[key] == state.cutoffs[key]
        token = TokenSubjects.from_claims({"iss": "https://as.example", "sub": "x", "sid": "sid-1"})
        assert loaded.evaluate(token, 1.0).disabled

    asyncio.run(run())


def test_a_failed_group_reaches_every_waiter_and_the_next_one_is_stored(tmp_path: Path) -> None:
    async def run() -> None:
        url = f"sqlite:///{tmp_path / 'rx.db'}"
        state = RevocationState()
        store = SQLStore(url)
        await store.open()
        await store.commit(_batch(state, 0))
        # A foreign writer holds the write lock past the busy timeout: the group fails as a whole.
        blocker = sqlite3.connect(tmp_path / "rx.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        assert store._writer is not None
        store._writer.driver_connection.execute("PRAGMA busy_timeout=50")
        results = await asyncio.gather(
            *(store.commit(_batch(state, i)) for i in range(1, 4)), return_exceptions=True
        )
        assert all(isinstance(r, sqlite3.OperationalError) for r in results), results
        blocker.execute("ROLLBACK")
        blocker.close()
        # The transaction was rolled back; the kept connection works for the next group.
        await asyncio.gather(*(store.commit(_batch(state, i)) for i in range(4, 7)))
        await store.close()
        with sqlite3.connect(tmp_path / "rx.db") as conn:
            rows = {r[0] for r in conn.execute("SELECT jti FROM ssf_receiver_jti")}
        assert rows == {"jti-0", "jti-4", "jti-5", "jti-6"}

    asyncio.run(run())
