"""Transmitter /healthz, /readyz and /metrics against a real server and a real push sink."""

from __future__ import annotations

import logging
import re
import time

import pytest

from tests.transmitter.conftest import SESSION_REVOKED, Server, Sink, wait_until


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_health_and_readiness(server: Server) -> None:
    r = server.http.get(server.url + "/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = server.http.get(server.url + "/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"database": "ok", "push_worker": "ok"}


def test_readiness_fails_when_the_database_is_gone(server: Server) -> None:
    import sqlalchemy

    good = server.tx.engine
    server.tx.engine = sqlalchemy.create_engine("sqlite:////nonexistent-dir/x.db")
    try:
        r = server.http.get(server.url + "/readyz")
    finally:
        server.tx.engine.dispose()
        server.tx.engine = good
    assert r.status_code == 503
    assert r.json()["status"] == "not ready"
    assert r.json()["checks"]["database"].startswith("error")
    assert server.http.get(server.url + "/readyz").status_code == 200


def test_push_metrics_published_delivered_failed_retried(server: Server, sink: Sink) -> None:
    sink.script.extend([(500, {}, b""), (400, {}, b'{"err":"invalid_key","description":"x"}')])
    token = server.client()
    stream = server.create(
        token,
        {
            "delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": sink.url},
            "events_requested": [SESSION_REVOKED],
        },
    )
    sid = stream["stream_id"]
    pub = server.publisher()
    subject = {"format": "email", "email": "alice@example.com"}
    for i in range(3):
        r = server.req(
            "POST", "/events", pub, json={"subject": subject, "events": {SESSION_REVOKED: {}}, "txn": f"t{i}"}
        )
        assert r.status_code == 202, r.text
    # push 1: 500 (retried), push 2: the same SET again, 400 (refused), then 2 more delivered
    sink.wait_for(4)

    def scrape() -> str:
        return server.http.get(server.url + "/metrics").text

    text = wait_until(
        lambda: (
            (t := scrape()) and metric(t, "ssf_transmitter_sets_delivered_total", stream_id=sid) >= 2 and t
        )
    )
    assert (
        metric(text, "ssf_transmitter_sets_published_total", stream_id=sid, event_type=SESSION_REVOKED) == 3
    )
    assert metric(text, "ssf_transmitter_sets_delivered_total", stream_id=sid, method="push") == 2
    assert metric(text, "ssf_transmitter_sets_failed_total", stream_id=sid, reason="error") == 1
    assert metric(text, "ssf_transmitter_sets_failed_total", stream_id=sid, reason="rejected") == 1
    assert metric(text, "ssf_transmitter_sets_retried_total", stream_id=sid) == 1
    assert metric(text, "ssf_transmitter_push_duration_seconds_count") >= 4
    assert metric(text, "ssf_transmitter_streams", status="enabled") == 1
    assert "ssf_log_records_dropped_total " in text


def test_backlog_and_poll_metrics(any_db_server: Server, caplog: pytest.LogCaptureFixture) -> None:
    server = any_db_server
    caplog.set_level(logging.INFO, logger="transmitter.delivery")
    token = server.client()
    stream = server.create(token, {"events_requested": [SESSION_REVOKED]})  # poll
    sid = stream["stream_id"]
    pub = server.publisher()
    for i in range(3):
        server.req(
            "POST",
            "/events",
            pub,
            json={
                "subject": {"format": "opaque", "id": f"u{i}"},
                "events": {SESSION_REVOKED: {}},
                "txn": f"p{i}",
            },
        )
    time.sleep(0.05)
    text = server.http.get(server.url + "/metrics").text
    assert metric(text, "ssf_transmitter_backlog", stream_id=sid) == 3
    age = metric(text, "ssf_transmitter_oldest_undelivered_age_seconds", stream_id=sid)
    assert age > 0
    got = server.poll(token, stream, maxEvents=2)
    assert len(got["sets"]) == 2
    server.poll(token, stream, ack=list(got["sets"]), maxEvents=0)
    text = server.http.get(server.url + "/metrics").text
    assert metric(text, "ssf_transmitter_backlog", stream_id=sid) == 1
    assert metric(text, "ssf_transmitter_sets_delivered_total", stream_id=sid, method="poll") == 2
    assert metric(text, "ssf_transmitter_poll_request_duration_seconds_count", status="200") == 2
    assert metric(text, "ssf_transmitter_poll_query_duration_seconds_count") == 2
    assert re.search(r"^# TYPE ssf_transmitter_backlog gauge$", text, re.M)
    acked = {r.jti: r for r in caplog.records if r.getMessage() == "poll acknowledged"}  # type: ignore[attr-defined]
    assert set(acked) == set(got["sets"])
    assert {r.txn for r in acked.values()} <= {"p0", "p1", "p2"} and len(acked) == 2  # type: ignore[attr-defined]
    assert all(r.stream_id == sid and r.event_type == SESSION_REVOKED for r in acked.values())  # type: ignore[attr-defined]
