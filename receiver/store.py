"""Durable state behind the in-memory view: the ``StateStore`` interface and its SQL backend.

The request path reads memory only. Writes go through :meth:`StateStore.commit`, which
returns once the batch is durable; the SQL backend group-commits (every commit that
arrives while one is in flight joins the next transaction), so a push receiver pays one
transaction per burst, not per SET (perf-anchors d: ~5k/s with a commit per row, ~260k/s
batched through SQLAlchemy Core). On SQLite a transaction is a few multi-row statements on
one kept connection: it halves the writer thread's CPU per SET against driver
``executemany`` through ``engine.begin()``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic_core import to_json
from sqlalchemy import Column, Float, LargeBinary, MetaData, String, Table, Text, delete, event, select
from sqlalchemy.engine import Engine, create_engine
from sqlalchemy.pool import StaticPool

from receiver.state import Mutation, RevocationState

__all__ = [
    "MAX_JTI_CHARS",
    "JtiTracker",
    "MemoryStore",
    "SQLStore",
    "StateStore",
    "WriteBatch",
    "make_store",
]


@dataclass(slots=True)
class WriteBatch:
    """What one or more SETs changed: their jtis and the resulting subject facts."""

    jtis: list[tuple[str, bytes, float]] = field(default_factory=list)
    mutations: list[Mutation] = field(default_factory=list)
    #: subject key → the subject's full current facts (JSON mutations), for snapshot stores.
    snapshots: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: Subject keys to delete (pruning), in order with the snapshots of the batches around it.
    deletes: list[str] = field(default_factory=list)
    #: Write even without jtis or mutations (snapshot rewrites, deletes).
    force: bool = False

    def __bool__(self) -> bool:
        return bool(self.jtis or self.mutations or self.force)


class JtiTracker:
    """Seen ``jti`` → (digest of the SET, first seen). Insertion order is time order.

    Memory holds at most ``capacity`` jtis; past it the oldest leave memory (``overflowed``
    is set) and the receiver asks the store about a jti memory does not know.
    """

    __slots__ = ("_seen", "capacity", "overflowed", "retention")

    def __init__(self, retention: float, capacity: int = 1_000_000) -> None:
        self._seen: dict[str, tuple[bytes, float]] = {}
        self.retention = retention
        self.capacity = capacity
        self.overflowed = False

    def get(self, jti: str) -> bytes | None:
        hit = self._seen.get(jti)
        return None if hit is None else hit[0]

    def add(self, jti: str, digest: bytes, at: float) -> None:
        seen = self._seen
        if jti not in seen:
            seen[jti] = (digest, at)
            if len(seen) > self.capacity:
                del seen[next(iter(seen))]
                self.overflowed = True

    def discard(self, jti: str) -> None:
        """Forget one jti (its SET could not be made durable: a retry must re-apply it)."""
        self._seen.pop(jti, None)

    def prune(self, now: float) -> int:
        """Forget jtis older than the retention window (oldest first, stops at the first young)."""
        limit, n = now - self.retention, 0
        seen = self._seen
        while seen:
            jti = next(iter(seen))
            if seen[jti][1] >= limit:
                break
            del seen[jti]
            n += 1
        return n

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, jti: object) -> bool:
        return jti in self._seen


RemoteListener = Callable[[list[Mutation], list[tuple[str, bytes, float]]], None]


class StateStore(Protocol):
    """Where revocation state and seen jtis survive restarts (and, shared, other instances)."""

    #: True when the store wants full per-subject snapshots in each batch.
    wants_snapshots: bool

    async def open(self) -> None: ...

    async def load(self, state: RevocationState, jtis: JtiTracker) -> None:
        """Fill memory from storage (start-up)."""

    async def commit(self, batch: WriteBatch) -> None:
        """Return once ``batch`` is durable."""

    async def prune(self, before: float) -> int:
        """Drop jtis first seen before ``before``."""

    async def save_stream(self, issuer: str, data: dict[str, Any]) -> None: ...

    async def load_stream(self, issuer: str) -> dict[str, Any] | None: ...

    async def lookup_jti(self, jti: str) -> bytes | None:
        """The stored digest of a jti, or None (asked only when memory overflowed)."""

    async def forget(
        self, keys: list[str], snapshots: dict[str, list[dict[str, Any]]], before: float | None = None
    ) -> None:
        """Pruning: delete the subjects ``keys``; rewrite ``snapshots`` (subject facts after
        pruning). ``before``: only cutoffs made before it go (a shared store may hold newer
        ones another instance wrote meanwhile)."""

    def on_remote(self, listener: RemoteListener) -> None:
        """Register for changes made by other instances (shared stores only)."""

    async def close(self) -> None: ...


class MemoryStore:
    """No durability: for tests and throwaway runs."""

    wants_snapshots = False

    def __init__(self) -> None:
        self.streams: dict[str, dict[str, Any]] = {}
        self.commits = 0

    async def open(self) -> None:
        return None

    async def load(self, state: RevocationState, jtis: JtiTracker) -> None:
        return None

    async def commit(self, batch: WriteBatch) -> None:
        self.commits += 1

    async def prune(self, before: float) -> int:
        return 0

    async def save_stream(self, issuer: str, data: dict[str, Any]) -> None:
        self.streams[issuer] = data

    async def load_stream(self, issuer: str) -> dict[str, Any] | None:
        return self.streams.get(issuer)

    async def lookup_jti(self, jti: str) -> bytes | None:
        return None

    async def forget(
        self, keys: list[str], snapshots: dict[str, list[dict[str, Any]]], before: float | None = None
    ) -> None:
        return None

    def on_remote(self, listener: RemoteListener) -> None:
        return None

    async def close(self) -> None:
        return None


#: The longest ``jti`` the stores keep (the jti column's length).
MAX_JTI_CHARS = 512

_metadata = MetaData()
subject_table = Table(
    "ssf_receiver_subject",
    _metadata,
    Column("key", Text, primary_key=True),
    Column("facts", Text, nullable=False),  # JSON array of mutations
    Column("updated_at", Float, nullable=False),
)
jti_table = Table(
    "ssf_receiver_jti",
    _metadata,
    Column("jti", String(MAX_JTI_CHARS), primary_key=True),
    Column("digest", LargeBinary(32), nullable=False),
    Column("received_at", Float, nullable=False, index=True),
)
stream_table = Table(
    "ssf_receiver_stream",
    _metadata,
    Column("issuer", String(1024), primary_key=True),
    Column("data", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)


_SQLITE_JTI = ("INSERT OR IGNORE INTO ssf_receiver_jti (jti, digest, received_at) VALUES ", "")
_SQLITE_SUBJECT = (
    "INSERT INTO ssf_receiver_subject (key, facts, updated_at) VALUES ",
    " ON CONFLICT(key) DO UPDATE SET facts = excluded.facts, updated_at = excluded.updated_at",
)
#: Most rows in one INSERT: 3 values a row stay under SQLite's oldest bound-value limit (999).
_SQLITE_MAX_ROWS = 256
#: Keys in one DELETE … IN (…): under SQLite's oldest bound-value limit (999).
_DELETE_CHUNK = 500


def _sqlite_insert(cursor: Any, sql: tuple[str, str], rows: list[tuple[Any, Any, Any]]) -> None:
    """Insert ``rows`` with a few multi-row statements of power-of-two sizes.

    A statement per chunk, not a step per row (``executemany``): the writer thread takes the
    GIL back once per statement, not once per row, so it does not queue behind a busy event
    loop row after row; and the few distinct statement texts stay in sqlite3's cache.
    """
    i, n = 0, len(rows)
    while i < n:
        size = min(_SQLITE_MAX_ROWS, 1 << ((n - i).bit_length() - 1))
        chunk = rows[i : i + size]
        cursor.execute(sql[0] + ",".join(("(?, ?, ?)",) * size) + sql[1], [v for row in chunk for v in row])
        i += size


def _untimed_revocation(item: Any) -> bool:
    return isinstance(item, dict) and item.get("value") == "inf" and item.get("at") in (0, 0.0)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    # Pruned and forgotten rows are overwritten, not left readable in free pages of the file.
    cur.execute("PRAGMA secure_delete=ON")
    cur.close()


class SQLStore:
    """SQLite (WAL) by default, PostgreSQL by URL; SQLAlchemy Core on the hot tables."""

    wants_snapshots = True

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False}
            if url in ("sqlite://", "sqlite:///:memory:"):
                kwargs["poolclass"] = StaticPool
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._pending: list[tuple[WriteBatch, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        #: SQLite: the pooled connection group commits keep (checked out once, not per commit).
        self._writer: Any = None
        self.transactions = 0

    async def open(self) -> None:
        await asyncio.to_thread(_metadata.create_all, self.engine)

    async def load(self, state: RevocationState, jtis: JtiTracker) -> None:
        rows, seen = await asyncio.to_thread(self._read_all, time.time() - jtis.retention)
        upgraded: dict[str, list[dict[str, Any]]] = {}
        for key, facts in rows:
            items = json.loads(facts)
            subject = None
            for item in items:
                m = Mutation.from_json(item)
                state.apply(m)
                if _untimed_revocation(item):
                    subject = m.subject
            if subject is not None:
                upgraded[key] = [m.to_json() for m in state.export(subject)]
        for jti, digest, at in seen:
            jtis.add(jti, bytes(digest), at)
        if upgraded:
            # The previous version stored revoked sessions without their time: store the one
            # they were given now, so they are pruned a retention from here, not never.
            await self.commit(WriteBatch(snapshots=upgraded, force=True))

    def _read_all(self, since: float) -> tuple[list[Any], list[Any]]:
        with self.engine.connect() as conn:
            rows = list(conn.execute(select(subject_table.c.key, subject_table.c.facts)))
            seen = list(
                conn.execute(
                    select(jti_table.c.jti, jti_table.c.digest, jti_table.c.received_at)
                    .where(jti_table.c.received_at >= since)
                    .order_by(jti_table.c.received_at)
                )
            )
        return rows, seen

    async def commit(self, batch: WriteBatch) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.append((batch, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        await fut

    async def _flush(self) -> None:
        while self._pending:
            items, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self._write, [b for b, _ in items])
            except Exception as exc:  # surfaced to every waiter
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)
            else:
                for _, fut in items:
                    if not fut.done():
                        fut.set_result(None)

    def _upsert(self, table: Table, rows: list[dict[str, Any]], keys: list[str], update: bool) -> Any:
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            pstmt = pg_insert(table)
            if update:
                return pstmt.on_conflict_do_update(
                    index_elements=keys, set_={c: pstmt.excluded[c] for c in rows[0] if c not in keys}
                )
            return pstmt.on_conflict_do_nothing(index_elements=keys)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        sstmt = sqlite_insert(table)
        if update:
            return sstmt.on_conflict_do_update(
                index_elements=keys, set_={c: sstmt.excluded[c] for c in rows[0] if c not in keys}
            )
        return sstmt.on_conflict_do_nothing(index_elements=keys)

    def _write(self, batches: list[WriteBatch]) -> None:
        now = time.time()
        jtis: dict[str, tuple[str, bytes, float]] = {}
        #: key → its row, or None to delete it: the last batch (in commit order) wins.
        final: dict[str, tuple[str, str, float] | None] = {}
        for b in batches:
            for jti, digest, at in b.jtis:
                if jti not in jtis:
                    jtis[jti] = (jti, digest, at)
            for key in b.deletes:
                final[key] = None
            for key, facts in b.snapshots.items():
                final[key] = (key, to_json(facts).decode(), now)
        if not jtis and not final:
            return
        subjects = [row for row in final.values() if row is not None]
        deletes = [key for key, row in final.items() if row is None]
        if self.engine.dialect.name == "sqlite":
            self._write_sqlite(list(jtis.values()), subjects, deletes)
        else:
            with self.engine.begin() as conn:
                if jtis:
                    rows = [{"jti": j, "digest": d, "received_at": a} for j, d, a in jtis.values()]
                    conn.execute(self._upsert(jti_table, rows, ["jti"], update=False), rows)
                for i in range(0, len(deletes), _DELETE_CHUNK):
                    chunk = deletes[i : i + _DELETE_CHUNK]
                    conn.execute(delete(subject_table).where(subject_table.c.key.in_(chunk)))
                if subjects:
                    srows = [{"key": k, "facts": f, "updated_at": u} for k, f, u in subjects]
                    conn.execute(self._upsert(subject_table, srows, ["key"], update=True), srows)
        self.transactions += 1

    def _write_sqlite(
        self,
        jtis: list[tuple[str, bytes, float]],
        subjects: list[tuple[str, str, float]],
        deletes: Sequence[str] = (),
    ) -> None:
        """One transaction on the kept DBAPI connection: SQLAlchemy's per-transaction
        bookkeeping (pool checkout, events, result objects) cost as much as the rows."""
        if self._writer is None:
            self._writer = self.engine.raw_connection()
        conn = self._writer
        try:
            cursor = conn.cursor()
            try:
                if jtis:
                    _sqlite_insert(cursor, _SQLITE_JTI, jtis)
                for i in range(0, len(deletes), _DELETE_CHUNK):
                    chunk = deletes[i : i + _DELETE_CHUNK]
                    cursor.execute(
                        "DELETE FROM ssf_receiver_subject WHERE key IN (" + ",".join("?" * len(chunk)) + ")",
                        chunk,
                    )
                if subjects:
                    _sqlite_insert(cursor, _SQLITE_SUBJECT, subjects)
            finally:
                cursor.close()
            conn.commit()
        except BaseException:
            try:
                conn.rollback()
            except Exception:  # a broken connection: a fresh one next time
                self._writer = None
                conn.invalidate()
            raise

    async def prune(self, before: float) -> int:
        def run() -> int:
            with self.engine.begin() as conn:
                return int(conn.execute(delete(jti_table).where(jti_table.c.received_at < before)).rowcount)

        return await asyncio.to_thread(run)

    async def save_stream(self, issuer: str, data: dict[str, Any]) -> None:
        row = {"issuer": issuer, "data": json.dumps(data), "updated_at": time.time()}

        def run() -> None:
            with self.engine.begin() as conn:
                conn.execute(self._upsert(stream_table, [row], ["issuer"], update=True), [row])

        await asyncio.to_thread(run)

    async def load_stream(self, issuer: str) -> dict[str, Any] | None:
        def run() -> str | None:
            with self.engine.connect() as conn:
                return conn.execute(
                    select(stream_table.c.data).where(stream_table.c.issuer == issuer)
                ).scalar_one_or_none()

        data = await asyncio.to_thread(run)
        if data is None:
            return None
        loaded = json.loads(data)
        return loaded if isinstance(loaded, dict) else None

    async def forget(
        self, keys: list[str], snapshots: dict[str, list[dict[str, Any]]], before: float | None = None
    ) -> None:
        """Through the serialised writer, queued now: a later commit of the same subject (a new
        revocation applied after the prune) is written after this delete, an earlier one before,
        as memory saw them."""
        if keys or snapshots:
            await self.commit(WriteBatch(deletes=list(keys), snapshots=snapshots, force=True))

    async def lookup_jti(self, jti: str) -> bytes | None:
        def run() -> bytes | None:
            with self.engine.connect() as conn:
                row = conn.execute(select(jti_table.c.digest).where(jti_table.c.jti == jti)).first()
            return None if row is None else bytes(row[0])

        return await asyncio.to_thread(run)

    def on_remote(self, listener: RemoteListener) -> None:
        return None

    async def close(self) -> None:
        while self._flusher is not None and not self._flusher.done():
            await self._flusher
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await asyncio.to_thread(writer.close)
        self.engine.dispose()


def make_store(
    database_url: str,
    redis_url: str | None = None,
    namespace: str = "ssf-receiver",
    jti_retention: int = 7 * 86400,
) -> StateStore:
    """The store a configuration asks for: Redis when given a URL, else SQL."""
    if redis_url:
        from receiver.redis_store import RedisStore

        return RedisStore(redis_url, namespace=namespace, jti_retention=jti_retention)
    if database_url in ("memory", "memory://"):
        return MemoryStore()
    return SQLStore(database_url)
