"""Operating the receiver: liveness / readiness, extra metrics, SET log lines.

- ``GET /healthz``: liveness, 200 while the process serves requests.
- ``GET /readyz``: 200 when the transmitter's keys are loaded (SETs can be verified) and the
  store takes writes; 503 naming the failing check otherwise. A receiver with no transmitter
  configured is ready (it only enforces stored state).
- Metrics appended to ``/metrics``: ``ssf_receiver_set_validation_failures_total{err}`` (SETs
  refused, by SSF ``err`` code) and ``ssf_receiver_middleware_decisions_total{decision,error}``
  (``allow``, ``deny``, ``step_up`` for RFC 9470 challenges, ``unavailable``).
- Every SET received (push or poll) logs one line on ``receiver.sets`` with ``stream_id``,
  ``jti``, ``txn``, ``event_type`` and the outcome; the push credential never reaches a log.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from receiver.core import Receiver
from ssf import logs
from ssf.errors import SETError

__all__ = ["ReceiverOps", "extra_metrics", "install_ops"]

log = logging.getLogger("receiver.sets")

_STEP_UP = "insufficient_user_authentication"


class ReceiverOps:
    """The receiver's extra figures: refused SETs by ``err`` (push and poll, every check from
    the signature on) and the middleware's decisions (from the receiver's own counters)."""

    def __init__(self, rcv: Receiver) -> None:
        self.rcv = rcv
        self.failures: Counter[str] = Counter()

    def metrics_text(self) -> str:
        return extra_metrics(self.rcv, self.failures)


def extra_metrics(rcv: Receiver, failures: Mapping[str, int]) -> str:
    """Prometheus text for validation failures by ``err`` and middleware decisions."""
    lines = ["# TYPE ssf_receiver_set_validation_failures_total counter"]
    for err, value in sorted(failures.items()):
        lines.append(f'ssf_receiver_set_validation_failures_total{{err="{err}"}} {value}')
    lines.append("# TYPE ssf_receiver_middleware_decisions_total counter")
    for name, value in sorted(rcv.stats.items()):
        if name == "request_authorized":
            lines.append(f'ssf_receiver_middleware_decisions_total{{decision="allow",error=""}} {value}')
        elif name.startswith("request_refused:"):
            error = name[len("request_refused:") :]
            decision = (
                "step_up"
                if error == _STEP_UP
                else "unavailable"
                if error == "temporarily_unavailable"
                else "deny"
            )
            lines.append(
                f'ssf_receiver_middleware_decisions_total{{decision="{decision}",error="{error}"}} {value}'
            )
    lines.append("# TYPE ssf_log_records_dropped_total counter")
    lines.append(f"ssf_log_records_dropped_total {logs.dropped_records()}")
    return "\n".join(lines) + "\n"


def _claims(token: object) -> dict[str, Any]:
    """Unverified claims, for a log line only (a refused SET may hold anything)."""
    try:
        text = token.decode() if isinstance(token, bytes) else str(token)
        seg = text.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))
    except (IndexError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _fields(rcv: Receiver, token: object, method: str) -> dict[str, Any]:
    c = _claims(token)
    events = c.get("events")
    event_type = next(iter(events), None) if isinstance(events, dict) and events else None
    return {
        "stream_id": rcv.stream_id,
        "jti": str(c.get("jti"))[:200] if c.get("jti") is not None else None,
        "txn": str(c.get("txn"))[:200] if c.get("txn") is not None else None,
        "event_type": str(event_type)[:300] if event_type is not None else None,
        "method": method,
    }


def _instrument(rcv: Receiver, failures: Counter[str]) -> None:
    """Count and log around ``receive`` (push) and ``receive_batch`` (poll); the push endpoint
    and the poller look these up on the instance at each call."""
    receive, receive_batch = rcv.receive, rcv.receive_batch

    async def logged_receive(token: str | bytes) -> bool:
        started = time.perf_counter()
        try:
            new = await receive(token)
        except SETError as exc:
            failures[exc.err] += 1
            if log.isEnabledFor(logging.WARNING):
                log.warning("set refused", extra={**_fields(rcv, token, "push"), "err": exc.err})
            raise
        if log.isEnabledFor(logging.INFO):
            extra = _fields(rcv, token, "push")
            extra["duration_ms"] = round((time.perf_counter() - started) * 1000, 2)
            log.info("set accepted" if new else "set duplicate", extra=extra)
        return new

    async def logged_batch(sets: Mapping[str, object]) -> tuple[list[str], dict[str, dict[str, str]]]:
        acks, errs = await receive_batch(sets)
        for err in errs.values():
            failures[str(err.get("err"))] += 1
        if log.isEnabledFor(logging.INFO):
            for jti in acks:
                log.info("set accepted", extra=_fields(rcv, sets[jti], "poll"))
            for jti, err in errs.items():
                fields = _fields(rcv, sets.get(jti), "poll")
                fields["jti"] = fields["jti"] or str(jti)[:200]
                log.warning("set refused", extra={**fields, "err": err.get("err")})
        return acks, errs

    setattr(rcv, "receive", logged_receive)  # noqa: B010
    setattr(rcv, "receive_batch", logged_batch)  # noqa: B010


def install_ops(app: FastAPI, rcv: Receiver) -> ReceiverOps:
    """Add ``/healthz`` and ``/readyz`` to ``app``, SET counts and log lines to ``rcv``."""
    ops = ReceiverOps(rcv)
    _instrument(rcv, ops.failures)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        checks: dict[str, str] = {}
        if not rcv.settings.transmitter_issuer:
            checks["transmitter"] = "not configured"
        elif rcv.verifier is not None:
            checks["transmitter"] = "ok"
        else:
            checks["transmitter"] = "not connected" + (f": {rcv.error}" if rcv.error else "")
        checks["store"] = "ok" if rcv.store_available else f"unavailable: {rcv.store_error or 'disconnected'}"
        ready = checks["store"] == "ok" and checks["transmitter"] in ("ok", "not configured")
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
            headers={"Cache-Control": "no-store"},
        )

    return ops
