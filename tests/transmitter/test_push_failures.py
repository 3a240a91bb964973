"""Push delivery under failure: the retry cap after a re-enable, status changes racing a
failing push, and concurrent status changes against failing pushes (lock order: no deadlock,
no 500)."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

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
from tests.transmitter.test_push import PUSH, emit, push_stream
from transmitter.auth import Principal
from transmitter.db import outbox_t, stream_t


def _attempts(server: Server, sid: str) -> int:
    with server.tx.engine.connect() as conn:
        q = select(func.max(outbox_t.c.attempts)).where(outbox_t.c.stream_id == sid)
        return int(conn.execute(q).scalar_one() or 0)


def test_re_enabled_stream_gets_a_fresh_retry_window(server_factory: ServerFactory, sink: Sink) -> None:
    """Paused for failing past the cap, then re-enabled while the receiver still fails: the
    stream is retried for the cap again, not paused at the first failure (the clock of the
    head SET's first failure restarted on re-enable)."""
    with server_factory(retry_cap_seconds=1.5) as server:
        tok = server.client()
        sid = push_stream(server, sink, tok)["stream_id"]
        sink.default_status = 500
        emit(server, 1)
        wait_until(lambda: server.tx.stream(sid).status == "paused", timeout=20)
        r = server.req("POST", "/ssf/status", tok, json={"stream_id": sid, "status": "enabled"})
        assert r.status_code == 200, r.text
        enabled_at = time.monotonic()
        before = len(sink.pushes)
        wait_until(lambda: server.tx.stream(sid).status == "paused", timeout=20)
        # several attempts, over about the cap, before pausing again
        assert time.monotonic() - enabled_at >= 1.2
        assert len(sink.pushes) - before >= 3


def test_disable_while_a_push_fails_is_not_undone(server_factory: ServerFactory, sink: Sink) -> None:
    """A receiver disables its stream while a failing push is in flight, after the cap: the
    worker's pause (decided on the status it read before the push) must not turn the
    disabled stream into a paused one."""
    with server_factory(retry_cap_seconds=0.3, retry_base_seconds=0.05, retry_max_seconds=0.1) as server:
        tok = server.client()
        sid = push_stream(server, sink, tok)["stream_id"]
        sink.default_status = 500
        sink.delay = 1.0
        emit(server, 1)
        # the first failure is recorded, then the retry is held by the sink for a second
        wait_until(lambda: _attempts(server, sid) >= 1, timeout=10)
        time.sleep(0.4)
        r = server.req("POST", "/ssf/status", tok, json={"stream_id": sid, "status": "disabled"})
        assert r.status_code == 200, r.text
        time.sleep(2.0)  # the held push fails after the cap
        assert server.tx.stream(sid).status == "disabled"


def test_status_changes_racing_failing_pushes_never_deadlock_or_500(
    server_factory: ServerFactory, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    """Receivers and the operator change statuses, verify and publish while every push fails
    and the worker records failures (outbox row, then stream row) and pauses streams: every
    answer is 2xx/4xx and nothing is logged as failed (a PostgreSQL deadlock shows as one)."""
    caplog.set_level(logging.WARNING, logger="transmitter")
    with server_factory(
        retry_cap_seconds=0.2, retry_base_seconds=0.01, retry_max_seconds=0.02, maintenance_interval=0.1
    ) as server:
        sink.default_status = 503
        owners: list[tuple[str, str]] = []
        for _ in range(4):
            tok = server.client()
            owners.append((tok, push_stream(server, sink, tok)["stream_id"]))
        pub = server.publisher()
        stop = time.monotonic() + 6
        problems: list[str] = []

        def receiver(tok: str, sid: str, seed: int) -> None:
            rnd = random.Random(seed)
            while time.monotonic() < stop:
                choice = rnd.random()
                if choice < 0.5:
                    status = rnd.choice(["enabled", "paused", "disabled", "enabled"])
                    r = server.req("POST", "/ssf/status", tok, json={"stream_id": sid, "status": status})
                elif choice < 0.7:
                    r = server.req("POST", "/ssf/verify", tok, json={"stream_id": sid})
                elif choice < 0.85:
                    r = server.req("PATCH", "/ssf/streams", tok, json={"stream_id": sid, "description": "x"})
                else:
                    r = server.req("GET", "/ssf/status", tok, params={"stream_id": sid})
                if r.status_code >= 500 or r.status_code in (401, 403, 404):
                    problems.append(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}")

        def publisher() -> None:
            i = 0
            while time.monotonic() < stop:
                body = {
                    "subject": {"format": "email", "email": f"p{i}@example.com"},
                    "events": {SESSION_REVOKED: {}},
                }
                r = server.req("POST", "/events", pub, json=body)
                if r.status_code != 202:
                    problems.append(f"publish: {r.status_code} {r.text}")
                i += 1

        def operator() -> None:
            rnd = random.Random(7)
            while time.monotonic() < stop:
                _, sid = rnd.choice(owners)
                try:
                    server.tx.set_status(sid, rnd.choice(["enabled", "paused", "disabled"]), "operator")
                except Exception as exc:
                    problems.append(f"operator: {exc!r}")
                time.sleep(0.01)

        threads = [threading.Thread(target=receiver, args=(*o, n)) for n, o in enumerate(owners)]
        threads += [threading.Thread(target=publisher), threading.Thread(target=operator)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        pushed = len(sink.pushes)
    assert not problems, problems[:5]
    assert pushed > 5  # the worker really was failing pushes all along
    logged = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.getMessage() != "push failed"
    ]
    assert not logged, logged[:5]


def test_failure_recording_and_a_disable_take_rows_in_one_order(
    db_kind: str, server_factory: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL, made deterministic: while the worker records a failed push, the stream row
    is held (by the test), and a receiver disables the stream, which expires the stream's
    outbox rows and then updates the stream row. Taking the stream row before the outbox row
    (either side) deadlocks here: a 500 for the receiver or a failed push loop."""
    if db_kind != "postgres":
        pytest.skip("row locks: PostgreSQL only")
    caplog.set_level(logging.WARNING, logger="transmitter")
    arrived = threading.Event()

    async def endpoint(request: Request) -> Response:
        await request.body()
        arrived.set()
        await asyncio.sleep(1.0)
        return Response(status_code=500)

    app = Starlette(routes=[Route("/push", endpoint, methods=["POST"])])
    with serve(app) as url, server_factory(retry_cap_seconds=3600) as server:
        tok = server.client()
        body = {
            "events_requested": [SESSION_REVOKED],
            "delivery": {"method": PUSH, "endpoint_url": url + "/push"},
        }
        sid = server.create(tok, body)["stream_id"]
        emit(server, 2)
        assert arrived.wait(15)
        answers: list[httpx.Response] = []
        with server.tx.engine.connect() as conn, conn.begin():
            conn.execute(select(stream_t.c.stream_id).where(stream_t.c.stream_id == sid).with_for_update())
            time.sleep(1.5)  # the push fails; the worker records it and waits for the stream row

            def disable() -> None:
                answers.append(
                    server.req("POST", "/ssf/status", tok, json={"stream_id": sid, "status": "disabled"})
                )

            t = threading.Thread(target=disable)
            t.start()
            time.sleep(0.5)  # the disable waits too
        t.join(30)
        assert answers and answers[0].status_code == 200, answers[0].text if answers else "no answer"
        assert server.tx.stream(sid).status == "disabled"
        wait_until(lambda: server.tx.outbox_counts(sid) == {"expired": 2})
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [m for m in logged if m != "push failed"], logged[:5]


def test_a_header_that_cannot_be_sent_is_a_failed_push(
    server_factory: ServerFactory, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored authorization_header HTTP cannot carry (not Latin-1) fails each push like a
    transport error (recorded, retried with backoff, paused past the cap), instead of
    crashing the stream's push loop, which then was claimed again at once, for ever."""
    caplog.set_level(logging.WARNING, logger="transmitter")
    with server_factory(retry_cap_seconds=0.5) as server:
        tok = server.client()
        sid = push_stream(server, sink, tok)["stream_id"]
        with server.tx.engine.begin() as conn:
            conn.execute(
                update(stream_t)
                .where(stream_t.c.stream_id == sid)
                .values(auth_header=server.tx.box.encrypt("Bearer \u2603"))
            )
        emit(server, 1)
        wait_until(lambda: server.tx.stream(sid).status == "paused", timeout=20)
        time.sleep(0.5)
        assert 2 <= _attempts(server, sid) <= 40  # backed off, not a hot loop
        assert sink.pushes == []
    crashed = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not crashed, crashed[:3]


def test_a_batch_longer_than_the_lease_is_not_pushed_twice(
    tmp_path: Path, db_config: dict[str, Any], sink: Sink
) -> None:
    """A slow receiver makes one batch outlast the lease: the worker pushing it keeps its
    lease, so the other instance does not claim the stream and push the same SETs again."""
    sink.delay = 0.25
    p1, p2 = free_port(), free_port()
    common = {"issuer": "http://127.0.0.1:9", "lease_seconds": 1.5, "push_timeout": 2}
    s1 = make_settings(tmp_path, db_config, p1, instance_id="a", **common)
    s2 = make_settings(tmp_path, db_config, p2, instance_id="b", **common)
    with running(s1, p1) as a:
        info, _secret = a.tx.auth.add_client("rx")
        req = StreamRequest(
            events_requested=[SESSION_REVOKED], delivery=Delivery(method=PUSH, endpoint_url=sink.url)
        )
        sid = a.tx.create_stream(Principal(info.client_id, frozenset(), info.client_id), req)["stream_id"]
        with running(s2, p2) as b:
            jtis = [
                j
                for i in range(12)
                for j in b.tx.publish(Subject.email(f"x{i}@example.com"), {SESSION_REVOKED: {}}).values()
            ]
            sink.wait_for(12, timeout=30)
            wait_until(lambda: a.tx.outbox_counts(sid) == {"delivered": 12}, timeout=30)
            time.sleep(0.5)
    verifier = SETVerifier(issuer="http://127.0.0.1:9", keys=PublicKeys.from_jwks(a.tx.keys.jwks()))
    seen = [verifier.verify(t).jti for t in sink.tokens()]
    assert seen == jtis  # each once, in order


def test_a_stream_waiting_for_a_connection_slot_keeps_its_lease(
    tmp_path: Path, db_config: dict[str, Any]
) -> None:
    """With one connection slot, a fast stream waits for a slow one's push, longer than the
    lease: its lease is kept meanwhile, so the other instance does not claim it and push the
    same SETs again (and the slow stream's own push outlasting the lease neither)."""
    got: dict[str, list[bytes]] = {"slow": [], "fast": []}

    async def endpoint(request: Request) -> Response:
        which = request.path_params["which"]
        body = await request.body()
        if which == "slow":
            await asyncio.sleep(1.2)
        got[which].append(body)
        return Response(status_code=202)

    app = Starlette(routes=[Route("/{which}", endpoint, methods=["POST"])])
    p1, p2 = free_port(), free_port()
    common = {
        "issuer": "http://127.0.0.1:9",
        "lease_seconds": 0.9,
        "push_timeout": 3,
        "push_concurrency": 1,
        "worker_poll_interval": 0.1,
    }
    s1 = make_settings(tmp_path, db_config, p1, instance_id="a", **common)
    s2 = make_settings(tmp_path, db_config, p2, instance_id="b", **common)
    with serve(app) as url, running(s1, p1) as a:
        sids = []
        for which in ("slow", "fast"):
            info, _secret = a.tx.auth.add_client(which)
            req = StreamRequest(
                events_requested=[SESSION_REVOKED],
                delivery=Delivery(method=PUSH, endpoint_url=f"{url}/{which}"),
            )
            principal = Principal(info.client_id, frozenset(), info.client_id)
            sids.append(a.tx.create_stream(principal, req)["stream_id"])
        published = [
            a.tx.publish(Subject.email(f"s{i}@example.com"), {SESSION_REVOKED: {}}) for i in range(3)
        ]
        wait_until(lambda: len(got["fast"]) >= 1, timeout=10)  # instance a holds both streams
        with running(s2, p2):
            wait_until(lambda: all(a.tx.outbox_counts(sid) == {"delivered": 3} for sid in sids), timeout=30)
            time.sleep(1.0)
    verifier = SETVerifier(issuer="http://127.0.0.1:9", keys=PublicKeys.from_jwks(a.tx.keys.jwks()))
    for which, sid in zip(("slow", "fast"), sids, strict=True):
        seen = [verifier.verify(t.decode()).jti for t in got[which]]
        assert seen == [p[sid] for p in published], which  # each once, in order
