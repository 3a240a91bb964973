"""Push delivery (RFC 8935): an asynchronous worker draining the outbox.

- One SET per POST: ``Content-Type: application/secevent+jwt``, ``Accept: application/json``,
  the stream's ``authorization_header`` if configured and no ``Authorization`` otherwise.
- 2xx (202 per RFC 8935 §2.2) = delivered. 400 = refused: the ``err`` is recorded and the SET
  is not retried blindly. Transport errors, timeouts, 5xx and other statuses retry with
  exponential backoff and jitter; 429 and 503 honour ``Retry-After``. Failing for longer than
  ``retry_cap_seconds`` pauses the stream with a stream-updated event; held SETs stay queued.
- Order per stream: one SET in flight per stream, in outbox order. Work is claimed per stream
  with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL plus a conditional UPDATE), so several
  instances never push the same SET at once; a crashed instance's lease simply expires. A live
  instance renews the leases of all the streams it pushes (one task), so no wait of a stream's
  loop (a slow receiver, a free connection slot) lets one run out under it.
- Every statement that writes several outbox rows takes them in id order
  (:func:`transmitter.outbox.in_lock_order`), and no transaction writes outbox rows in two
  statements unless it locked them all first, in that order.
- Every transaction that locks both an outbox row and its stream row (here and in
  :mod:`transmitter.service`) takes the outbox row first; those that take the stream row first
  only insert outbox rows, which waits for no lock: no lock-order deadlock on PostgreSQL.

The HTTP client is :class:`~transmitter.push_client.PushClient`: measured in
``bench/transmitter_bench.py`` and perf-anchors (c), httpx 0.28's AsyncClient tops out near
1.5k POSTs/s, aiohttp costs 220-240 us of CPU per POST on the loop thread, the push client
about 80 us (one SET in flight per stream makes that cost the stream's throughput).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import json
import logging
import random
import secrets
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import bindparam, exists, func, or_, select, update
from sqlalchemy.exc import OperationalError

from ssf import uris
from transmitter.db import DELIVERED, PENDING, REJECTED, begin, outbox_t, relax_commit, stream_t
from transmitter.offload import Offload
from transmitter.outbox import driver_query, placeholder
from transmitter.push_client import PushClient, PushTransportError
from transmitter.service import Transmitter
from transmitter.ssrf import GuardedResolver

__all__ = ["DeliveryWorker"]

log = logging.getLogger("transmitter.delivery")

#: How long the deliveries of a drained stream wait to be recorded by the shared flush. A
#: stream woken again before that records them in its next read of the outbox (one transaction
#: for both), so a steady trickle of SETs costs one transaction each, not two; a crash in the
#: meantime re-sends them (receivers dedupe by ``jti``, RFC 8935 §2).
_FLUSH_DELAY = 0.05


@dataclass(slots=True)
class _Batch:
    url: str
    header: str | None
    status: str
    rows: list[Any]


@dataclass(slots=True)
class _Outcome:
    delivered: bool
    retry_after: float | None = None
    reject: dict[str, Any] | None = None
    error: str = ""


class DeliveryWorker:
    def __init__(self, tx: Transmitter, offload: Offload | None = None) -> None:
        """``offload``: the application's database threads (its own when not given)."""
        self.tx = tx
        self._own_offload = offload is None
        self._db = offload if offload is not None else Offload(max_workers=8, name="ssf-push-db")
        self.s = tx.settings
        self.owner = self.s.instance_id or "i_" + secrets.token_hex(6)
        self.active: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._client: PushClient | None = None
        self._sem = asyncio.Semaphore(self.s.push_concurrency)
        self._stream_wake: dict[str, asyncio.Event] = {}
        self._renewed: dict[str, float] = {}
        #: Delivered SET ids of drained streams, waiting for the shared flush.
        self._unflushed: dict[str, list[int]] = {}
        self._flushing: dict[str, list[int]] = {}
        self._flush_wake = asyncio.Event()
        self._poll_ids: frozenset[str] = frozenset()
        #: How long an idle stream keeps its lease waiting for the next SET (saves a claim).
        self._linger = min(2.0, self.s.lease_seconds / 3)
        #: A lease is renewed once a third of it has run out.
        self._renew_after = self.s.lease_seconds / 3
        self._build_statements()

    def _build_statements(self) -> None:
        sid: Any = bindparam("sid")
        cols = (
            outbox_t.c.id,
            outbox_t.c.token,
            outbox_t.c.control,
            outbox_t.c.attempts,
            outbox_t.c.first_failure_at,
        )
        order = (outbox_t.c.priority.desc(), outbox_t.c.id)
        ranked = (
            select(
                *cols,
                outbox_t.c.stream_id,
                stream_t.c.status,
                stream_t.c.endpoint_url,
                stream_t.c.auth_header,
                func.row_number().over(partition_by=outbox_t.c.stream_id, order_by=order).label("rn"),
            )
            .select_from(outbox_t.join(stream_t, outbox_t.c.stream_id == stream_t.c.stream_id))
            .where(
                outbox_t.c.stream_id.in_(bindparam("ids", expanding=True)),
                outbox_t.c.state == PENDING,
                stream_t.c.lease_owner == self.owner,
                stream_t.c.method == uris.PUSH,
                stream_t.c.endpoint_url.is_not(None),
                or_(outbox_t.c.control.is_(True), stream_t.c.status == "enabled"),
            )
            .subquery()
        )
        self._q_first = (
            select(ranked).where(ranked.c.rn <= self.s.push_batch).order_by(ranked.c.stream_id, ranked.c.rn)
        )
        self._q_renew = (
            update(stream_t)
            .where(stream_t.c.stream_id == sid, stream_t.c.lease_owner == self.owner)
            .values(lease_until=bindparam("until"))
        )
        work = exists().where(
            outbox_t.c.stream_id == stream_t.c.stream_id,
            outbox_t.c.state == PENDING,
            or_(outbox_t.c.control.is_(True), stream_t.c.status == "enabled"),
        )
        claim = (
            select(stream_t.c.stream_id)
            .where(
                stream_t.c.method == uris.PUSH,
                stream_t.c.lease_until < bindparam("now"),
                stream_t.c.stream_id.not_in(bindparam("busy", expanding=True)),
                work,
            )
            .limit(1000)
        )
        if self.s.is_postgres:
            claim = claim.with_for_update(skip_locked=True, of=stream_t)
        self._q_claim = claim
        self._q_poll_ids = select(stream_t.c.stream_id).where(stream_t.c.method == uris.POLL)

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        self._client = PushClient(
            # The SSRF guard again at connect time, on the addresses actually dialled (a DNS
            # answer that changed since the URL was checked is caught: rebinding).
            GuardedResolver(self.tx.guard),
            timeout=self.s.push_timeout,
            # At most push_concurrency requests run at once (the semaphore), so at most that
            # many connections are open, as with aiohttp's connector limit.
            max_idle_per_host=self.s.push_concurrency,
        )
        self.tx.notifier.add_listener(self._on_new_sets)
        self._tasks = [
            asyncio.create_task(self._claim_loop()),
            asyncio.create_task(self._maintenance_loop()),
            asyncio.create_task(self._renew_loop()),
            asyncio.create_task(self._flush_loop()),
        ]

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for t in [*self._tasks, *self.active.values()]:
            t.cancel()
        for t in [*self._tasks, *self.active.values()]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        leftover = [i for group in self._unflushed.values() for i in group]
        self._unflushed.clear()
        if leftover:
            with contextlib.suppress(Exception):
                await self._db(self._mark_delivered, leftover)
        if self._client is not None:
            await self._client.close()
        # Leave nothing leased: another instance (or our restart) may continue at once.
        with contextlib.suppress(Exception):
            await self._db(self._release_all)
        if self._own_offload:
            self._db.close()

    def wake(self) -> None:
        self._wake.set()

    def _on_new_sets(self, ids: frozenset[str]) -> None:
        """A stream we are pushing gets its own wake-up; poll streams need nothing; anything
        else (a push stream not leased yet, or unknown) wakes the claim loop."""
        if "*" in ids:
            for stream_ev in self._stream_wake.values():
                stream_ev.set()
            self._wake.set()
            return
        claim = False
        for sid in ids:
            ev = self._stream_wake.get(sid)
            if ev is not None:
                ev.set()
            elif sid not in self._poll_ids:
                claim = True
        if claim:
            self._wake.set()

    async def _maintenance_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.s.maintenance_interval)
            try:
                await self._db(self.tx.maintain)
            except Exception as exc:  # keep the loop alive; the next tick retries
                _log_failure("maintenance failed", exc)

    async def _renew_loop(self) -> None:
        """Keep the leases of every stream being pushed, whatever its loop waits for: a slow
        receiver, or a free connection slot (``push_concurrency``) while other streams' pushes
        hold them all. A lease renewed only by its stream's own loop ran out during such a wait
        and another instance pushed the same SETs. One statement for all of them."""
        while not self._stopping:
            await asyncio.sleep(self._renew_after)
            if not self.active:
                continue
            try:
                await self._db(self._renew_all, list(self.active))
            except Exception as exc:  # the streams' own renewals remain; the next tick retries
                _log_failure("renewing push leases failed", exc)

    def _renew_all(self, ids: list[str]) -> None:
        now = time.time()
        with begin(self.tx.engine) as conn:
            conn.execute(
                update(stream_t)
                .where(stream_t.c.stream_id.in_(ids), stream_t.c.lease_owner == self.owner)
                .values(lease_until=now + self.s.lease_seconds)
            )

    async def _claim_loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                claimed = await self._db(self._claim, frozenset(self.active))
            except Exception as exc:
                _log_failure("claiming push work failed", exc)
                claimed = {}
            for sid, first in claimed.items():
                self.active[sid] = asyncio.create_task(self._stream_loop(sid, first))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.s.worker_poll_interval)

    # --- database side (worker threads) --------------------------------------------------
    def _claim(self, busy: frozenset[str]) -> dict[str, _Batch | None]:
        """Lease streams with deliverable SETs and take each one's first batch, all in one
        transaction (a fan-out to many streams costs one round of statements, not one each)."""
        now = time.time()
        with begin(self.tx.engine) as conn:
            self._poll_ids = frozenset(r[0] for r in conn.execute(self._q_poll_ids))
            ids = [r[0] for r in conn.execute(self._q_claim, {"now": now, "busy": list(busy) or [""]})]
            if not ids:
                return {}
            conn.execute(
                update(stream_t)
                .where(stream_t.c.stream_id.in_(ids), stream_t.c.lease_until < now)
                .values(lease_owner=self.owner, lease_until=now + self.s.lease_seconds)
            )
            mine = [
                r[0]
                for r in conn.execute(
                    select(stream_t.c.stream_id).where(
                        stream_t.c.stream_id.in_(ids), stream_t.c.lease_owner == self.owner
                    )
                )
            ]
            rows = list(conn.execute(self._q_first, {"ids": mine})) if mine else []
        batches: dict[str, _Batch | None] = dict.fromkeys(mine)
        for row in rows:
            batch = batches.get(row.stream_id)
            if batch is None:
                header = self.tx.box.decrypt(row.auth_header) if row.auth_header is not None else None
                batch = batches[row.stream_id] = _Batch(row.endpoint_url, header, row.status, [])
            batch.rows.append(row)
        for sid in batches:
            self._renewed[sid] = now
        return batches

    def _fetch(self, sid: str, delivered: list[int]) -> _Batch | None:
        """Record the previous batch's deliveries, renew the lease when a third of it has run
        out, and take the next batch with its stream's settings: one transaction, two or three
        statements per batch."""
        now = time.time()
        renew = now - self._renewed.get(sid, 0.0) > self._renew_after
        with begin(self.tx.engine) as conn:
            if delivered:
                if not renew:  # a lease renewal must be durable: leases keep instances apart
                    relax_commit(conn)
                _record_delivered(conn, delivered, now)
            if renew:
                renewed = conn.execute(self._q_renew, {"sid": sid, "until": now + self.s.lease_seconds})
                if not renewed.rowcount:
                    return None
                self._renewed[sid] = now
            mark = placeholder(conn)
            params = [sid, PENDING, self.owner, uris.PUSH, True, self.s.push_batch]
            rows = [_Row(*r) for r in driver_query(conn, _BATCH_SQL[mark], params)]
        if not rows:
            return None
        head = rows[0]
        header = self.tx.box.decrypt(head.auth_header) if head.auth_header is not None else None
        return _Batch(head.endpoint_url, header, head.status, rows)

    def _keep_lease(self, sid: str, delivered: list[int]) -> bool:
        """Mid-batch: record what was delivered so far and renew the lease; False when it is
        no longer ours (then another instance may be pushing the stream: stop)."""
        now = time.time()
        with begin(self.tx.engine) as conn:
            if delivered:
                _record_delivered(conn, delivered, now)
            renewed = conn.execute(self._q_renew, {"sid": sid, "until": now + self.s.lease_seconds})
        if not renewed.rowcount:
            return False
        self._renewed[sid] = now
        return True

    def _mark_delivered(self, ids: list[int]) -> None:
        if not ids:
            return
        with begin(self.tx.engine) as conn:
            relax_commit(conn)
            _record_delivered(conn, ids, time.time())

    def _mark_rejected(self, row_id: int, detail: dict[str, Any]) -> None:
        with begin(self.tx.engine) as conn:
            conn.execute(
                update(outbox_t)
                .where(outbox_t.c.id == row_id)
                .values(
                    state=REJECTED,
                    done_at=time.time(),
                    last_error=json.dumps(detail),
                    attempts=outbox_t.c.attempts + 1,
                )
            )

    def _record_failure(self, sid: str, row: Any, status: str, outcome: _Outcome) -> None:
        """Schedule the retry (the stream's lease ends at the retry time) or pause the stream.

        ``status`` is the one read with the batch, before the push: the pause is decided on the
        stream as it is now, in this transaction (a receiver may have disabled or re-enabled it
        meanwhile). Rows are taken outbox row, then stream row, as everywhere else.
        """
        now = time.time()
        attempts = row.attempts + 1
        if outcome.retry_after is not None:
            # At least what the receiver asked for (RFC 9110 §10.2.3), within our own bound.
            delay = max(self.s.retry_base_seconds, min(outcome.retry_after, self.s.retry_after_max_seconds))
        else:
            delay = min(self.s.retry_max_seconds, self.s.retry_base_seconds * 2 ** min(attempts - 1, 30))
            delay *= random.uniform(0.5, 1.0)  # jitter
        paused = False
        with begin(self.tx.engine) as conn:
            held = conn.execute(
                select(outbox_t.c.first_failure_at).where(outbox_t.c.id == row.id).with_for_update()
            ).first()
            current = conn.execute(
                select(stream_t.c.status, stream_t.c.failing_since)
                .where(stream_t.c.stream_id == sid)
                .with_for_update()
            ).first()
            if held is None or current is None:
                return  # the stream (and its SETs) were deleted meanwhile
            # The cap counts from this SET's first failure, unless the stream was (re-)enabled
            # since, which clears failing_since: then the receiver gets a full window again.
            fresh = current.failing_since is None or held.first_failure_at is None
            first = now if fresh else held.first_failure_at
            conn.execute(
                update(outbox_t)
                .where(outbox_t.c.id == row.id)
                .values(
                    attempts=attempts,
                    first_failure_at=first,
                    last_error=outcome.error[:500],
                    next_attempt_at=now + delay,
                )
            )
            conn.execute(
                update(stream_t)
                .where(stream_t.c.stream_id == sid, stream_t.c.lease_owner == self.owner)
                .values(lease_owner=None, lease_until=now + delay, failing_since=first)
            )
            # Any SET counts, a control one too: a stream-updated notice failing at the head of
            # an enabled stream would otherwise hold it enabled, and failing, for ever.
            if current.status == "enabled" and now - first >= self.s.retry_cap_seconds:
                reason = f"push delivery failing since {int(first)}: {outcome.error[:200]}"
                stream = self.tx._load(conn, sid, None)
                self.tx._apply_status(conn, stream, "paused", reason, notify_receiver=True)
                paused = True
        if paused:
            self.tx._notify([sid])

    def _release(self, sid: str, until: float = 0.0) -> None:
        with begin(self.tx.engine) as conn:
            conn.execute(
                update(stream_t)
                .where(stream_t.c.stream_id == sid, stream_t.c.lease_owner == self.owner)
                .values(lease_owner=None, lease_until=until)
            )

    def _release_all(self) -> None:
        with begin(self.tx.engine) as conn:
            conn.execute(
                update(stream_t)
                .where(stream_t.c.lease_owner == self.owner)
                .values(lease_owner=None, lease_until=0)
            )

    # --- pushing ------------------------------------------------------------------------
    async def _stream_loop(self, sid: str, first: _Batch | None = None) -> None:
        release = True
        resume = 0.0  # when the released stream may be claimed again
        wake = self._stream_wake[sid] = asyncio.Event()
        delivered: list[int] = []
        try:
            while not self._stopping:
                wake.clear()  # before fetching: a SET committed after this wakes us
                batch: _Batch | None
                if first is not None:
                    batch, first = first, None
                else:
                    delivered = self._unflushed.pop(sid, []) + self._flushing.get(sid, []) + delivered
                    batch = await self._db(self._fetch, sid, delivered)
                    delivered = []
                if batch is None:
                    if not await self._idle(wake):
                        break
                    continue
                problem = await self._guard(batch.url)
                failed = lost = False
                renew_at = self._renewed.get(sid, 0.0) + self._renew_after
                for row in batch.rows:
                    if time.time() > renew_at:
                        # A slow receiver makes a batch outlast the lease: renewed only between
                        # batches, it ran out and another instance pushed the same SETs again.
                        delivered = self._unflushed.pop(sid, []) + delivered
                        if not await self._db(self._keep_lease, sid, delivered):
                            lost = True
                            break
                        delivered = []
                        renew_at = self._renewed[sid] + self._renew_after
                    if problem:
                        outcome = _Outcome(False, error=f"endpoint refused by the SSRF guard: {problem}")
                    else:
                        outcome = await self._push(batch.url, batch.header, row.token)
                    if outcome.delivered:
                        delivered.append(row.id)
                        continue
                    delivered = self._unflushed.pop(sid, []) + delivered
                    await self._db(self._mark_delivered, delivered)
                    delivered = []
                    if outcome.reject is not None:
                        await self._db(self._mark_rejected, row.id, outcome.reject)
                        continue
                    await self._db(self._record_failure, sid, row, batch.status, outcome)
                    failed = True
                    break
                if failed or lost:
                    release = False  # the lease ends at the retry time, or is not ours
                    break
                if len(batch.rows) < self.s.push_batch:
                    # Drained: hand the deliveries to the shared flush (one transaction for many
                    # streams) and wait for the next SET without another round trip.
                    self._unflushed.setdefault(sid, []).extend(delivered)
                    delivered = []
                    self._flush_wake.set()
                    if not await self._idle(wake):
                        break
        except asyncio.CancelledError:
            release = False
            raise
        except Exception as exc:
            _log_failure(f"push loop for stream {sid} failed", exc)
            # Not claimable at once: whatever failed would fail again, in a loop as fast as
            # the claims (a database outage, a bug), each time with its log line.
            resume = time.time() + self.s.worker_poll_interval
        finally:
            self.active.pop(sid, None)
            self._stream_wake.pop(sid, None)
            self._renewed.pop(sid, None)
            delivered = self._unflushed.pop(sid, []) + delivered
            with contextlib.suppress(Exception):
                if delivered:
                    await self._db(self._mark_delivered, delivered)
                if release:
                    await self._db(self._release, sid, resume)
            self._wake.set()

    async def _idle(self, wake: asyncio.Event) -> bool:
        """Keep the lease a moment for the next SET; False when none came."""
        try:
            await asyncio.wait_for(wake.wait(), self._linger)
            return True
        except TimeoutError:
            return False

    async def _guard(self, url: str) -> str | None:
        hit = self.tx.guard.cached(url)
        if hit is not None:
            return hit[0]
        return await asyncio.to_thread(self.tx.guard.allowed, url)

    async def _flush_loop(self) -> None:
        """Record deliveries of drained streams together, shortly after they happen."""
        while not self._stopping:
            await self._flush_wake.wait()
            self._flush_wake.clear()
            await asyncio.sleep(_FLUSH_DELAY)
            taken, self._unflushed = self._unflushed, {}
            ids = [i for group in taken.values() for i in group]
            if not ids:
                continue
            # Until this commits, a stream that fetches again marks these ids itself (the
            # update is idempotent), so a delivered SET is never selected as pending again.
            for sid, group in taken.items():
                self._flushing.setdefault(sid, []).extend(group)
            try:
                await self._db(self._mark_delivered, ids)
            except Exception as exc:
                _log_failure("recording deliveries failed", exc)
            finally:
                for sid in taken:
                    self._flushing.pop(sid, None)

    async def _push(self, url: str, header: str | None, token: str) -> _Outcome:
        assert self._client is not None
        headers = _HEADERS if header is None else {**_HEADERS, "Authorization": header}
        try:
            # Redirects are never followed: a 3xx could point anywhere (SSRF); it is a failure.
            async with self._sem:
                answer = await self._client.post(url, token.encode(), headers, _MAX_ANSWER)
        except (PushTransportError, TimeoutError, OSError) as exc:
            return _Outcome(False, error=f"transport error: {type(exc).__name__}: {exc}"[:500])
        body, status, retry_after = answer.body, answer.status, answer.retry_after
        if 200 <= status < 300:
            return _Outcome(True)
        if status == 400:
            detail: dict[str, Any] = {"status": 400}
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                data = json.loads(body)
                if isinstance(data, dict):
                    detail.update({k: str(v)[:500] for k, v in data.items() if k in ("err", "description")})
            return _Outcome(False, reject=detail)
        wait = _retry_after(retry_after) if status in (429, 503) else None
        return _Outcome(False, retry_after=wait, error=f"HTTP {status}")


