"""Operating the transmitter: health and readiness, Prometheus metrics, delivery log lines.

- ``GET /healthz``: liveness, 200 while the process serves requests.
- ``GET /readyz``: readiness, 200 when the database answers and the push worker runs, else 503
  with the failing check named.
- ``GET /metrics``: Prometheus text (a registry per application, so several apps in one
  process do not mix their figures).

Counters are per process: ``ssf_transmitter_sets_published_total`` counts SETs written to the
outbox by this process (published events, verification and stream-updated notices);
``..._delivered_total`` push answers 2xx and poll acknowledgements; ``..._failed_total`` push
attempts that did not deliver (``reason="rejected"``: the receiver refused the SET, push 400 or
poll ``setErrs``; ``reason="error"``: transport error, timeout or another status, retried);
``..._retried_total`` retries scheduled. The backlog gauges are read from the database at
scrape time, so they are exact across instances; ``ssf_transmitter_database_up`` is 0 when
that read failed (the database is away: the backlog gauges are absent from that scrape).

Every push attempt and every poll acknowledgement or refusal logs one line (``poll served``
lines at debug level) on the ``transmitter.delivery`` logger with ``stream_id``, ``jti``,
``txn`` and ``event_type``; the push ``authorization_header`` is never passed to a logger.
"""

from __future__ import annotations

import base64
import contextvars
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import event, func, select, text
from sqlalchemy.sql.dml import Insert
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ssf.poll import PollRequest
from ssfcli.logs import dropped_records
from transmitter.auth import Principal
from transmitter.db import PENDING, begin, outbox_t, stream_t
from transmitter.delivery import DeliveryWorker, _Outcome
from transmitter.offload import Offload
from transmitter.service import Transmitter

__all__ = ["Observability", "ObservedDeliveryWorker", "install_ops", "set_claims"]

log = logging.getLogger("transmitter.delivery")
_STREAM: contextvars.ContextVar[str] = contextvars.ContextVar("ssf_stream", default="")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def set_claims(token: str) -> dict[str, Any]:
    """The claims of a compact SET, unverified (for logs and the console only)."""
    try:
        seg = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _event_type(claims: Mapping[str, Any]) -> str | None:
    events = claims.get("events")
    if isinstance(events, dict) and events:
        return str(next(iter(events)))
    return None


class _Backlog(Collector):
    """Backlog per stream, its oldest undelivered SET's age, streams by status, and whether
    the database answered (``ssf_transmitter_database_up``)."""

    def __init__(self, tx: Transmitter) -> None:
        self.tx = tx

    def collect(self) -> Iterator[Metric]:
        backlog = GaugeMetricFamily(
            "ssf_transmitter_backlog", "SETs waiting for delivery, per stream", labels=["stream_id"]
        )
        age = GaugeMetricFamily(
            "ssf_transmitter_oldest_undelivered_age_seconds",
            "Age of the oldest SET waiting for delivery, per stream",
            labels=["stream_id"],
        )
        streams = GaugeMetricFamily("ssf_transmitter_streams", "Streams by status", labels=["status"])
        now = time.time()
        up = GaugeMetricFamily(
            "ssf_transmitter_database_up", "1 when the database answered this scrape's query, else 0"
        )
        try:
            with begin(self.tx.engine) as conn:
                rows = conn.execute(
                    select(outbox_t.c.stream_id, func.count(), func.min(outbox_t.c.created_at))
                    .where(outbox_t.c.state == PENDING)
                    .group_by(outbox_t.c.stream_id)
                ).all()
                by_status = conn.execute(
                    select(stream_t.c.status, func.count()).group_by(stream_t.c.status)
                ).all()
        except Exception:  # a scrape must not fail because the database is down: it says so
            up.add_metric([], 0)
            yield up
        else:
            up.add_metric([], 1)
            yield up
            for sid, count, oldest in rows:
                backlog.add_metric([sid], int(count))
                age.add_metric([sid], max(0.0, now - float(oldest or now)))
            for status in ("enabled", "paused", "disabled"):
                streams.add_metric([status], next((int(n) for s, n in by_status if s == status), 0))
            yield backlog
            yield age
            yield streams
        dropped = CounterMetricFamily(
            "ssf_log_records_dropped", "Log records dropped because stderr was not read fast enough"
        )
        dropped.add_metric([], float(dropped_records()))
        yield dropped


