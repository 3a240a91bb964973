"""Receiver /healthz, /readyz, the added metrics and the SET log lines, against our real
transmitter (push delivery over loopback)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from receiver.app import create_app
from receiver.ops import extra_metrics
from receiver.settings import ReceiverSettings
from ssf.logs import JsonFormatter, RedactingFilter
from tests.ops.test_health_metrics import metric
from tests.support.services import free_port, serve
from tests.transmitter.conftest import SESSION_REVOKED, Server, wait_until


def receiver_settings(tmp_path: Path, issuer: str, port: int, **over: Any) -> ReceiverSettings:
    values: dict[str, Any] = {
        "transmitter_issuer": issuer,
        "dev_mode": True,
        "delivery": "push",
        "push_url": f"http://127.0.0.1:{port}/ssf/push",
        "database_url": f"sqlite:///{tmp_path / 'rx.db'}",
        "events": [SESSION_REVOKED],
        "startup_timeout": 1.0,
        "backoff_base": 0.1,
        "backoff_max": 0.5,
        **over,
    }
    return ReceiverSettings(**values)


def test_receiver_ready_metrics_and_set_log_lines(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    info, secret = server.tx.auth.add_client("rx-ops", None, None)
    pub = server.publisher()
    port = free_port()
    settings = receiver_settings(tmp_path, server.url, port, client_id=info.client_id, client_secret=secret)
    caplog.set_level(logging.INFO, logger="receiver.sets")
    app = create_app(settings)
    rcv = app.state.receiver
    with serve(app, port=port) as url, httpx.Client(timeout=10) as http:
        assert http.get(url + "/healthz").json() == {"status": "ok"}
        wait_until(lambda: http.get(url + "/readyz").status_code == 200)
        assert http.get(url + "/readyz").json()["checks"] == {"transmitter": "ok", "store": "ok"}
        sid = rcv.stream_id
        r = server.req(
            "POST",
            "/events",
            pub,
            json={
                "subject": {"format": "email", "email": "bob@example.com"},
                "events": {SESSION_REVOKED: {}},
                "txn": "rx-txn-1",
            },
        )
        jti = r.json()["jti"][sid]
        wait_until(lambda: any(getattr(rec, "jti", None) == jti for rec in caplog.records))
        # a forged SET with the right push credential: refused with its err code
        bad = http.post(
            url + "/ssf/push",
            content=b"eyJhbGciOiJub25lIn0.eyJqdGkiOiJ4In0.",
            headers={"Authorization": rcv.push_authorization, "Content-Type": "application/secevent+jwt"},
        )
        assert bad.status_code == 400
        # middleware decisions: no token, a bad token
        assert http.get(url + "/protected/whoami").status_code == 401
        assert (
            http.get(url + "/protected/whoami", headers={"Authorization": "Bearer nope"}).status_code == 401
        )
        text = http.get(url + "/metrics").text
    err = bad.json()["err"]
    assert metric(text, "ssf_receiver_set_validation_failures_total", err=err) == 1
    assert metric(text, "ssf_receiver_middleware_decisions_total", decision="deny") >= 1
    accepted = [rec for rec in caplog.records if rec.getMessage() == "set accepted"]
    mine = [rec for rec in accepted if getattr(rec, "jti", None) == jti]
    assert mine and mine[0].stream_id == sid and mine[0].txn == "rx-txn-1"  # type: ignore[attr-defined]
    assert mine[0].event_type == SESSION_REVOKED  # type: ignore[attr-defined]
    refused = [rec for rec in caplog.records if rec.getMessage() == "set refused"]
    assert refused and refused[0].err == err  # type: ignore[attr-defined]
    # Every receiver record renders as one JSON object; other libraries' records (httpx,
    # the transmitter in the same process) may be captured too and are checked for the
    # credential below with the rest.
    formatter, scrub = JsonFormatter(), RedactingFilter()
    lines = []
    for rec in caplog.records:
        scrub.filter(rec)
        lines.append(formatter.format(rec))
    ours = [json.loads(line) for line in lines if json.loads(line)["logger"].startswith("receiver")]
    assert ours and all(line["msg"] for line in ours)
    credential = str(rcv.push_authorization).split(" ", 1)[1]
    assert credential not in "\n".join(lines) and credential not in caplog.text


def test_receiver_not_ready_without_its_transmitter(tmp_path: Path) -> None:
    port = free_port()
    dead = f"http://127.0.0.1:{free_port()}"
    app = create_app(receiver_settings(tmp_path, dead, port, static_token="t"))
    with serve(app, port=port) as url, httpx.Client(timeout=10) as http:
        assert http.get(url + "/healthz").status_code == 200
        r = http.get(url + "/readyz")
        assert r.status_code == 503
        assert r.json()["checks"]["transmitter"].startswith("not connected")


def test_middleware_decision_names() -> None:
    from types import SimpleNamespace

    fake = SimpleNamespace(
        stats={
            "request_authorized": 3,
            "request_refused:insufficient_user_authentication": 2,
            "request_refused:invalid_token": 1,
            "accepted": 9,
        }
    )
    text = extra_metrics(fake, {"invalid_key": 4})  # type: ignore[arg-type]
    assert metric(text, "ssf_receiver_middleware_decisions_total", decision="allow") == 3
    assert metric(text, "ssf_receiver_middleware_decisions_total", decision="step_up") == 2
    assert (
        metric(text, "ssf_receiver_middleware_decisions_total", decision="deny", error="invalid_token") == 1
    )
    assert metric(text, "ssf_receiver_set_validation_failures_total", err="invalid_key") == 4
    assert "accepted" not in text


async def test_set_log_lines_from_the_verified_set_push_and_poll(caplog: pytest.LogCaptureFixture) -> None:
    """One line per SET, push and poll, its fields from the SET already verified; a refused
    SET's from its unverified claims (or its key in ``sets``); failures counted by ``err``."""
    from fastapi import FastAPI

    from receiver.core import Receiver
    from receiver.ops import install_ops
    from receiver.store import MemoryStore
    from ssf.errors import SETError
    from ssf.events import SessionRevoked
    from ssf.keys import KeySet, PublicKeys, generate_signing_key
    from ssf.set import SecurityEventToken, sign_set
    from ssf.subjects import Subject

    key = generate_signing_key("ES256", kid="k")
    rcv = Receiver(ReceiverSettings(database_url="memory", delivery="poll"), store=MemoryStore())
    rcv.configure("https://t", PublicKeys.from_key_set(KeySet([key])), audience="a")
    ops = install_ops(FastAPI(), rcv)

    def set_(jti: str, iss: str = "https://t") -> str:
        t = SecurityEventToken.create(
            iss=iss, aud="a", sub_id=Subject.opaque(jti), event=SessionRevoked(), jti=jti, txn="tx-" + jti
        )
        return sign_set(t, key)

    caplog.set_level(logging.INFO, logger="receiver.sets")
    assert await rcv.receive(set_("p1")) is True
    assert await rcv.receive(set_("p1")) is False
    with pytest.raises(SETError):
        await rcv.receive(set_("p2", iss="https://other"))
    acks, errs = await rcv.receive_batch({"q1": set_("q1"), "q2": 7, "q3": set_("q3", iss="https://x")})
    assert acks == ["q1"] and set(errs) == {"q2", "q3"}
    lines = [(r.getMessage(), r.method, r.jti, getattr(r, "err", None)) for r in caplog.records]  # type: ignore[attr-defined]
    assert lines == [
        ("set accepted", "push", "p1", None),
        ("set duplicate", "push", "p1", None),
        ("set refused", "push", "p2", "invalid_issuer"),
        ("set accepted", "poll", "q1", None),
        ("set refused", "poll", "q2", "invalid_request"),
        ("set refused", "poll", "q3", "invalid_issuer"),
    ]
    first = caplog.records[0]
    assert (first.txn, first.event_type, first.stream_id) == ("tx-p1", SESSION_REVOKED, None)  # type: ignore[attr-defined]
    assert first.duration_ms >= 0  # type: ignore[attr-defined]
    assert caplog.records[2].txn == "tx-p2"  # type: ignore[attr-defined]
    assert dict(ops.failures) == {"invalid_issuer": 2, "invalid_request": 1}
