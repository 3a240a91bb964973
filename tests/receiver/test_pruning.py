"""Pruning: a cutoff or revoked session is forgotten once every token it could refuse has
expired (or is refused as older than TOKEN_MAX_LIFETIME anyway), in memory and in storage."""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from joserfc import jws
from pydantic import ValidationError

from receiver.core import Receiver
from receiver.redis_store import RedisStore
from receiver.settings import ReceiverSettings
from receiver.state import CUTOFF, DISABLED, Mutation, RevocationState, TokenSubjects, is_revoked, row_key
from receiver.store import JtiTracker, SQLStore, StateStore, WriteBatch
from receiver.tokens import make_entry
from ssf.events import CredentialChange, SessionRevoked
from ssf.keys import KeySet, PublicKeys, generate_signing_key
from ssf.set import SecurityEventToken, sign_set
from ssf.subjects import Subject, parse_subject
from tests.receiver.conftest import run_receiver
from tests.receiver.fake import AUDIENCE, FakeTransmitter
from tests.support.services import postgres_schema, require_redis

ISS = "https://as.example"


def _token(**claims: Any) -> TokenSubjects:
    return TokenSubjects.from_claims({"iss": ISS, "sub": "u", **claims})


def _user_token(sub: str, **claims: Any) -> TokenSubjects:
    return TokenSubjects.from_claims({"iss": ISS, "sub": sub, **claims})


def _facts(old: float, new: float) -> list[Mutation]:
    """Session, token and complex-session revocations and a user cutoff, old and new."""
    out = []
    for tag, at in (("old", old), ("new", new)):
        out += [
            Mutation(Subject.opaque(f"sid-{tag}"), CUTOFF, math.inf, at),
            Mutation(
                parse_subject({"format": "jwt_id", "iss": ISS, "jti": f"jti-{tag}"}), CUTOFF, math.inf, at
            ),
            Mutation(
                Subject.complex(user=Subject.iss_sub(ISS, f"cx-{tag}"), session=Subject.opaque(f"cs-{tag}")),
                CUTOFF,
                math.inf,
                at,
            ),
            Mutation(Subject.iss_sub(ISS, f"user-{tag}"), CUTOFF, at, at),
        ]
    return out


def _revoked(state: RevocationState, tag: str, iat: float) -> list[bool]:
    return [
        state.evaluate(_token(sid=f"sid-{tag}"), iat).revoked,
        state.evaluate(_token(jti=f"jti-{tag}"), iat).revoked,
        state.evaluate(_user_token(f"cx-{tag}", sid=f"cs-{tag}"), iat).revoked,
        state.evaluate(_user_token(f"user-{tag}"), iat).revoked,
    ]


def test_revoked_sessions_and_cutoffs_are_pruned_by_their_event_time() -> None:
    state = RevocationState()
    for m in _facts(100.0, 900.0):
        assert state.apply(m)
    assert state.counts()["revoked_sessions"] == 4 and state.counts()["cutoffs"] == 2
    # A revoked session refuses every token of the session, whenever it was issued.
    assert _revoked(state, "old", 10**9) == [True, True, True, False]
    assert _revoked(state, "old", 50) == [True, True, True, True]
    dead, reset = state.prune_cutoffs(before=500)
    assert sorted(dead) == sorted(["o:sid-old", f"j:{ISS}\x1fjti-old", f"i:{ISS}\x1fuser-old"])
    assert [s.key for s in reset] == [_facts(100, 900)[2].subject.key]
    assert _revoked(state, "old", 50) == [False] * 4
    assert _revoked(state, "new", 50) == [True] * 4  # younger than the bound: all kept
    assert state.counts()["revoked_sessions"] == 2 and state.counts()["cutoffs"] == 1
    assert state.prune_cutoffs(before=900) == ([], [])  # an entry at the bound itself stays
    assert len(state.prune_cutoffs(before=901)[0]) == 3


