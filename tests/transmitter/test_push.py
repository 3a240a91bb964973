"""Push delivery (RFC 8935): headers, order, failure classes, retry and pause, leases."""

from __future__ import annotations

import asyncio
import collections
import email.utils
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ssf import uris
from ssf.keys import PublicKeys
from ssf.set import SETVerifier
from ssf.stream import Delivery, StreamRequest
from ssf.subjects import Subject
from tests.support.services import free_port, serve
from tests.transmitter.conftest import (
    SESSION_REVOKED,
    Server,
    ServerFactory,
    Sink,
    make_settings,
    running,
    wait_until,
)
from transmitter.auth import Principal
from transmitter.db import outbox_t

PUSH = "urn:ietf:rfc:8935"


def push_stream(
    server: Server, sink: Sink, tok: str, header: str | None = "Bearer push_token_abc"
) -> dict[str, Any]:
    delivery: dict[str, Any] = {"method": PUSH, "endpoint_url": sink.url}
    if header is not None:
        delivery["authorization_header"] = header
    return server.create(tok, {"events_requested": [SESSION_REVOKED], "delivery": delivery})


def emit(server: Server, n: int, start: int = 0) -> list[str]:
    out = []
    for i in range(start, start + n):
        res = server.tx.publish(Subject.email(f"u{i}@example.com"), {SESSION_REVOKED: {}})
        out.extend(res.values())
    return out


def test_push_headers_one_set_per_post_in_order(server: Server, sink: Sink) -> None:
    tok = server.client(audience="https://rx.example")
    s = push_stream(server, sink, tok)
    jtis = emit(server, 20)
    pushes = sink.wait_for(20)
    verifier = server.verifier("https://rx.example")
    assert [verifier.verify(p.body).jti for p in pushes] == jtis
    for p in pushes:
        assert p.headers["content-type"] == uris.SET_MEDIA_TYPE
        assert p.headers["accept"] == "application/json"
        assert p.headers["authorization"] == "Bearer push_token_abc"
        assert p.body.count(b".") == 2  # exactly one compact SET
    wait_until(lambda: server.tx.outbox_counts(s["stream_id"]) == {"delivered": 20})


def test_no_authorization_header_when_none_configured(server: Server, sink: Sink) -> None:
    tok = server.client()
    push_stream(server, sink, tok, header=None)
    emit(server, 2)
    for p in sink.wait_for(2):
        assert "authorization" not in p.headers


def test_400_is_recorded_and_not_retried(server: Server, sink: Sink) -> None:
    tok = server.client()
    s = push_stream(server, sink, tok)
    sink.script.append(
        (400, {"Content-Type": "application/json"}, b'{"err":"invalid_audience","description":"no"}')
    )
    jtis = emit(server, 3)
    sink.wait_for(3)
    wait_until(lambda: server.tx.outbox_counts(s["stream_id"]) == {"rejected": 1, "delivered": 2})
    assert [server.verifier().verify(p.body).jti for p in sink.pushes] == jtis  # never re-sent
    with server.tx.engine.connect() as conn:
        recorded = conn.execute(
            select(outbox_t.c.jti, outbox_t.c.last_error).where(outbox_t.c.state == "rejected")
        ).one()
    assert recorded.jti == jtis[0]
    assert json.loads(recorded.last_error) == {"status": 400, "err": "invalid_audience", "description": "no"}


def test_any_2xx_is_delivered_and_other_answers_are_retried(server: Server, sink: Sink) -> None:
    """RFC 8935 §2.2 asks for 202; a receiver answering 200 or 204 has accepted the SET too.
    A redirect is not followed (SSRF) and, like 401/404, is a failure retried in place."""
    tok = server.client()
    s = push_stream(server, sink, tok)
    sink.script.extend(
        [(200, {}, b""), (204, {}, b""), (302, {"Location": "http://169.254.169.254/"}, b""), (401, {}, b"")]
    )
    jtis = emit(server, 3)
    sink.wait_for(5)
    wait_until(lambda: server.tx.outbox_counts(s["stream_id"]) == {"delivered": 3})
    seen = [server.verifier().verify(p.body).jti for p in sink.pushes]
    assert seen == [jtis[0], jtis[1], jtis[2], jtis[2], jtis[2]]
    assert all(p.headers.get("host", "").startswith("127.0.0.1") for p in sink.pushes)


