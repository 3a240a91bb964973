"""The transmitter's Python API: streams, status, subjects, verification, publishing, poll.

Methods are synchronous (one database transaction each) and thread-safe; the HTTP layer runs
them on worker threads. New SETs wake long polls and the push worker through the notifier.
"""

from __future__ import annotations

import json
import math
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.engine import Connection, Engine

from ssf import uris
from ssf.errors import InvalidEvent, InvalidRequest, ModelError, SSFError
from ssf.events import (
    EVENT_MODELS,
    SSF_EVENTS,
    CredentialChange,
    SessionRevoked,
    StreamUpdated,
    Verification,
    parse_event,
)
from ssf.poll import PollRequest
from ssf.stream import AddSubjectRequest, RemoveSubjectRequest, StreamRequest
from ssf.subjects import Subject, parse_subject
from transmitter import outbox
from transmitter.auth import Authenticator, Principal
from transmitter.db import (
    EXPIRED,
    PENDING,
    begin,
    create_schema,
    make_engine,
    outbox_t,
    relax_commit,
    stream_t,
    subject_t,
)
from transmitter.errors import Conflict, NotFound, TooManyRequests
from transmitter.keystore import KeyStore
from transmitter.notify import Notifier
from transmitter.pg_listen import PgAnnouncer
from transmitter.secrets_box import SecretBox, load_master_secret
from transmitter.settings import TransmitterSettings
from transmitter.ssrf import SSRFGuard
from transmitter.streams import (
    Stream,
    check_transmitter_supplied,
    check_unknown_members,
    delivered_for,
    new_stream_id,
    resolve_delivery,
    storable,
)

__all__ = ["Transmitter"]