class _Row(NamedTuple):
    """An outbox row to push, with its stream's delivery settings."""

    id: int
    token: str
    control: bool
    attempts: int
    first_failure_at: float | None
    status: str
    endpoint_url: str
    auth_header: bytes | None


# The per-batch read and the delivery bookkeeping run for every few SETs pushed: on the
# driver's cursor, as the publish and poll paths do (see transmitter.outbox.route).
_BATCH_SQL = {
    m: (
        "SELECT o.id, o.token, o.control, o.attempts, o.first_failure_at, "
        "s.status, s.endpoint_url, s.auth_header "
        f"FROM {outbox_t.name} o JOIN {stream_t.name} s ON o.stream_id = s.stream_id "
        f"WHERE o.stream_id = {m} AND o.state = {m} AND s.lease_owner = {m} AND s.method = {m} "
        f"AND s.endpoint_url IS NOT NULL AND (o.control = {m} OR s.status = 'enabled') "
        f"ORDER BY o.priority DESC, o.id LIMIT {m}"
    )
    for m in ("?", "%s")  # sqlite3, psycopg
}


@functools.lru_cache(maxsize=32)
def _delivered_sql(mark: str, n: int) -> str:
    ids = ", ".join([mark] * n)
    return (
        f"UPDATE {outbox_t.name} SET state = {mark}, done_at = {mark}, last_error = NULL "
        f"WHERE id IN ({ids}) AND state = {mark}"
    )


