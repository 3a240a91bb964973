"""Tables and the engine: the same SQLModel models on SQLite (WAL) and PostgreSQL (psycopg 3).

The control plane (clients, streams, subjects, keys) goes through these models; the hot
outbox paths use SQLAlchemy Core statements over the same tables (perf-anchors d: the ORM
costs ~7x on per-row writes).
"""

from __future__ import annotations

import contextlib
import re
import threading
import weakref
from collections.abc import Iterator
from typing import Any, Final, cast

from sqlalchemy import Column, Index, LargeBinary, Table, Text, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.schema import CreateIndex
from sqlmodel import Field, SQLModel, create_engine

from transmitter.settings import TransmitterSettings

__all__ = [
    "Client",
    "KeyRow",
    "OutboxRow",
    "StreamRow",
    "SubjectRow",
    "make_engine",
    "relax_commit",
]

#: Outbox states. pending: waiting for push or poll; delivered: push answered 202 / poll acked;
#: rejected: the receiver refused it (push 400 or poll setErrs), err recorded; expired: dropped by
#: the paused-retention or disable rule.
PENDING, DELIVERED, REJECTED, EXPIRED = "pending", "delivered", "rejected", "expired"


class Client(SQLModel, table=True):
    __tablename__ = "ssf_client"

    client_id: str = Field(primary_key=True)
    name: str = Field(index=True, unique=True)
    secret_hash: str
    scopes: str
    audience: str
    created_at: int


class StreamRow(SQLModel, table=True):
    __tablename__ = "ssf_stream"

    stream_id: str = Field(primary_key=True)
    owner: str = Field(index=True)
    aud: str  # JSON: string or array
    events_requested: str | None = None  # JSON array, None when absent
    events_delivered: str  # JSON array
    method: str
    endpoint_url: str | None = None
    auth_header: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    description: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    status: str = "enabled"
    reason: str | None = None
    default_subjects: str = "ALL"
    min_verification_interval: int = 0
    inactivity_timeout: int | None = None
    last_activity: float = 0
    last_verification: float = 0
    created_at: float = 0
    lease_owner: str | None = None
    lease_until: float = 0
    failing_since: float | None = None
    extra: str | None = None  # JSON object of unknown receiver-supplied members


class SubjectRow(SQLModel, table=True):
    __tablename__ = "ssf_subject"
    __table_args__ = (Index("ix_ssf_subject_stream_key", "stream_id", "subject_key", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    stream_id: str = Field(index=True)
    subject_key: str = Field(index=True)
    subject_json: str
    is_complex: bool = False
    included: bool = True
    verified: bool = True


DELIVERY_ORDER_INDEX: Final = "ix_ssf_outbox_delivery_order"
#: Its predecessor (``priority`` ascending), dropped from databases made before.
_OLD_ORDER_INDEX: Final = "ix_ssf_outbox_stream_state"


class OutboxRow(SQLModel, table=True):
    __tablename__ = "ssf_outbox"
    #: In delivery order, so that the next SETs of a stream are read off the index: with
    #: ``priority`` ascending, SQLite sorted a stream's whole pending backlog on every poll.
    __table_args__ = (Index(DELIVERY_ORDER_INDEX, "stream_id", "state", text("priority DESC"), "id"),)

    id: int | None = Field(default=None, primary_key=True)
    stream_id: str
    jti: str = Field(index=True)
    token: str = Field(sa_column=Column(Text, nullable=False))
    event_type: str
    subject_key: str
    #: Deliverable while the stream is paused or disabled (stream-updated notices).
    control: bool = False
    #: Sent ahead of older SETs (verification, stream-updated); order is (priority desc, id).
    priority: int = 0
    state: str = PENDING
    created_at: float = 0
    attempts: int = 0
    next_attempt_at: float = 0
    first_failure_at: float | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    done_at: float | None = None


class KeyRow(SQLModel, table=True):
    __tablename__ = "ssf_key"

    kid: str = Field(primary_key=True)
    alg: str
    private_enc: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: int
    retired_at: int | None = None


_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


_LOCKS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def begin(engine: Engine) -> Iterator[Connection]:
    """A transaction. On SQLite, transactions of this process queue on a lock first: SQLite's
    busy handler sleeps up to 100 ms between retries, a lock hands over at once."""
    lock = _LOCKS.get(engine)
    if lock is None:
        with engine.begin() as conn:
            yield conn
        return
    with lock, engine.begin() as conn:
        yield conn


_ASYNC_COMMIT = text("SET LOCAL synchronous_commit TO OFF")


def relax_commit(conn: Connection) -> None:
    """For a transaction whose writes may be lost in a database crash without harm: delivery
    bookkeeping (a SET marked delivered or acknowledged goes back to pending and is sent again;
    receivers dedupe by ``jti``) and a stream's activity time. On PostgreSQL its commit then
    does not wait for the WAL flush, which otherwise sits between a new SET and its delivery;
    SQLite's WAL mode with ``synchronous=NORMAL`` does not wait for one anyway."""
    if conn.dialect.name == "postgresql":
        conn.execute(_ASYNC_COMMIT)


def make_engine(settings: TransmitterSettings) -> Engine:
    """An engine for the configured URL; SQLite gets WAL and a busy timeout."""
    url = settings.database_url
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    elif settings.is_postgres:
        kwargs["pool_size"] = 10
        kwargs["max_overflow"] = 20
        kwargs["pool_recycle"] = 1800  # no pre-ping: it costs a round trip per transaction
        if settings.database_schema:
            if not _SCHEMA_NAME.match(settings.database_schema):
                raise ValueError("database_schema must be a plain SQL identifier")
            kwargs["connect_args"] = {"options": f"-csearch_path={settings.database_schema}"}
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        _LOCKS[engine] = threading.Lock()
    return engine


def _sqlite_begin(conn: Any) -> None:
    # Take the write lock up front: a deferred transaction that reads and then writes can
    # fail at once with SQLITE_BUSY instead of waiting for busy_timeout.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # transactions are begun by _sqlite_begin
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # NORMAL survives a process crash (the kill test) and fsyncs at checkpoints.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def create_schema(engine: Engine, settings: TransmitterSettings) -> None:
    if settings.is_postgres and settings.database_schema:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{settings.database_schema}"'))
    SQLModel.metadata.create_all(engine, tables=[client_t, stream_t, subject_t, outbox_t, key_t])
    # A database made by an earlier version: create_all makes no index on an existing table.
    (order,) = (i for i in outbox_t.indexes if i.name == DELIVERY_ORDER_INDEX)
    with engine.begin() as conn:
        conn.execute(CreateIndex(order, if_not_exists=True))
        conn.execute(text(f"DROP INDEX IF EXISTS {_OLD_ORDER_INDEX}"))


#: Core handles on the same tables, for statements that skip the ORM.
client_t: Table = cast(Table, Client.__table__)  # type: ignore[attr-defined]
stream_t: Table = cast(Table, StreamRow.__table__)  # type: ignore[attr-defined]
subject_t: Table = cast(Table, SubjectRow.__table__)  # type: ignore[attr-defined]
outbox_t: Table = cast(Table, OutboxRow.__table__)  # type: ignore[attr-defined]
key_t: Table = cast(Table, KeyRow.__table__)  # type: ignore[attr-defined]