class Transmitter:
    def __init__(self, settings: TransmitterSettings | None = None, *, engine: Engine | None = None) -> None:
        self.settings = settings or TransmitterSettings()
        self.engine = engine or make_engine(self.settings)
        create_schema(self.engine, self.settings)
        self.box = SecretBox(load_master_secret(self.settings))
        self.keys = KeyStore(self.engine, self.box, self.settings)
        self.keys.ensure()
        self.auth = Authenticator(self.engine, self.box, self.settings)
        self.guard = SSRFGuard(self.settings)
        self.notifier = Notifier()
        #: Tags this object's NOTIFYs: its own listener skips them (it woke its waiters already).
        self.origin = secrets.token_hex(6)
        self._announcer = (
            PgAnnouncer(self.engine, self.settings, self.origin) if self.settings.is_postgres else None
        )
        #: Streams this object deleted, and when: maintenance deletes their outbox rows again
        #: for a while (see :meth:`delete_stream`).
        self._deleted: dict[str, float] = {}
        self._deleted_lock = threading.Lock()

    def _notify(self, ids: Iterable[str]) -> None:
        """After a commit: wake local waiters, and on PostgreSQL the other instances."""
        ids = list(ids)
        self.notifier.notify(ids)
        if self._announcer is not None:
            self._announcer.send(ids)

    @property
    def issuer(self) -> str:
        return self.settings.issuer

    def poll_url(self, stream_id: str) -> str:
        return f"{self.issuer}/ssf/poll/{stream_id}"

    # --- loading ------------------------------------------------------------------------
    def _load(self, conn: Connection, stream_id: str, owner: str | None, *, lock: bool = False) -> Stream:
        """``lock``: for a read-modify-write, hold the row (PostgreSQL ``FOR UPDATE``) so that
        concurrent changes of one stream apply one after the other; SQLite transactions are
        serialized already. Only where no outbox row is changed after it: the push worker
        takes outbox rows, then the stream row (status changes keep that order, unlocked)."""
        if not storable(stream_id):
            raise NotFound("no stream with that stream_id")
        q = select(stream_t).where(stream_t.c.stream_id == stream_id)
        if owner is not None:
            q = q.where(stream_t.c.owner == owner)
        if lock:
            q = q.with_for_update()
        row = conn.execute(q).first()
        if row is None:
            # Another client's stream is as unknown as a missing one: never reveal it.
            raise NotFound("no stream with that stream_id")
        header = self.box.decrypt(row.auth_header) if row.auth_header is not None else None
        return Stream.from_row(row, header)

    def _save(self, conn: Connection, stream: Stream) -> None:
        values = stream.to_row()
        values["auth_header"] = self.box.encrypt(stream.auth_header) if stream.auth_header else None
        conn.execute(update(stream_t).where(stream_t.c.stream_id == stream.stream_id).values(**values))

    def _touch(self, conn: Connection, stream_id: str, now: float) -> None:
        """SSF §8.1.1: eligible receiver activity restarts the inactivity timer."""
        conn.execute(update(stream_t).where(stream_t.c.stream_id == stream_id).values(last_activity=now))

    def stream(self, stream_id: str) -> Stream:
        with begin(self.engine) as conn:
            return self._load(conn, stream_id, None)

    # --- stream configuration (SSF §8.1.1) -----------------------------------------------
    def create_stream(self, principal: Principal, req: StreamRequest) -> dict[str, Any]:
        check_unknown_members(req)
        given = sorted(req.transmitter_supplied())
        if given:
            raise ModelError(f"transmitter-supplied member(s) cannot be set on create: {', '.join(given)}")
        sid = new_stream_id()
        method, url, header, extra = resolve_delivery(req.delivery, sid, self.poll_url(sid), None)
        if method == uris.PUSH and url:
            self.guard.check_url(url)
        now = time.time()
        stream = Stream(
            stream_id=sid,
            owner=principal.owner,
            aud=principal.audience,
            events_requested=req.events_requested,
            events_delivered=delivered_for(req.events_requested),
            method=method,
            endpoint_url=url,
            auth_header=header,
            description=req.description,
            default_subjects=self.settings.default_subjects,
            min_verification_interval=self.settings.min_verification_interval,
            inactivity_timeout=self.settings.inactivity_timeout,
            last_activity=now,
            extra={"delivery": extra} if extra else {},
        )
        with begin(self.engine) as conn:
            if conn.dialect.name == "postgresql":
                # Creates of one client queue here until the previous one commits, so each
                # counts the others' streams (SQLite transactions are serialized already).
                conn.execute(_OWNER_LOCK, {"owner": principal.owner})
            count = conn.execute(select(func.count()).where(stream_t.c.owner == principal.owner)).scalar_one()
            if count >= self.settings.max_streams_per_client:
                raise Conflict("this client already has the maximum number of streams")
            values = stream.to_row()
            values["auth_header"] = self.box.encrypt(header) if header else None
            values["created_at"] = now
            conn.execute(stream_t.insert().values(**values))
        return stream.config(self.issuer)

    def read_streams(
        self, principal: Principal, stream_id: str | None
    ) -> dict[str, Any] | list[dict[str, Any]]:
        with begin(self.engine) as conn:
            if stream_id is not None:
                stream = self._load(conn, stream_id, principal.owner)
                self._touch(conn, stream_id, time.time())
                return stream.config(self.issuer)
            rows = conn.execute(
                select(stream_t).where(stream_t.c.owner == principal.owner).order_by(stream_t.c.created_at)
            ).all()
        return [
            Stream.from_row(r, self.box.decrypt(r.auth_header) if r.auth_header else None).config(self.issuer)
            for r in rows
        ]

    def update_stream(self, principal: Principal, req: StreamRequest, *, replace: bool) -> dict[str, Any]:
        """PATCH (``replace=False``) or PUT (``replace=True``), SSF §8.1.1.3-4."""
        check_unknown_members(req)
        if not req.stream_id:
            raise ModelError("stream_id is required")
        sid = req.stream_id
        if req.delivery is not None and req.delivery.method == uris.PUSH and req.delivery.endpoint_url:
            self.guard.check_url(req.delivery.endpoint_url)  # before the transaction: DNS may be slow
        with begin(self.engine) as conn:
            stream = self._load(conn, sid, principal.owner, lock=True)
            check_transmitter_supplied(req, stream, self.issuer)
            present = req.receiver_supplied()
            if replace or "delivery" in present:
                method, url, header, extra = resolve_delivery(req.delivery, sid, self.poll_url(sid), stream)
                stream.method, stream.endpoint_url, stream.auth_header = method, url, header
                stream.extra = {"delivery": extra} if extra else {}
            if replace or "events_requested" in present:
                stream.events_requested = req.events_requested
                stream.events_delivered = delivered_for(req.events_requested)
            if replace or "description" in present:
                stream.description = req.description
            stream.last_activity = time.time()
            self._save(conn, stream)
        self._notify([sid])
        return stream.config(self.issuer)

    def delete_stream(self, principal: Principal, stream_id: str) -> None:
        with begin(self.engine) as conn:
            self._load(conn, stream_id, principal.owner)
            # Rows in the order every transaction takes them (outbox, stream, subjects; the push
            # worker records a failure outbox-then-stream): no deadlock. Deleting the stream row
            # waits for a subject change in flight, so its subject rows are gone with the rest.
            conn.execute(
                outbox_t.delete().where(outbox.in_lock_order(conn, outbox_t.c.stream_id == stream_id))
            )
            conn.execute(stream_t.delete().where(stream_t.c.stream_id == stream_id))
            conn.execute(subject_t.delete().where(subject_t.c.stream_id == stream_id))
        # A publish that routed to the stream before this commit may insert its SETs after it;
        # nothing would ever deliver or remove them. Maintenance deletes them on its next runs.
        with self._deleted_lock:
            self._deleted[stream_id] = time.time()
        self._notify([stream_id])

    # --- status (SSF §8.1.2, §8.1.5) -----------------------------------------------------
    def get_status(self, principal: Principal, stream_id: str) -> dict[str, Any]:
        with begin(self.engine) as conn:
            s = self._load(conn, stream_id, principal.owner)
            self._touch(conn, stream_id, time.time())
        return _status_body(s)

    def receiver_set_status(
        self, principal: Principal, stream_id: str, status: str, reason: str | None
    ) -> dict[str, Any]:
        """A receiver's own change: applied at once, no stream-updated event (SSF §8.1.2.2)."""
        with begin(self.engine) as conn:
            s = self._load(conn, stream_id, principal.owner)
            self._apply_status(conn, s, status, reason, notify_receiver=False)
            self._touch(conn, stream_id, time.time())
        self._notify([stream_id])
        return _status_body(s)

    def set_status(self, stream_id: str, status: str, reason: str | None = None) -> dict[str, Any]:
        """A transmitter-initiated change (operator, inactivity, failing receiver): a
        stream-updated event goes out before stopping / upon re-enabling (SSF §8.1.5)."""
        if status not in ("enabled", "paused", "disabled"):
            raise ModelError("status must be enabled, paused or disabled")
        with begin(self.engine) as conn:
            s = self._load(conn, stream_id, None)
            self._apply_status(conn, s, status, reason, notify_receiver=True)
        self._notify([stream_id])
        return _status_body(s)

    def _apply_status(
        self, conn: Connection, s: Stream, status: str, reason: str | None, *, notify_receiver: bool
    ) -> None:
        now = time.time()
        changed = s.status != status
        if status == "disabled" and changed:
            # A disabled stream keeps nothing (SSF §8.1.2.1).
            ids = [
                r[0]
                for r in conn.execute(
                    select(outbox_t.c.id).where(
                        outbox_t.c.stream_id == s.stream_id,
                        outbox_t.c.state == PENDING,
                        outbox_t.c.control.is_(False),
                    )
                )
            ]
            outbox.expire(conn, ids, "stream disabled", now)
        values: dict[str, Any] = {"status": status, "reason": reason}
        if status == "enabled":
            values["failing_since"] = None
        conn.execute(update(stream_t).where(stream_t.c.stream_id == s.stream_id).values(**values))
        s.status, s.reason = status, reason
        if notify_receiver and changed:
            outbox.enqueue(
                conn,
                issuer=self.issuer,
                key=self.keys.active,
                stream_id=s.stream_id,
                aud=s.aud,
                subject=Subject.opaque(s.stream_id),
                event_type=uris.STREAM_UPDATED,
                event=StreamUpdated(status=status, reason=reason),  # type: ignore[arg-type]
                txn=secrets.token_urlsafe(16),  # SSF §4.1.9: one per underlying cause
                control=True,
                priority=1,
                now=now,
            )

    # --- subjects (SSF §8.1.3) -----------------------------------------------------------
    def add_subject(self, principal: Principal, req: AddSubjectRequest) -> None:
        with begin(self.engine) as conn:
            # the row lock queues changes of one stream's subjects (delete-then-insert below)
            self._load(conn, req.stream_id, principal.owner, lock=True)
            self._put_subject(
                conn, req.stream_id, req.subject, included=True, verified=req.verified is not False
            )
            self._touch(conn, req.stream_id, time.time())

    def remove_subject(self, principal: Principal, req: RemoveSubjectRequest) -> None:
        with begin(self.engine) as conn:
            s = self._load(conn, req.stream_id, principal.owner, lock=True)
            if req.subject == Subject.opaque(s.stream_id):
                raise ModelError("the stream's own subject cannot be removed")
            self._put_subject(conn, req.stream_id, req.subject, included=False, verified=True)
            self._touch(conn, req.stream_id, time.time())

    def _put_subject(
        self, conn: Connection, stream_id: str, subject: Subject, *, included: bool, verified: bool
    ) -> None:
        conn.execute(
            subject_t.delete().where(
                subject_t.c.stream_id == stream_id, subject_t.c.subject_key == subject.key
            )
        )
        conn.execute(
            subject_t.insert().values(
                stream_id=stream_id,
                subject_key=subject.key,
                subject_json=json.dumps(subject.to_dict()),
                is_complex=subject.is_complex,
                included=included,
                verified=verified,
            )
        )

    # --- verification (SSF §8.1.4) -------------------------------------------------------
    def request_verification(self, principal: Principal, stream_id: str, state: str | None) -> str | None:
        """The receiver's request (SSF §8.1.4.2); the verification SET's ``jti``, or None on a
        disabled stream, which keeps no events (SSF §8.1.2), this one included."""
        now = time.time()
        with begin(self.engine) as conn:
            s = self._load(conn, stream_id, principal.owner, lock=True)
            wait = s.last_verification + s.min_verification_interval - now
            if s.min_verification_interval and wait > 0:
                raise TooManyRequests("verification requested too often", math.ceil(wait))
            conn.execute(
                update(stream_t)
                .where(stream_t.c.stream_id == stream_id)
                .values(last_verification=now, last_activity=now)
            )
            if s.status == "disabled":
                return None
            jti = self._verification(conn, s, state, now)
        self._notify([stream_id])
        return jti

    def send_verification(self, stream_id: str) -> str:
        """A transmitter-initiated verification event: it never carries ``state``. Refused
        (409) on a disabled stream, which keeps no events."""
        with begin(self.engine) as conn:
            s = self._load(conn, stream_id, None)
            if s.status == "disabled":
                raise Conflict("the stream is disabled: it keeps no events, a verification neither")
            jti = self._verification(conn, s, None, time.time())
        self._notify([stream_id])
        return jti

    def _verification(self, conn: Connection, s: Stream, state: str | None, now: float) -> str:
        return outbox.enqueue(
            conn,
            issuer=self.issuer,
            key=self.keys.active,
            stream_id=s.stream_id,
            aud=s.aud,
            subject=Subject.opaque(s.stream_id),
            event_type=uris.VERIFICATION,
            event=Verification(state=state),
            txn=secrets.token_urlsafe(16),  # SSF §4.1.9: one per underlying cause
            priority=1,
            now=now,
        )

    # --- publishing ----------------------------------------------------------------------
    def publish(self, subject: object, events: object, txn: object = None) -> dict[str, str]:
        """Validate, route, sign per stream and write to the outbox in one transaction.

        Returns ``{stream_id: jti}``; durable once this returns. Raises ``SSFError`` (400)
        naming the problem for a bad subject, event or txn.
        """
        return self.publish_many([(subject, events, txn)])[0]

    def publish_many(self, items: list[tuple[object, object, object]]) -> list[dict[str, str]]:
        """Several events in one transaction (one commit): the batch form of :meth:`publish`."""
        return self._write([_validate_publish(*item) for item in items])

    def publish_each(self, items: list[tuple[object, object, object]]) -> list[dict[str, str] | SSFError]:
        """Independent publish requests in one transaction (group commit): an invalid one gets
        its own error in its place, the valid ones are written together."""
        results: list[dict[str, str] | SSFError] = []
        parsed: list[tuple[Subject, str, Any, str | None]] = []
        places: list[int] = []
        for item in items:
            try:
                parsed.append(_validate_publish(*item))
            except SSFError as exc:
                results.append(exc)
                continue
            places.append(len(results))
            results.append({})
        if parsed:
            for place, written in zip(places, self._write(parsed), strict=True):
                results[place] = written
        return results

    def _write(self, parsed: list[tuple[Subject, str, Any, str | None]]) -> list[dict[str, str]]:
        now = time.time()
        key = self.keys.active
        out: list[dict[str, str]] = []
        touched: set[str] = set()
        with begin(self.engine) as conn:
            rows: list[dict[str, Any]] = []
            paused: set[str] = set()
            for subject, event_type, event, txn in parsed:
                result: dict[str, str] = {}
                unverified = self.settings.unverified_subjects == "include"
                for r in outbox.route(conn, subject, event_type, unverified=unverified):
                    row = outbox.build(
                        issuer=self.issuer,
                        key=key,
                        stream_id=r.stream_id,
                        aud=r.aud,
                        subject=subject,
                        event_type=event_type,
                        event=event,
                        txn=txn,
                        now=now,
                    )
                    rows.append(row)
                    result[r.stream_id] = row["jti"]
                    if r.status == "paused":
                        paused.add(r.stream_id)
                out.append(result)
                touched.update(result)
            outbox.insert(conn, rows)
            # One statement for all the streams: it takes the rows in id order (see
            # outbox.in_lock_order), as maintenance and other publishers do.
            excess = [
                i
                for sid in sorted(paused)
                for i in outbox.paused_excess(conn, sid, self.settings.paused_max_events)
            ]
            outbox.expire(conn, excess, "paused retention: count limit", now)
        self._notify(touched)
        return out

    # --- poll (RFC 8936) -----------------------------------------------------------------
    def poll_once(
        self, principal: Principal, stream_id: str, req: PollRequest
    ) -> tuple[dict[str, str], bool]:
        """Apply acks and errors, then select; returns (sets, moreAvailable)."""
        now = time.time()
        if not storable(stream_id):
            raise NotFound("no stream with that stream_id")
        with begin(self.engine) as conn:
            relax_commit(conn)  # acknowledgements and the activity time (see relax_commit)
            # The statements of this hot path go to the driver's cursor (see outbox.route).
            mark = outbox.placeholder(conn)
            found = outbox.driver_query(conn, _POLL_STREAM_SQL[mark], [stream_id, principal.owner])
            if not found:
                # Another client's stream is as unknown as a missing one: never reveal it.
                raise NotFound("no stream with that stream_id")
            method, status = found[0]
            if method != uris.POLL:
                raise ModelError("this stream does not use poll delivery")
            if req.set_errs:  # several statements: their rows taken first, in one lock order
                outbox.lock(conn, stream_id, [*req.ack, *req.set_errs])
            if req.ack:
                outbox.ack(conn, stream_id, req.ack, now)
            if req.set_errs:
                outbox.reject(conn, stream_id, {k: v.model_dump() for k, v in req.set_errs.items()}, now)
            # SSF §8.1.1: eligible receiver activity restarts the inactivity timer.
            outbox.driver_query(conn, _TOUCH_SQL[mark], [now, stream_id], rows=False)
            limit = (
                self.settings.max_poll_events
                if req.max_events is None
                else min(req.max_events, self.settings.max_poll_events)
            )
            if limit == 0:
                return {}, False
            rows = outbox.select_for_poll(conn, stream_id, status, limit + 1)
        more = len(rows) > limit
        return dict(rows[:limit]), more

    # --- maintenance ---------------------------------------------------------------------
    def maintain(self, now: float | None = None) -> None:
        """Inactivity timeouts, paused retention by age, key pruning and reload."""
        now = time.time() if now is None else now
        with begin(self.engine) as conn:
            idle = conn.execute(
                select(stream_t.c.stream_id, stream_t.c.inactivity_timeout, stream_t.c.last_activity).where(
                    stream_t.c.status == "enabled", stream_t.c.inactivity_timeout.is_not(None)
                )
            ).all()
            cutoff = now - self.settings.paused_retention_seconds
            paused = [
                r[0] for r in conn.execute(select(stream_t.c.stream_id).where(stream_t.c.status == "paused"))
            ]
        # One transaction per multi-row statement, each taking its rows in id order (see
        # outbox.in_lock_order): two in one would hold the first's rows while taking the
        # second's, out of order with a stream DELETE taking both.
        if paused:
            with begin(self.engine) as conn:
                conn.execute(
                    update(outbox_t)
                    .where(
                        outbox.in_lock_order(
                            conn,
                            outbox_t.c.stream_id.in_(paused),
                            outbox_t.c.state == PENDING,
                            outbox_t.c.control.is_(False),
                            outbox_t.c.created_at < cutoff,
                        )
                    )
                    .values(state=EXPIRED, last_error="paused retention: age limit", done_at=now)
                )
        if self.settings.outbox_keep_seconds:
            with begin(self.engine) as conn:
                conn.execute(
                    outbox_t.delete().where(
                        outbox.in_lock_order(
                            conn,
                            outbox_t.c.state != PENDING,
                            outbox_t.c.done_at < now - self.settings.outbox_keep_seconds,
                        )
                    )
                )
        with self._deleted_lock:
            deleted = list(self._deleted)
            # a publish transaction that raced the delete is long over after a minute
            for sid, at in list(self._deleted.items()):
                if at < now - _DELETED_STREAM_SWEEP_SECONDS:
                    del self._deleted[sid]
        if deleted:
            with begin(self.engine) as conn:
                conn.execute(
                    outbox_t.delete().where(outbox.in_lock_order(conn, outbox_t.c.stream_id.in_(deleted)))
                )
        for r in idle:
            if r.last_activity + r.inactivity_timeout < now:
                self.set_status(r.stream_id, self.settings.inactivity_action, "inactivity timeout")
        self.keys.prune()

    def list_streams(self) -> list[Stream]:
        """Every stream (operator view; authorization headers stay encrypted)."""
        with begin(self.engine) as conn:
            rows = conn.execute(select(stream_t).order_by(stream_t.c.created_at)).all()
        return [Stream.from_row(r, None) for r in rows]

    def outbox_counts(self, stream_id: str) -> dict[str, int]:
        with begin(self.engine) as conn:
            rows = conn.execute(
                select(outbox_t.c.state, func.count())
                .where(outbox_t.c.stream_id == stream_id)
                .group_by(outbox_t.c.state)
            ).all()
        return {r[0]: int(r[1]) for r in rows}

    def close(self) -> None:
        if self._announcer is not None:
            self._announcer.close()
        self.engine.dispose()