#: PostgreSQL: the rows taken in id order (see outbox.in_lock_order), every list in one
#: statement text.
_PG_DELIVERED_SQL = (
    f"UPDATE {outbox_t.name} SET state = %s, done_at = %s, last_error = NULL WHERE id IN "
    f"(SELECT id FROM {outbox_t.name} WHERE id = ANY(%s) AND state = %s ORDER BY id FOR UPDATE)"
)


def _record_delivered(conn: Any, ids: list[int], now: float) -> None:
    mark = placeholder(conn)
    if mark == "%s":
        driver_query(conn, _PG_DELIVERED_SQL, [DELIVERED, now, ids, PENDING], rows=False)
        return
    for i in range(0, len(ids), 512):
        chunk = ids[i : i + 512]
        # Padded to a power of two with its last id (a repeat changes nothing): a few
        # statement texts, each prepared once.
        size = 1 << (len(chunk) - 1).bit_length()
        chunk += [chunk[-1]] * (size - len(chunk))
        driver_query(conn, _delivered_sql(mark, size), [DELIVERED, now, *chunk, PENDING], rows=False)


def _log_failure(what: str, exc: Exception) -> None:
    """An unreachable database (a restart, an outage) is expected and retried: one line with
    the reason, not a traceback every tick. Anything else keeps its traceback."""
    if isinstance(exc, OperationalError):
        reason = str(exc.orig if exc.orig is not None else exc).strip().splitlines() or [type(exc).__name__]
        log.warning("%s: the database is unavailable (%s); retrying", what, reason[0])
    else:
        log.error(what, exc_info=exc)


#: Enough for any RFC 8935 error body; a receiver cannot make us hold more (or wait for it).
_MAX_ANSWER = 16 * 1024
_HEADERS = {
    "Content-Type": uris.SET_MEDIA_TYPE,
    "Accept": "application/json",
    "User-Agent": "ssf-transmitter",
}


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    return None