def test_a_later_revocation_of_the_same_session_keeps_it_longer() -> None:
    state = RevocationState()
    sid = Subject.opaque("again")
    assert state.apply(Mutation(sid, CUTOFF, math.inf, 100))
    assert state.apply(Mutation(sid, CUTOFF, math.inf, 800))
    assert not state.apply(Mutation(sid, CUTOFF, math.inf, 300))  # order-tolerant
    assert state.counts()["revoked_sessions"] == 1
    assert state.prune_cutoffs(before=500) == ([], [])
    assert is_revoked(state.cutoffs["o:again"])
    (m,) = state.export(sid)
    assert m.to_json()["value"] == "inf" and m.at == 840  # 800 rounded up to the minute


@pytest.mark.parametrize(
    "revocation_first", [True, False], ids=["revoked-then-cutoff", "cutoff-then-revoked"]
)
@pytest.mark.parametrize("complex_subject", [False, True], ids=["simple", "complex"])
def test_a_later_cutoff_is_not_lost_behind_an_older_revocation(
    revocation_first: bool, complex_subject: bool
) -> None:
    """Both apply to one subject: the entry refuses what each refuses, kept as long as the later."""
    subject = (
        Subject.complex(user=Subject.iss_sub(ISS, "both"), session=Subject.opaque("both-s"))
        if complex_subject
        else Subject.opaque("both")
    )
    token = _user_token("both", sid="both-s") if complex_subject else _token(sid="both")
    revocation, cutoff = Mutation(subject, CUTOFF, math.inf, 100), Mutation(subject, CUTOFF, 1000.0, 1000)
    state = RevocationState()
    for m in (revocation, cutoff) if revocation_first else (cutoff, revocation):
        assert state.apply(m)
    assert state.evaluate(token, 10**9).revoked  # still a revoked session
    assert state.counts()["revoked_sessions"] == int(not complex_subject)
    # The revocation alone could go at 500; the cutoff refuses tokens issued up to 1000 until 1000.
    assert state.prune_cutoffs(before=500) == ([], [])
    assert state.evaluate(token, 900).revoked
    (m,) = state.export(subject)
    assert m.to_json()["value"] == "inf" and m.at == 1020  # the later time, rounded up
    again = RevocationState()
    again.apply(Mutation.from_json(json.loads(json.dumps(m.to_json()))))
    assert again.evaluate(token, 900).revoked
    dead, reset = state.prune_cutoffs(before=1021)
    assert len(dead) + len(reset) == 1 and not state.evaluate(token, 900).revoked


def test_export_keeps_the_revocation_time_and_legacy_rows_are_kept_a_full_retention() -> None:
    state = RevocationState()
    subject = Subject.opaque("exp")
    state.apply(Mutation(subject, CUTOFF, math.inf, 1234.5))
    again = RevocationState()
    for m in state.export(subject):
        again.apply(Mutation.from_json(json.loads(json.dumps(m.to_json()))))
    assert again.cutoffs == state.cutoffs
    assert again.prune_cutoffs(1260) == ([], [])  # revoked at 1234.5: kept to the next minute
    assert again.prune_cutoffs(1261) == (["o:exp"], [])
    # The previous version stored revoked sessions with no time ("at": 0): unknown, so it is
    # taken as revoked now and kept a whole retention from here.
    legacy = Mutation.from_json({"subject": subject.to_dict(), "field": "cutoff", "value": "inf", "at": 0})
    assert legacy.at >= time.time() - 5


def test_retention_defaults_to_the_longest_token_life_and_cannot_go_below_it() -> None:
    s = ReceiverSettings(database_url="memory")
    assert s.state_retention is None and s.token_max_lifetime == 86400
    assert s.effective_state_retention == s.token_max_lifetime + s.token_leeway
    assert ReceiverSettings(database_url="memory", state_retention=10**8).effective_state_retention == 10**8
    with pytest.raises(ValidationError, match="STATE_RETENTION"):
        ReceiverSettings(database_url="memory", token_max_lifetime=3600, state_retention=3600)