def test_5xx_and_transport_errors_retry_in_order(server: Server, sink: Sink) -> None:
    tok = server.client()
    s = push_stream(server, sink, tok)
    sink.script.extend([(500, {}, b""), (503, {"Retry-After": "0"}, b""), (429, {"Retry-After": "0"}, b"")])
    jtis = emit(server, 3)
    sink.wait_for(6)
    wait_until(lambda: server.tx.outbox_counts(s["stream_id"]) == {"delivered": 3})
    seen = [server.verifier().verify(p.body).jti for p in sink.pushes]
    assert seen[:4] == [jtis[0]] * 4  # the head is retried; nothing overtakes it
    assert seen[4:] == jtis[1:]


def test_connection_refused_and_timeouts_are_retried(server_factory: ServerFactory) -> None:
    """Transport failures: nothing listening at the endpoint, then a receiver slower than
    PUSH_TIMEOUT; the SETs stay pending and are delivered, in order, once it answers."""
    got: list[bytes] = []
    slow = {"on": True}

    async def endpoint(request: Request) -> Response:
        body = await request.body()
        if slow["on"]:
            await asyncio.sleep(2)  # beyond the 0.5 s push timeout
        got.append(body)
        return Response(status_code=202)

    port = free_port()
    with server_factory(push_timeout=0.5) as server:
        tok = server.client()
        delivery = {"method": PUSH, "endpoint_url": f"http://127.0.0.1:{port}/push"}
        s = server.create(tok, {"events_requested": [SESSION_REVOKED], "delivery": delivery})
        jtis = emit(server, 2)

        def last_error() -> str | None:
            with server.tx.engine.connect() as conn:
                return conn.execute(
                    select(outbox_t.c.last_error).where(outbox_t.c.jti == jtis[0])
                ).scalar_one()

        assert "transport error" in wait_until(last_error)  # connection refused
        with serve(Starlette(routes=[Route("/push", endpoint, methods=["POST"])]), port=port):
            wait_until(lambda: "Timeout" in (last_error() or ""), timeout=20)
            assert server.tx.outbox_counts(s["stream_id"]) == {"pending": 2}
            slow["on"] = False
            wait_until(lambda: server.tx.outbox_counts(s["stream_id"]) == {"delivered": 2}, timeout=20)
        verifier = server.verifier()
        firsts = list(dict.fromkeys(verifier.verify(b).jti for b in got))
        assert firsts == jtis


def test_retry_after_seconds_and_http_date_are_honoured(server: Server, sink: Sink) -> None:
    """429/503 ``Retry-After`` (delta-seconds or an HTTP-date) delays the retry at least that
    long, although the test server's own backoff is at most 0.3 s."""
    tok = server.client()
    s = push_stream(server, sink, tok)
    # answered about 2 s from now, this date is then 2-3 s ahead (whole seconds)
    when = email.utils.formatdate(time.time() + 5, usegmt=True)
    sink.script.extend([(429, {"Retry-After": "2"}, b""), (503, {"Retry-After": when}, b"")])
    emit(server, 1)
    first, second, third = sink.wait_for(3, timeout=20)
    assert second.at - first.at >= 1.9
    assert third.at - second.at >= 1.5
    wait_until(lambda: server.tx.outbox_counts(s["stream_id"]) == {"delivered": 1})


