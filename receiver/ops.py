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
from collections import Counter
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from receiver.core import Receiver, SetOutcome
from ssfcli.logs import dropped_records

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
    lines.append(f"ssf_log_records_dropped_total {dropped_records()}")
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


def _fields(rcv: Receiver, outcome: SetOutcome) -> dict[str, Any]:
    """The log fields of one SET: from the verified SET when there is one (no second decode),
    else from its unverified claims."""
    set_ = outcome.set_
    if set_ is not None:
        return {
            "stream_id": rcv.stream_id,
            "jti": set_.jti[:200],
            "txn": set_.txn[:200] if set_.txn is not None else None,
            "event_type": set_.event_type[:300],
            "method": outcome.method,
        }
    c = _claims(outcome.raw)
    events = c.get("events")
    event_type = next(iter(events), None) if isinstance(events, dict) and events else None
    jti = str(c.get("jti"))[:200] if c.get("jti") is not None else None
    return {
        "stream_id": rcv.stream_id,
        "jti": jti or (outcome.key[:200] if outcome.key is not None else None),
        "txn": str(c.get("txn"))[:200] if c.get("txn") is not None else None,
        "event_type": str(event_type)[:300] if event_type is not None else None,
        "method": outcome.method,
    }


def _instrument(rcv: Receiver, failures: Counter[str]) -> None:
    """Count refused SETs by ``err`` and log one line per SET (push and poll), from what the
    receiver already decoded (:attr:`Receiver.on_set`)."""

    def on_set(outcome: SetOutcome) -> None:
        error = outcome.error
        if error is not None:
            failures[error.err] += 1
            if log.isEnabledFor(logging.WARNING):
                log.warning("set refused", extra={**_fields(rcv, outcome), "err": error.err})
        elif log.isEnabledFor(logging.INFO):
            extra = _fields(rcv, outcome)
            if outcome.seconds is not None:
                extra["duration_ms"] = round(outcome.seconds * 1000, 2)
            new = outcome.new or outcome.method == "poll"  # a poll ack is logged as accepted
            log.info("set accepted" if new else "set duplicate", extra=extra)

    rcv.on_set = on_set


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