class Observability:
    """The metrics of one transmitter application."""

    def __init__(self, tx: Transmitter) -> None:
        self.tx = tx
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.published = Counter(
            "ssf_transmitter_sets_published",
            "SETs written to the outbox",
            ["stream_id", "event_type"],
            registry=r,
        )
        self.delivered = Counter(
            "ssf_transmitter_sets_delivered",
            "SETs delivered (push 2xx, poll acknowledged)",
            ["stream_id", "method"],
            registry=r,
        )
        self.failed = Counter(
            "ssf_transmitter_sets_failed",
            "Delivery attempts that did not deliver (rejected: refused by the receiver; error: retried)",
            ["stream_id", "method", "reason"],
            registry=r,
        )
        self.retried = Counter(
            "ssf_transmitter_sets_retried", "Push retries scheduled", ["stream_id"], registry=r
        )
        self.push_seconds = Histogram(
            "ssf_transmitter_push_duration_seconds",
            "Push request latency (one SET per POST)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.poll_seconds = Histogram(
            "ssf_transmitter_poll_request_duration_seconds",
            "Poll request latency as the receiver sees it (long-poll waits included)",
            ["status"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.poll_query_seconds = Histogram(
            "ssf_transmitter_poll_query_duration_seconds",
            "Time to apply acks and select SETs for one poll (database work)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r,
        )
        r.register(_Backlog(tx))
        #: jti -> txn of SETs served over poll, so the acknowledgement line can name the txn.
        self._served: OrderedDict[str, tuple[Any, Any]] = OrderedDict()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # --- hooks ------------------------------------------------------------------------
    def on_execute(
        self, _conn: Any, clause: Any, multiparams: Any, params: Any, _opts: Any, _result: Any
    ) -> None:
        """Counts rows inserted into the outbox (any code path of this process)."""
        if not isinstance(clause, Insert) or clause.table is not outbox_t:
            return
        rows = multiparams if multiparams else [params]
        for row in rows:
            if isinstance(row, Mapping):
                self.published.labels(str(row.get("stream_id")), str(row.get("event_type"))).inc()

    def observe_poll(
        self,
        stream_id: str,
        req: PollRequest,
        sets: Mapping[str, str],
        elapsed: float,
    ) -> None:
        self.poll_query_seconds.observe(elapsed)
        log_on = log.isEnabledFor(logging.INFO)
        if log_on:
            # Remember what was served so the acknowledgement line (the delivery) names it.
            debug = log.isEnabledFor(logging.DEBUG)
            for jti, token in sets.items():
                claims = set_claims(token)
                served = (claims.get("txn"), _event_type(claims))
                self._served[jti] = served
                if debug:
                    log.debug("poll served", extra=_poll_fields(stream_id, jti, served))
            while len(self._served) > 10_000:
                self._served.popitem(last=False)
        for jti in req.ack or []:
            self.delivered.labels(stream_id, "poll").inc()
            if log_on:
                log.info("poll acknowledged", extra=_poll_fields(stream_id, jti, self._served.pop(jti, None)))
        for jti, err in (req.set_errs or {}).items():
            self.failed.labels(stream_id, "poll", "rejected").inc()
            if log_on:
                fields = _poll_fields(stream_id, jti, self._served.pop(jti, None))
                log.warning("poll refused", extra={**fields, "err": err.err})


def _poll_fields(stream_id: str, jti: str, served: tuple[Any, Any] | None) -> dict[str, Any]:
    txn, event_type = served or (None, None)
    return {"stream_id": stream_id, "jti": jti, "txn": txn, "event_type": event_type, "method": "poll"}


class ObservedDeliveryWorker(DeliveryWorker):
    """The push worker, with a metric and a log line for every attempt."""

    def __init__(self, tx: Transmitter, obs: Observability, offload: Offload | None = None) -> None:
        super().__init__(tx, offload)
        self.obs = obs

    async def _stream_loop(self, sid: str, first: Any = None) -> None:
        _STREAM.set(sid)  # the task's own context: _push below reads it
        await super()._stream_loop(sid, first)

    async def _push(self, url: str, header: str | None, token: str) -> _Outcome:
        started = time.perf_counter()
        outcome = await super()._push(url, header, token)
        elapsed = time.perf_counter() - started
        sid = _STREAM.get()
        obs = self.obs
        obs.push_seconds.observe(elapsed)
        if outcome.delivered:
            obs.delivered.labels(sid, "push").inc()
            level, msg = logging.INFO, "push delivered"
        elif outcome.reject is not None:
            obs.failed.labels(sid, "push", "rejected").inc()
            level, msg = logging.WARNING, "push refused"
        else:
            obs.failed.labels(sid, "push", "error").inc()
            level, msg = logging.WARNING, "push failed"
        if log.isEnabledFor(level):
            claims = set_claims(token)
            extra: dict[str, Any] = {
                "stream_id": sid,
                "jti": claims.get("jti"),
                "txn": claims.get("txn"),
                "event_type": _event_type(claims),
                "method": "push",
                "endpoint_url": url,
                "duration_ms": round(elapsed * 1000, 2),
            }
            if outcome.reject is not None:
                extra["err"] = outcome.reject.get("err")
                extra["status"] = outcome.reject.get("status")
            elif not outcome.delivered:
                extra["error"] = outcome.error
                if outcome.retry_after is not None:
                    extra["retry_after"] = outcome.retry_after
            log.log(level, msg, extra=extra)
        return outcome

    def _record_failure(self, sid: str, row: Any, status: str, outcome: _Outcome) -> None:
        self.obs.retried.labels(sid).inc()
        super()._record_failure(sid, row, status, outcome)


class _PollTimer:
    """ASGI middleware timing poll requests (a path prefix check for everything else)."""

    def __init__(self, app: ASGIApp, prefix: str, obs: Observability) -> None:
        self.app = app
        self.prefix = prefix
        self.obs = obs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.obs.poll_seconds.labels(str(status)).observe(time.perf_counter() - started)


def _instrument_poll(tx: Transmitter, obs: Observability) -> None:
    original: Callable[[Principal, str, PollRequest], tuple[dict[str, str], bool]] = tx.poll_once

    def poll_once(principal: Principal, stream_id: str, req: PollRequest) -> tuple[dict[str, str], bool]:
        started = time.perf_counter()
        sets, more = original(principal, stream_id, req)
        obs.observe_poll(stream_id, req, sets, time.perf_counter() - started)
        return sets, more

    # The HTTP layer looks ``tx.poll_once`` up on each call: the instance attribute wins.
    setattr(tx, "poll_once", poll_once)  # noqa: B010


def _database_ok(tx: Transmitter) -> None:
    with tx.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def install_ops(app: FastAPI, tx: Transmitter) -> Observability:
    """Add ``/healthz``, ``/readyz`` and ``/metrics`` to ``app`` and instrument ``tx``."""
    obs = Observability(tx)
    event.listen(tx.engine, "after_execute", obs.on_execute)
    _instrument_poll(tx, obs)
    from urllib.parse import urlsplit

    prefix = urlsplit(tx.issuer).path.rstrip("/") + "/ssf/poll/"
    app.add_middleware(_PollTimer, prefix=prefix, obs=obs)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            await run_in_threadpool(_database_ok, tx)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"error: {type(exc).__name__}"
        worker = getattr(request.app.state, "worker", None)
        tasks = getattr(worker, "_tasks", None)
        running = bool(tasks) and not any(t.done() for t in tasks or [])
        checks["push_worker"] = "ok" if running else "not running"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
            headers={"Cache-Control": "no-store"},
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body = await run_in_threadpool(obs.render)
        return Response(body, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})

    app.state.observability = obs
    return obs