_OWNER_LOCK = text("SELECT pg_advisory_xact_lock(hashtext('ssf_stream_owner:' || :owner))")
#: How long maintenance keeps deleting outbox rows of a stream this process deleted.
_DELETED_STREAM_SWEEP_SECONDS = 60.0

_POLL_STREAM_SQL = {
    m: f"SELECT method, status FROM {stream_t.name} WHERE stream_id = {m} AND owner = {m}"
    for m in ("?", "%s")  # sqlite3, psycopg
}
_TOUCH_SQL = {m: f"UPDATE {stream_t.name} SET last_activity = {m} WHERE stream_id = {m}" for m in ("?", "%s")}


def _status_body(s: Stream) -> dict[str, Any]:
    body: dict[str, Any] = {"stream_id": s.stream_id, "status": s.status}
    if s.reason is not None:
        body["reason"] = s.reason
    return body


def _validate_publish(subject: object, events: object, txn: object) -> tuple[Subject, str, Any, str | None]:
    sub = subject if isinstance(subject, Subject) else parse_subject(subject)
    if not isinstance(events, Mapping) or len(events) != 1:
        raise InvalidRequest("'events' must be an object holding exactly one event (SSF §4.2.1)")
    ((event_type, payload),) = events.items()
    if not isinstance(event_type, str) or not event_type:
        raise InvalidEvent("the event type must be a URI")
    if event_type in SSF_EVENTS:
        raise InvalidEvent("verification and stream-updated events are sent by the transmitter itself")
    if txn is not None and (not isinstance(txn, str) or not txn):
        raise InvalidRequest("'txn' must be a non-empty string")
    if event_type not in EVENT_MODELS and ":" not in event_type:
        raise InvalidEvent("the event type must be a URI")
    event = parse_event(event_type, payload)
    allowed = type(event).subject_formats
    if allowed is not None and sub.format not in allowed:
        raise InvalidEvent(f"event '{event_type}' needs a subject of format {sorted(allowed)}")
    default_reason = _DEFAULT_REASON_ADMIN.get(type(event))
    if default_reason is not None and not getattr(event, "reason_admin", None):
        event = event.model_copy(update={"reason_admin": {"en": default_reason}})
    return sub, event_type, event, txn


#: CAEP interoperability profile: the transmitter MUST populate ``reason_admin`` on these. The
#: identity provider's own text goes out when it gives one; otherwise this plain statement.
_DEFAULT_REASON_ADMIN: dict[type, str] = {
    SessionRevoked: "Session revoked by the identity provider",
    CredentialChange: "Credential changed at the identity provider",
}
