"""The durable outbox: routing and signing published events, poll selection, push claims.

Every function takes an open connection inside the caller's transaction, so a publish writes
all of its SETs (one per matching stream, signed for that stream's audience) atomically.
Per-stream order is ``(priority desc, id)``: verification and stream-updated notices go ahead
of a backlog, everything else in generation order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.engine import Connection

from ssf.events.base import Event
from ssf.keys import SigningKey
from ssf.set import SecurityEventToken, sign_set
from ssf.subjects import Subject, parse_subject, subject_matches
from transmitter.db import DELIVERED, EXPIRED, PENDING, REJECTED, outbox_t, stream_t, subject_t

__all__ = ["ack", "enqueue", "expire", "purge_stream", "reject", "route", "select_for_poll", "trim_paused"]


def enqueue(
    conn: Connection,
    *,
    issuer: str,
    key: SigningKey,
    stream_id: str,
    aud: str | list[str],
    subject: Subject,
    event_type: str,
    event: Event,
    txn: str | None = None,
    control: bool = False,
    priority: int = 0,
    now: float | None = None,
) -> str:
    """Sign one SET for one stream and write it to the outbox; returns its ``jti``."""
    token = SecurityEventToken.create(
        iss=issuer, aud=aud, sub_id=subject, event=event, event_type=event_type, txn=txn
    )
    compact = sign_set(token, key)
    conn.execute(
        outbox_t.insert().values(
            stream_id=stream_id,
            jti=token.jti,
            token=compact,
            event_type=event_type,
            subject_key=subject.key,
            control=control,
            priority=priority,
            state=PENDING,
            created_at=now if now is not None else time.time(),
            attempts=0,
            next_attempt_at=0,
        )
    )
    return token.jti


def route(conn: Connection, subject: Subject, event_type: str) -> list[Any]:
    """SSF §8.1.3.1: every enabled or paused stream that delivers ``event_type`` and covers
    ``subject`` (default ALL minus removed subjects, or NONE plus added subjects)."""
    rows = conn.execute(
        select(
            stream_t.c.stream_id,
            stream_t.c.aud,
            stream_t.c.events_delivered,
            stream_t.c.default_subjects,
            stream_t.c.status,
        ).where(stream_t.c.status != "disabled")
    ).all()
    candidates = [r for r in rows if event_type in json.loads(r.events_delivered)]
    if not candidates:
        return []
    keys = [subject.key, *(m.key for m in subject.members().values())]
    if subject.format == "aliases":
        keys.extend(s.key for s in subject["identifiers"])
    subs = conn.execute(
        select(subject_t.c.stream_id, subject_t.c.subject_json, subject_t.c.included).where(
            subject_t.c.stream_id.in_([r.stream_id for r in candidates]),
            or_(subject_t.c.subject_key.in_(keys), subject_t.c.is_complex.is_(True)),
        )
    ).all()
    included: set[str] = set()
    excluded: set[str] = set()
    for s in subs:
        if s.stream_id in included if s.included else s.stream_id in excluded:
            continue
        if _matches(parse_subject(json.loads(s.subject_json)), subject):
            (included if s.included else excluded).add(s.stream_id)
    out = []
    for r in candidates:
        if r.default_subjects == "ALL":
            if r.stream_id not in excluded:
                out.append(r)
        elif r.stream_id in included:
            out.append(r)
    return out


def _matches(stored: Subject, event: Subject) -> bool:
    if event.format == "aliases":
        return any(subject_matches(stored, s) for s in event["identifiers"])
    return subject_matches(stored, event)


def trim_paused(conn: Connection, stream_id: str, max_events: int, now: float) -> int:
    """Paused retention by count: expire the oldest held SETs beyond ``max_events``."""
    n = conn.execute(
        select(func.count()).where(outbox_t.c.stream_id == stream_id, outbox_t.c.state == PENDING)
    ).scalar_one()
    if n <= max_events:
        return 0
    ids = [
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
    return expire(conn, ids, "paused retention: count limit", now)


def expire(conn: Connection, ids: Sequence[int], reason: str, now: float) -> int:
    if not ids:
        return 0
    res = conn.execute(
        update(outbox_t)
        .where(outbox_t.c.id.in_(list(ids)), outbox_t.c.state == PENDING)
        .values(state=EXPIRED, last_error=reason, done_at=now)
    )
    return int(res.rowcount)


def select_for_poll(conn: Connection, stream_id: str, status: str, limit: int) -> list[Any]:
    q = select(outbox_t.c.jti, outbox_t.c.token).where(
        outbox_t.c.stream_id == stream_id, outbox_t.c.state == PENDING
    )
    if status != "enabled":
        q = q.where(outbox_t.c.control.is_(True))
    return list(conn.execute(q.order_by(outbox_t.c.priority.desc(), outbox_t.c.id).limit(limit)).all())


def ack(conn: Connection, stream_id: str, jtis: Iterable[str], now: float) -> None:
    ids = list(jtis)
    for i in range(0, len(ids), 500):
        conn.execute(
            update(outbox_t)
            .where(
                outbox_t.c.stream_id == stream_id,
                outbox_t.c.jti.in_(ids[i : i + 500]),
                outbox_t.c.state == PENDING,
            )
            .values(state=DELIVERED, done_at=now)
        )


def reject(conn: Connection, stream_id: str, errors: dict[str, dict[str, str]], now: float) -> None:
    for jti, err in errors.items():
        conn.execute(
            update(outbox_t)
            .where(outbox_t.c.stream_id == stream_id, outbox_t.c.jti == jti, outbox_t.c.state == PENDING)
            .values(state=REJECTED, last_error=json.dumps(err), done_at=now)
        )


def purge_stream(conn: Connection, stream_id: str) -> None:
    conn.execute(delete(outbox_t).where(outbox_t.c.stream_id == stream_id))
    conn.execute(delete(subject_t).where(subject_t.c.stream_id == stream_id))