def test_tokens_older_than_the_longest_lifetime_expire() -> None:
    """What makes pruning safe: a token issued before a pruned entry's time is refused anyway."""
    now = time.time()
    long = make_entry("t", {"iat": now - 100, "exp": now + 10**6}, kind="jwt", max_lifetime=3600)
    assert long.exp == now - 100 + 3600
    short = make_entry("t", {"iat": now, "exp": now + 60}, kind="jwt", max_lifetime=3600)
    assert short.exp == now + 60
    no_exp = make_entry("t", {"iat": now}, kind="introspection", max_lifetime=3600)
    assert no_exp.exp == now + 3600
    assert make_entry("t", {"iat": now}, kind="jwt").exp is None  # no bound configured
    # An iat ahead of the validation time counts as that time, for cutoffs and the bound alike.
    ahead = make_entry("t", {"iat": now + 10**5}, kind="jwt", max_lifetime=3600, now=now)
    assert ahead.iat == now and ahead.exp == now + 3600


def test_an_old_long_lived_token_is_refused(fake: FakeTransmitter, tmp_path: Path) -> None:
    with run_receiver(fake, tmp_path, token_max_lifetime=600, token_leeway=0, verify_on_start=False) as rcv:
        fresh = fake.mint("lena", lifetime=86400)
        assert rcv.whoami(fresh).status_code == 200
        old = fake.mint("lena", iat=int(time.time()) - 700, lifetime=86400)
        resp = rcv.whoami(old)
        assert resp.status_code == 401 and "invalid_token" in resp.headers["www-authenticate"]


async def _reload(store: StateStore) -> RevocationState:
    state = RevocationState()
    await store.load(state, JtiTracker(100))
    return state