def test_failing_past_cap_pauses_with_stream_updated_and_holds(
    server_factory: ServerFactory, sink: Sink
) -> None:
    with server_factory(retry_cap_seconds=0.5) as server:
        tok = server.client()
        s = push_stream(server, sink, tok)
        sid = s["stream_id"]
        sink.default_status = 500
        held = emit(server, 2)
        status = wait_until(lambda: server.tx.stream(sid).status == "paused" and server.tx.stream(sid))
        assert "push delivery failing" in (status.reason or "")
        sink.default_status = 202
        verifier = server.verifier()
        # the stream-updated notice goes out although the stream is paused; held SETs do not
        wait_until(lambda: any(verifier.verify(t).event_type == uris.STREAM_UPDATED for t in sink.tokens()))
        notice = next(t for t in sink.decoded(verifier) if t.event_type == uris.STREAM_UPDATED)
        assert notice.event.payload()["status"] == "paused"
        assert notice.sub_id == Subject.opaque(sid)
        # once the notice's delivery is recorded, exactly the two held SETs remain
        wait_until(lambda: server.tx.outbox_counts(sid).get("pending") == 2)
        # receiver re-enables: held SETs are delivered, in order
        r = server.req("POST", "/ssf/status", tok, json={"stream_id": sid, "status": "enabled"})
        assert r.status_code == 200
        wait_until(lambda: server.tx.outbox_counts(sid).get("pending") is None)
        ok = [t.jti for t in sink.decoded(verifier) if t.event_type == SESSION_REVOKED]
        assert ok[-2:] == held


def test_two_instances_never_push_the_same_set_twice(
    tmp_path: Path, db_config: dict[str, Any], sink: Sink
) -> None:
    p1, p2 = free_port(), free_port()
    s1 = make_settings(tmp_path, db_config, p1, issuer="http://127.0.0.1:9", instance_id="a")
    s2 = make_settings(tmp_path, db_config, p2, issuer="http://127.0.0.1:9", instance_id="b")
    with running(s1, p1) as a, running(s2, p2) as b:
        streams = []
        for _ in range(4):
            info, _secret = a.tx.auth.add_client(f"rx{len(streams)}")
            req = StreamRequest(
                events_requested=[SESSION_REVOKED], delivery=Delivery(method=PUSH, endpoint_url=sink.url)
            )
            streams.append(a.tx.create_stream(Principal(info.client_id, frozenset(), info.client_id), req))
        jtis: list[str] = []
        for i in range(30):
            target = a if i % 2 else b
            jtis.extend(target.tx.publish(Subject.email(f"x{i}@example.com"), {SESSION_REVOKED: {}}).values())
        sink.wait_for(len(jtis))
        wait_until(lambda: all(a.tx.outbox_counts(s["stream_id"]) == {"delivered": 30} for s in streams))
        verifier = SETVerifier(issuer="http://127.0.0.1:9", keys=PublicKeys.from_jwks(a.tx.keys.jwks()))
        counts = collections.Counter(verifier.verify(t).jti for t in sink.tokens())
        assert set(counts) == set(jtis) and max(counts.values()) == 1


def test_an_endless_answer_is_read_only_as_far_as_needed(server: Server) -> None:
    """A receiver answering 400 with a body that never ends: the transmitter reads a bounded
    prefix, records the rejection from it and moves on (it neither buffers without limit nor
    waits out its push timeout and retries)."""
    sent: list[bytes] = []

    async def endless() -> AsyncIterator[bytes]:
        yield b'{"err": "invalid_audience", "description": "no"}'
        for _ in range(100_000):  # ~6 GB, far beyond the push timeout at this pace
            yield b" " * 65536
            await asyncio.sleep(0.001)

    async def endpoint(request: Request) -> Response:
        sent.append(await request.body())
        return StreamingResponse(endless(), status_code=400, media_type="application/json")

    with serve(Starlette(routes=[Route("/push", endpoint, methods=["POST"])])) as url:
        tok = server.client()
        delivery = {"method": PUSH, "endpoint_url": url + "/push"}
        s = server.create(tok, {"events_requested": [SESSION_REVOKED], "delivery": delivery})
        emit(server, 1)
        # push_timeout is 3 s in these tests: a rejection recorded well before a retry could
        # happen shows the body was not read to its end.
        wait_until(lambda: server.tx.outbox_counts(s["stream_id"]) == {"rejected": 1}, timeout=10)
        assert len(sent) == 1  # rejected, never re-sent
