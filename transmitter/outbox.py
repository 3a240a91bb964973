"""The durable outbox: routing and signing published events, poll selection, push claims.

Every function takes an open connection inside the caller's transaction, so a publish writes
all of its SETs (one per matching stream, signed for that stream's audience) atomically.
Per-stream order is ``(priority desc, id)``: verification and stream-updated notices go ahead
of a backlog, everything else in generation order.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.engine import Connection

from ssf.events.base import Event
from ssf.keys import SigningKey
from ssf.set import SecurityEventToken, sign_set
from ssf.subjects import Subject, parse_subject, subject_matches
from transmitter.db import DELIVERED, EXPIRED, PENDING, REJECTED, outbox_t, stream_t, subject_t

__all__ = [
    "ack",
    "enqueue",
    "expire",
    "in_lock_order",
    "lock",
    "paused_excess",
    "reject",
    "route",
    "select_for_poll",
]


def in_lock_order(conn: Connection, *conds: ColumnElement[bool]) -> ColumnElement[bool]:
    """The condition of a multi-row UPDATE or DELETE of outbox rows that takes its rows in id
    order. PostgreSQL locks the rows of one statement in the order its plan visits them (the
    jti index, the heap, a stream's delivery order); two statements taking overlapping rows in
    different orders deadlock, and one of them fails (a poll's acknowledgement against a
    disable, maintenance against a publish trimming a paused stream). With every statement
    that writes several outbox rows locking them in id order first, none waits for a row while
    holding one of higher id. SQLite takes the whole database: nothing to order there."""
    if conn.dialect.name != "postgresql":
        return and_(*conds)
    return outbox_t.c.id.in_(select(outbox_t.c.id).where(*conds).order_by(outbox_t.c.id).with_for_update())


def build(
    *,
    issuer: str,
    key: SigningKey,
    stream_id: str,
    aud: str | list[str] | tuple[str, ...],
    subject: Subject,
    event_type: str,
    event: Event,
    txn: str | None = None,
    control: bool = False,
    priority: int = 0,
    now: float | None = None,
) -> dict[str, Any]:
    """Sign one SET for one stream; returns its outbox row (``jti`` included)."""
    token = SecurityEventToken.create(
        iss=issuer, aud=aud, sub_id=subject, event=event, event_type=event_type, txn=txn
    )
    return {
        "stream_id": stream_id,
        "jti": token.jti,
        "token": sign_set(token, key),
        "event_type": event_type,
        "subject_key": subject.key,
        "control": control,
        "priority": priority,
        "state": PENDING,
        "created_at": now if now is not None else time.time(),
        "attempts": 0,
        "next_attempt_at": 0,
    }


def insert(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """One executemany of a prepared INSERT (per-row ``.values()`` costs ~0.5 ms in SQLAlchemy).
    Through SQLAlchemy, not the driver's cursor: the metrics count outbox rows from its
    ``after_execute`` event (``transmitter/ops.py``), whatever code path wrote them."""
    if rows:
        conn.execute(_INSERT, rows)


def enqueue(conn: Connection, **kwargs: Any) -> str:
    """Sign one SET for one stream and write it to the outbox; returns its ``jti``."""
    row = build(**kwargs)
    insert(conn, [row])
    return str(row["jti"])


_INSERT = outbox_t.insert()

# Routing runs for every published event: its two reads go to the driver's own cursor, not
# through SQLAlchemy's execution layer, which cost several times the queries themselves (about
# a third of a publish's CPU on SQLite, measured in bench/transmitter_bench.py). Plain SQL that
# SQLite and PostgreSQL both take; only the placeholder differs.
_ROUTE_STREAMS_SQL = (
    f"SELECT stream_id, aud, events_delivered, default_subjects, status FROM {stream_t.name} "
    "WHERE status != 'disabled'"
)


@functools.lru_cache(maxsize=64)
def _route_subjects_sql(mark: str, n: int) -> str:
    keys = ", ".join([mark] * n)
    return (
        f"SELECT stream_id, subject_json, included, verified FROM {subject_t.name} "
        f"WHERE subject_key IN ({keys}) OR is_complex = {mark}"
    )


def driver_query(conn: Connection, sql: str, params: Sequence[Any] = (), *, rows: bool = True) -> list[Any]:
    """Rows (tuples) of one statement on the connection's driver cursor, inside its
    transaction (``rows=False``: a write, nothing to fetch)."""
    cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.execute(sql, params)
        return list(cur.fetchall()) if rows else []
    finally:
        cur.close()


def placeholder(conn: Connection) -> str:
    """The driver's placeholder: ``?`` (sqlite3) or ``%s`` (psycopg)."""
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def route(conn: Connection, subject: Subject, event_type: str, *, unverified: bool = False) -> list[Target]:
    """SSF §8.1.3.1: every enabled or paused stream that delivers ``event_type`` and covers
    ``subject`` (default ALL minus removed subjects, or NONE plus added subjects)."""
    # (stream_id, aud, events_delivered, default_subjects, status)
    candidates = [r for r in driver_query(conn, _ROUTE_STREAMS_SQL) if event_type in _json_set(r[2])]
    if not candidates:
        return []
    keys = [subject.key, *(m.key for m in subject.members().values())]
    if subject.format == "aliases":
        keys.extend(s.key for s in subject["identifiers"])
    # (stream_id, subject_json, included, verified)
    subs = driver_query(conn, _route_subjects_sql(placeholder(conn), len(keys)), [*keys, True])
    wanted = {r[0] for r in candidates}
    included: set[str] = set()
    excluded: set[str] = set()
    for stream_id, subject_json, is_included, verified in subs:
        if stream_id not in wanted or stream_id in (included if is_included else excluded):
            continue
        if is_included and not verified and not unverified:
            continue  # the receiver has not verified this subject: it starts no events
        if _matches(_subject(subject_json), subject):
            (included if is_included else excluded).add(stream_id)
    out = []
    for stream_id, aud, _, default_subjects, status in candidates:
        if (default_subjects == "ALL" and stream_id not in excluded) or (
            default_subjects != "ALL" and stream_id in included
        ):
            out.append(Target(stream_id, _json_value(aud), status))
    return out


class Target(NamedTuple):
    """A stream an event is routed to."""

    stream_id: str
    aud: str | list[str]
    status: str


@functools.lru_cache(maxsize=4096)
def _json_set(text: str) -> frozenset[str]:
    return frozenset(json.loads(text))


@functools.lru_cache(maxsize=4096)
def _json_value(text: str) -> Any:
    value = json.loads(text)
    return tuple(value) if isinstance(value, list) else value


@functools.lru_cache(maxsize=4096)
def _subject(text: str) -> Subject:
    return parse_subject(json.loads(text))


def _matches(stored: Subject, event: Subject) -> bool:
    if event.format == "aliases":
        return any(subject_matches(stored, s) for s in event["identifiers"])
    return subject_matches(stored, event)


def paused_excess(conn: Connection, stream_id: str, max_events: int) -> list[int]:
    """Paused retention by count: the ids of the oldest held SETs beyond ``max_events``."""
    n = conn.execute(
        select(func.count()).where(outbox_t.c.stream_id == stream_id, outbox_t.c.state == PENDING)
    ).scalar_one()
    if n <= max_events:
        return []
    return [
        r[0]
        for r in conn.execute(
            select(outbox_t.c.id)
            .where(
                outbox_t.c.stream_id == stream_id, outbox_t.c.state == PENDING, outbox_t.c.control.is_(False)
            )
            .order_by(outbox_t.c.id)
            .limit(n - max_events)
        )
    ]


def expire(conn: Connection, ids: Sequence[int], reason: str, now: float) -> int:
    if not ids:
        return 0
    res = conn.execute(
        update(outbox_t)
        .where(in_lock_order(conn, outbox_t.c.id.in_(list(ids)), outbox_t.c.state == PENDING))
        .values(state=EXPIRED, last_error=reason, done_at=now)
    )
    return int(res.rowcount)


# Poll (RFC 8936) runs these once or twice per request, many times a second per stream: on
# the driver's cursor too (through SQLAlchemy, building and compiling them cost most of a
# poll's CPU).
@functools.lru_cache(maxsize=8)
def _poll_sql(mark: str, control_only: bool) -> str:
    control = f" AND control = {mark}" if control_only else ""
    return (
        f"SELECT jti, token FROM {outbox_t.name} WHERE stream_id = {mark} AND state = {mark}{control} "
        f"ORDER BY priority DESC, id LIMIT {mark}"
    )


def select_for_poll(conn: Connection, stream_id: str, status: str, limit: int) -> list[tuple[str, str]]:
    """``(jti, token)`` of the next SETs to serve, in delivery order (only control SETs
    while the stream is not enabled)."""
    control_only = status != "enabled"
    params: list[Any] = [stream_id, PENDING, *([True] if control_only else []), limit]
    return driver_query(conn, _poll_sql(placeholder(conn), control_only), params)


@functools.lru_cache(maxsize=64)
def _ack_sql(mark: str, n: int) -> str:
    jtis = ", ".join([mark] * n)
    # SQLite (no statistics) would pick the (stream_id, state) index and walk every pending SET
    # of the stream; '+' keeps those two columns out of index selection, so the jti index is used.
    plus = "+" if mark == "?" else ""
    return (
        f"UPDATE {outbox_t.name} SET state = {mark}, done_at = {mark} "
        f"WHERE {plus}stream_id = {mark} AND {plus}state = {mark} AND jti IN ({jtis})"
    )


#: PostgreSQL: the rows taken in id order (see in_lock_order; the jti index would visit them in
#: jti order), every list in one statement text.
_PG_ACK_SQL = (
    f"UPDATE {outbox_t.name} SET state = %s, done_at = %s WHERE id IN (SELECT id FROM {outbox_t.name} "
    "WHERE stream_id = %s AND state = %s AND jti = ANY(%s) ORDER BY id FOR UPDATE)"
)
_PG_LOCK_SQL = (
    f"SELECT id FROM {outbox_t.name} WHERE stream_id = %s AND state = %s AND jti = ANY(%s) "
    "ORDER BY id FOR UPDATE"
)


def ack(conn: Connection, stream_id: str, jtis: Iterable[str], now: float) -> None:
    ids = list(jtis)
    mark = placeholder(conn)
    if mark == "%s":
        driver_query(conn, _PG_ACK_SQL, [DELIVERED, now, stream_id, PENDING, ids], rows=False)
        return
    for i in range(0, len(ids), 512):
        chunk = ids[i : i + 512]
        # The list is padded to a power of two with its last jti (a repeat changes nothing):
        # a few statement texts, each prepared once, instead of one per list length.
        size = 1 << (len(chunk) - 1).bit_length()
        chunk += [chunk[-1]] * (size - len(chunk))
        driver_query(conn, _ack_sql(mark, size), [DELIVERED, now, stream_id, PENDING, *chunk], rows=False)


def lock(conn: Connection, stream_id: str, jtis: Iterable[str]) -> None:
    """Take the pending rows of these jtis in id order, for a transaction that then writes
    them in several statements (a poll's acks and setErrs; see in_lock_order)."""
    if conn.dialect.name == "postgresql":
        driver_query(conn, _PG_LOCK_SQL, [stream_id, PENDING, list(jtis)], rows=False)


def reject(conn: Connection, stream_id: str, errors: dict[str, dict[str, str]], now: float) -> None:
    for jti, err in errors.items():
        conn.execute(
            update(outbox_t)
            .where(outbox_t.c.stream_id == stream_id, outbox_t.c.jti == jti, outbox_t.c.state == PENDING)
            .values(state=REJECTED, last_error=json.dumps(err), done_at=now)
        )