@pytest.fixture(params=["sqlite", "postgres"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/p.db"
        return
    with postgres_schema("rcv_prune_") as url:
        yield url


def _stored_keys(store: SQLStore) -> set[str]:
    with store.engine.connect() as conn:
        return {k for (k,) in conn.execute(sqlalchemy.text("SELECT key FROM ssf_receiver_subject"))}


def _pruning_store(backend: str, sql_url: str) -> StateStore:
    """The SQL store on ``sql_url``, or a Redis one (once: on the SQLite run only)."""
    if backend == "sql":
        return SQLStore(sql_url)
    if not sql_url.startswith("sqlite"):
        pytest.skip("one Redis run is enough")
    return RedisStore(require_redis(), namespace="ssf-test-" + secrets.token_hex(4))


@pytest.mark.parametrize("backend", ["sql", "redis"])
async def test_pruning_reaches_the_store(backend: str, sql_url: str) -> None:
    store = _pruning_store(backend, sql_url)
    rcv = Receiver(ReceiverSettings(database_url="memory"), store=store)
    await rcv.open()
    try:
        facts = [*_facts(100.0, 900.0), Mutation(Subject.opaque("sid-old"), DISABLED, True, 100)]
        batch = WriteBatch(mutations=[m for m in facts if rcv.state.apply(m)])
        for m in batch.mutations:
            batch.snapshots[row_key(m.subject)] = [x.to_json() for x in rcv.state.export(m.subject)]
        await store.commit(batch)
        assert _revoked(await _reload(store), "old", 50) == [True] * 4
        assert await rcv.prune_state(before=500) == 4
        for state in (rcv.state, await _reload(store)):
            assert _revoked(state, "old", 50) == [False] * 4
            assert _revoked(state, "new", 50) == [True] * 4
            assert state.records["o:sid-old"].disabled == (True, 100)  # not time-bounded: kept
            assert state.counts()["revoked_sessions"] == 2
        if isinstance(store, SQLStore):
            keys = _stored_keys(store)
            assert f"j:{ISS}\x1fjti-old" not in keys and "o:sid-new" in keys
    finally:
        if isinstance(store, RedisStore):
            await store.clear()
        await rcv.stop()


@pytest.mark.parametrize("backend", ["sql", "redis"])
async def test_pruning_keeps_a_later_cutoff_behind_an_older_revocation(backend: str, tmp_path: Path) -> None:
    store: StateStore
    if backend == "sql":
        store = SQLStore(f"sqlite:///{tmp_path}/c.db")
    else:
        store = RedisStore(require_redis(), namespace="ssf-test-" + secrets.token_hex(4))
    rcv = Receiver(ReceiverSettings(database_url="memory"), store=store)
    await rcv.open()
    try:
        sid = Subject.opaque("sid-both")
        facts = [Mutation(sid, CUTOFF, math.inf, 100), Mutation(sid, CUTOFF, 1000.0, 1000)]
        batch = WriteBatch(mutations=[m for m in facts if rcv.state.apply(m)])
        batch.snapshots[row_key(sid)] = [x.to_json() for x in rcv.state.export(sid)]
        await store.commit(batch)
        await rcv.prune_state(before=500)
        for state in (rcv.state, await _reload(store)):
            assert state.evaluate(_token(sid="sid-both"), 900).revoked
    finally:
        if isinstance(store, RedisStore):
            await store.clear()
        await rcv.stop()


def _store(backend: str, tmp_path: Path) -> StateStore:
    if backend == "sql":
        return SQLStore(f"sqlite:///{tmp_path}/r.db")
    return RedisStore(require_redis(), namespace="ssf-test-" + secrets.token_hex(4))


@pytest.mark.parametrize("backend", ["sql", "redis"])
async def test_a_back_dated_revocation_is_kept_a_retention_from_its_receipt(
    backend: str, tmp_path: Path
) -> None:
    """A revoked session refuses tokens of any iat: dated by a week-old event_timestamp it would
    go at the next pass while tokens issued until we heard of it still live."""
    store = _store(backend, tmp_path)
    rcv = Receiver(ReceiverSettings(database_url="memory"), store=store)
    key = generate_signing_key("ES256", kid="k")
    rcv.configure(ISS, PublicKeys.from_key_set(KeySet([key])), audience="aud")
    await rcv.open()
    try:
        week_ago = int(time.time()) - 7 * 86400

        def signed(subject: Subject, event: Any) -> str:
            return sign_set(SecurityEventToken.create(iss=ISS, aud="aud", sub_id=subject, event=event), key)

        received = time.time()
        assert await rcv.receive(signed(Subject.opaque("late"), SessionRevoked(event_timestamp=week_ago)))
        change = CredentialChange(credential_type="password", change_type="update", event_timestamp=week_ago)
        assert await rcv.receive(signed(Subject.iss_sub(ISS, "late-user"), change))
        (m,) = rcv.state.export(Subject.opaque("late"))
        assert m.at >= received  # dated by its receipt, not the week-old event time
        # A day's retention: the finite cutoff (refusing tokens issued a week ago) goes, the
        # revoked session stays, in memory and in the store.
        assert await rcv.prune_state(before=time.time() - 86400) == 1
        for state in (rcv.state, await _reload(store)):
            assert state.evaluate(_token(sid="late"), time.time()).revoked
            assert f"i:{ISS}\x1flate-user" not in state.cutoffs
    finally:
        if isinstance(store, RedisStore):
            await store.clear()
        await rcv.stop()


async def test_redis_pruning_keeps_a_newer_fact_another_instance_wrote() -> None:
    url, ns = require_redis(), "ssf-test-" + secrets.token_hex(4)
    one, two = RedisStore(url, namespace=ns), RedisStore(url, namespace=ns)
    rcv = Receiver(ReceiverSettings(database_url="memory"), store=one)
    await rcv.open()
    await two.open()
    try:
        user = Subject.iss_sub(ISS, "raced")
        old = Mutation(user, CUTOFF, 100.0, 100)
        rcv.state.apply(old)
        await one.commit(WriteBatch(mutations=[old]))
        # Another instance applies a new cutoff; this one prunes before hearing of it.
        new = Mutation(user, CUTOFF, time.time(), time.time())
        await two.commit(WriteBatch(mutations=[new]))
        rcv.state.cutoffs.pop(row_key(user), None)
        rcv.state.apply(old)
        assert await rcv.prune_state(before=500) == 1
        state = await _reload(two)
        assert state.cutoffs[row_key(user)] == new.value
    finally:
        await one.clear()
        await two.close()
        await rcv.stop()


async def test_sql_pruning_deletes_in_order_with_the_writes(sql_url: str) -> None:
    """forget goes through the serialised writer: a snapshot committed before the prune is
    written before its delete, never after it (which would bring a pruned row back)."""
    store = SQLStore(sql_url)
    rcv = Receiver(ReceiverSettings(database_url="memory"), store=store)
    await rcv.open()
    gate = threading.Event()
    write = store._write

    def held_once(batches: list[WriteBatch]) -> None:
        if not gate.is_set():
            gate.wait(timeout=30)
        write(batches)

    store._write = held_once  # type: ignore[method-assign]
    try:
        busy = asyncio.create_task(store.commit(WriteBatch(force=True, snapshots={"o:other": []})))
        await asyncio.sleep(0.05)  # the writer is inside its first transaction
        # A back-dated cutoff arrives while the writer is busy; its snapshot waits in the queue.
        late = Subject.iss_sub(ISS, "late")
        assert rcv.state.apply(Mutation(late, CUTOFF, 100.0, 100))
        queued = asyncio.create_task(
            store.commit(WriteBatch(snapshots={row_key(late): [m.to_json() for m in rcv.state.export(late)]}))
        )
        await asyncio.sleep(0)
        pruning = asyncio.create_task(rcv.prune_state(before=500))
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(busy, queued)
        assert await pruning == 1
        assert row_key(late) not in rcv.state.cutoffs
        assert row_key(late) not in _stored_keys(store)  # memory and store agree
    finally:
        gate.set()
        await rcv.stop()


async def test_sqlite_leaves_no_pruned_row_readable_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLStore(f"sqlite:///{path}")

    def library_default_off(dbapi_conn: Any, _record: Any) -> None:
        # As an SQLite built without SQLITE_SECURE_DELETE (python.org, macOS; Debian's has it).
        dbapi_conn.execute("PRAGMA secure_delete=OFF")

    sqlalchemy.event.listen(store.engine, "connect", library_default_off, insert=True)
    await store.open()
    marker = "forgotten-session-" + secrets.token_hex(8)
    subject = Subject.opaque(marker)
    await store.commit(WriteBatch(snapshots={row_key(subject): [{"subject": subject.to_dict()}]}, force=True))
    await store.commit(WriteBatch(snapshots={"o:kept": []}, force=True))
    await store.forget([row_key(subject)], {})
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 1
    await store.close()  # the last connection checkpoints the WAL into the file
    assert marker.encode() not in path.read_bytes()


async def test_sql_rows_of_the_previous_version_are_upgraded_on_load(sql_url: str) -> None:
    store = SQLStore(sql_url)
    await store.open()
    subject = Subject.opaque("legacy-sid")
    row = [{"subject": subject.to_dict(), "field": "cutoff", "value": "inf", "at": 0.0}]
    await store.commit(WriteBatch(snapshots={row_key(subject): row}, force=True))
    before = time.time()
    state = await _reload(store)
    assert is_revoked(state.cutoffs["o:legacy-sid"])
    assert state.prune_cutoffs(before - 1) == ([], [])  # revoked "now", not in 1970
    with store.engine.connect() as conn:
        facts = conn.execute(sqlalchemy.text("SELECT facts FROM ssf_receiver_subject")).scalar_one()
    await store.close()
    assert json.loads(facts)[0]["at"] >= before - 1  # written back with the time it was given


@pytest.mark.parametrize("prune", [True, False], ids=["prune-on", "default-off"])
def test_the_maintenance_loop_prunes_only_when_asked(
    fake: FakeTransmitter, tmp_path: Path, prune: bool
) -> None:
    settings: dict[str, Any] = {
        "token_max_lifetime": 60,
        "token_leeway": 0,
        "jti_retention": 60,
        "verify_on_start": False,
    }
    if prune:
        settings["prune_state"] = True
    stale = f"i:{fake.base}/as\x1fstale"
    with run_receiver(fake, tmp_path, **settings) as rcv:
        long_ago = int(time.time()) - 3600
        change = CredentialChange(credential_type="password", change_type="update", event_timestamp=long_ago)
        assert rcv.push(fake.sign(Subject.iss_sub(fake.base + "/as", "stale"), change)).status_code == 202
        # Revoked with an hour-old event time, but received now: kept a retention from now.
        late = fake.sign(Subject.opaque("late"), SessionRevoked(event_timestamp=long_ago))
        assert rcv.push(late).status_code == 202
        assert rcv.receiver.state.cutoffs[stale] == long_ago
        if prune:
            rcv.wait(lambda: stale not in rcv.receiver.state.cutoffs, "the maintenance loop", timeout=20)
        else:
            time.sleep(7.5)  # past the maintenance tick (6 s with these retentions)
            assert stale in rcv.receiver.state.cutoffs
        assert is_revoked(rcv.receiver.state.cutoffs["o:late"])
    state = asyncio.run(_reload_sql(f"sqlite:///{tmp_path}/receiver.db"))
    assert (stale in state.cutoffs) is not prune and is_revoked(state.cutoffs["o:late"])


async def _reload_sql(url: str) -> RevocationState:
    store = SQLStore(url)
    await store.open()
    try:
        return await _reload(store)
    finally:
        await store.close()


def _mint_without_iat(fake: FakeTransmitter, sub: str) -> str:
    body = {"iss": fake.base + "/as", "sub": sub, "aud": AUDIENCE, "exp": int(time.time()) + 600}
    header = {"alg": "RS256", "typ": "at+jwt", "kid": fake.idp_key.kid}
    return jws.serialize_compact(header, json.dumps(body).encode(), fake.idp_key.key, algorithms=["RS256"])


@pytest.mark.parametrize("prune", [True, False], ids=["prune-on", "default-off"])
def test_a_token_without_iat_is_refused_while_pruning(
    fake: FakeTransmitter, tmp_path: Path, prune: bool
) -> None:
    """No iat: its age is unknown, so every cutoff refuses it; once a cutoff is pruned nothing
    could tell whether it would have, so with pruning on such a token is refused outright."""
    settings: dict[str, Any] = {"token_max_lifetime": 600, "token_leeway": 0, "verify_on_start": False}
    with run_receiver(fake, tmp_path, prune_state=prune, **settings) as rcv:
        if not prune:  # unchanged: accepted for a subject with no cutoff
            assert rcv.whoami(_mint_without_iat(fake, "quiet")).status_code == 200
            return
        change = CredentialChange(
            credential_type="password", change_type="update", event_timestamp=int(time.time()) - 3600
        )
        assert rcv.push(fake.sign(Subject.iss_sub(fake.base + "/as", "no-iat"), change)).status_code == 202
        token = _mint_without_iat(fake, "no-iat")
        assert rcv.whoami(token).status_code == 401
        loop = rcv.receiver._loop
        assert loop is not None
        pruned = asyncio.run_coroutine_threadsafe(rcv.receiver.prune_state(time.time() - 600), loop)
        assert pruned.result(timeout=30) == 1
        resp = rcv.whoami(token)
        assert resp.status_code == 401 and "no iat" in resp.headers["www-authenticate"]
        assert rcv.whoami(_mint_without_iat(fake, "quiet")).status_code == 401
        assert rcv.whoami(fake.mint("quiet")).status_code == 200


async def test_pruning_runs_in_steps_and_judges_each_entry_when_its_turn_comes() -> None:
    """The event loop runs between steps, and what changed meanwhile is judged as it is then."""
    rcv = Receiver(ReceiverSettings(database_url="memory"))
    await rcv.open()
    state = rcv.state
    n = 25_000
    for i in range(n):
        state.apply(Mutation(Subject.opaque(f"old-{i}"), CUTOFF, math.inf, 100 + i % 300))
        state.apply(Mutation(Subject.iss_sub(ISS, f"u-{i}"), CUTOFF, 100.0 + i % 300, 100 + i % 300))
        state.apply(Mutation(Subject.opaque(f"new-{i}"), CUTOFF, math.inf, 10_000))
    ticks = 0
    revived = [f"old-{i}" for i in range(0, n, 997)]

    async def meanwhile() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1
            if ticks == 2:  # mid-pass: some old sessions are revoked again, now
                for sid in revived:
                    state.apply(Mutation(Subject.opaque(sid), CUTOFF, math.inf, 20_000))
                state.apply(Mutation(Subject.iss_sub(ISS, "back-dated"), CUTOFF, 200.0, 200))

    other = asyncio.create_task(meanwhile())
    try:
        pruned = await rcv.prune_state(before=1000)
    finally:
        other.cancel()
        await rcv.stop()
    assert ticks >= 3  # 50 000 old entries, a few thousand a step: the loop ran between them
    assert sorted(k for k in state.cutoffs if k.startswith("o:old-")) == sorted(f"o:{sid}" for sid in revived)
    assert not any(k.startswith("i:") for k in state.cutoffs if not k.endswith("back-dated"))
    assert sum(1 for k in state.cutoffs if k.startswith("o:new-")) == n
    assert pruned >= 2 * n - len(revived)
    assert state.counts() == {**state.counts(), "revoked_sessions": n + len(revived)}
    # The index lists every remaining entry: the next pass finds the ones now due.
    back_dated = int(f"i:{ISS}\x1fback-dated" in state.cutoffs)  # pruned or not: its minute's turn
    remaining = len(state.cutoffs)
    assert len(state.prune_cutoffs(before=30_000)[0]) == remaining == n + len(revived) + back_dated
    assert state.counts()["revoked_sessions"] == state.counts()["cutoffs"] == 0
    assert state.by_minute == {} and state.complex_by_minute == {}


@pytest.mark.parametrize("backend", ["sql", "redis"])
async def test_a_pruned_complex_subject_leaves_nothing_behind(backend: str, sql_url: str) -> None:
    """A complex subject whose cutoff was its only fact goes from every in-memory index and from
    the store; one that still holds another fact keeps it (and only it)."""
    store = _pruning_store(backend, sql_url)
    rcv = Receiver(ReceiverSettings(database_url="memory"), store=store)
    await rcv.open()
    gone = Subject.complex(user=Subject.iss_sub(ISS, "cx-gone"), session=Subject.opaque("cs-gone"))
    kept = Subject.complex(user=Subject.iss_sub(ISS, "cx-kept"), device=Subject.opaque("dev-kept"))
    try:
        facts = [
            Mutation(gone, CUTOFF, math.inf, 100),
            Mutation(kept, CUTOFF, math.inf, 100),
            Mutation(kept, DISABLED, True, 100),
        ]
        batch = WriteBatch(mutations=[m for m in facts if rcv.state.apply(m)])
        for m in batch.mutations:
            batch.snapshots[row_key(m.subject)] = [x.to_json() for x in rcv.state.export(m.subject)]
        await store.commit(batch)
        assert rcv.state.counts()["complex_subjects"] == 2
        assert await rcv.prune_state(before=500) == 2
        for state in (rcv.state, await _reload(store)):
            assert gone.key not in state.complex and kept.key in state.complex
            assert state.counts()["complex_subjects"] == 1
            assert not any(e.record.subject.key == gone.key for es in state.by_member.values() for e in es)
            assert set(state.by_member) == {f"i:{ISS}\x1fcx-kept", "o:dev-kept"}
            assert not state.complex_by_minute
            token = _user_token("cx-gone", sid="cs-gone")
            assert state.evaluate(token, 50).revoked is False
            kept_state = state.evaluate(_user_token("cx-kept", device_id="dev-kept"), 50)
            assert kept_state.disabled and not kept_state.revoked
        if isinstance(store, SQLStore):
            assert gone.key not in _stored_keys(store) and kept.key in _stored_keys(store)
        else:
            assert not await store.redis.exists(f"{store.ns}:s:{gone.key}")
    finally:
        if isinstance(store, RedisStore):
            await store.clear()
        await rcv.stop()
