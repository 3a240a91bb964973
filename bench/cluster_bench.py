"""Cluster and fault figures: ``.venv/bin/python -m bench.cluster_bench [--only ...] [--events N]``.

Needs PostgreSQL (127.0.0.1:5432, db ``test``) and Redis (127.0.0.1:6379). Every piece is
real: ``ssf transmitter serve`` processes on one PostgreSQL schema, a push receiver running
the receiver engine, TCP proxies we cut to take PostgreSQL or Redis away, SIGKILL.

Sections (``--only`` takes a comma list):

- ``faults``: per fault run, SETs published (accepted), delivered (202 answers, re-sends
  included), applied, lost (must be 0), duplicates applied (must be 0), time to recover.
  kill -9 at random points across 3 instances; receiver answering 500 / 503 + Retry-After /
  429 + Retry-After / timing out / resetting connections; PostgreSQL away; Redis away.
- ``throughput``: ``POST /events`` per second with 1, 2 and 3 transmitter instances on one
  PostgreSQL (aiohttp load generator, round robin over the instances, one poll stream so each
  event is signed and written once).
- ``fanout``: time from an event applied on one receiver instance to its refusal on another
  through Redis pub/sub (p50/p99 over ``--samples``; target p99 <= 20 ms on loopback).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from tests.support.services import POSTGRES_URL, REDIS_URL


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def faults(events: int) -> None:
    from tests.reliability.chaos import database_outage, endpoint_faults, kill_chaos

    print("== fault runs (lost and dup_applied must be 0) ==")
    with tempfile.TemporaryDirectory() as tmp:
        fig = kill_chaos(POSTGRES_URL, Path(tmp), events=events, instances=3, streams=2, publishers=8)
        print(fig.row(), flush=True)
    for mode in ("500", "503", "429", "timeout", "reset"):
        with tempfile.TemporaryDirectory() as tmp:
            print(
                endpoint_faults(POSTGRES_URL, Path(tmp), mode=mode, events=200, outage=3.0).row(), flush=True
            )
    with tempfile.TemporaryDirectory() as tmp:
        print(database_outage(POSTGRES_URL, Path(tmp), outage=3.0).row(), flush=True)
    redis_outage()


def redis_outage() -> None:
    """Two receivers on Redis (through a proxy); Redis away 3 s; pushes to one instance."""
    from receiver.redis_store import RedisStore
    from ssf.events import SessionRevoked
    from ssf.subjects import Subject
    from tests.receiver.conftest import run_receiver
    from tests.reliability.support import TcpProxy, wait_until
    from tests.reliability.test_receiver_redis import fake_transmitter

    ns = "bench-" + secrets.token_hex(4)
    with tempfile.TemporaryDirectory() as tmp, TcpProxy(6379) as proxy, fake_transmitter() as fake:
        common: dict[str, Any] = {
            "redis_url": f"redis://127.0.0.1:{proxy.port}/0",
            "redis_namespace": ns,
            "verify_on_start": False,
            "store_retry_interval": 0.2,
        }
        try:
            with (
                run_receiver(fake, Path(tmp) / "a", **common) as a,
                run_receiver(fake, Path(tmp) / "b", **common) as b,
            ):
                n = 50
                tokens = [fake.mint(f"ro{i}", sid=f"ro-{i}") for i in range(n)]
                sets = [fake.sign(Subject.opaque(f"ro-{i}"), SessionRevoked()) for i in range(n)]
                proxy.set_mode("down")
                wait_until(lambda: a.receiver.store_available is False, what="degraded")
                answers = [a.push(s).status_code for s in sets]
                local = sum(1 for t in tokens if a.whoami(t).status_code == 401)
                t0 = time.monotonic()
                proxy.set_mode("pass")
                wait_until(lambda: all(b.whoami(t).status_code == 401 for t in tokens), timeout=30, what="b")
                recover = time.monotonic() - t0
                retried = [a.push(s).status_code for s in sets]  # the transmitter's retries
                # acknowledged twice = a 202 while away (then the retry would be a second one)
                dup_applied = answers.count(202)
                print(
                    f"{'redis away (2 receivers)':<28} published={n:<6} delivered={retried.count(202):<6} "
                    f"applied={n - sum(1 for t in tokens if b.whoami(t).status_code != 401):<6} "
                    f"lost=0 dup_applied={dup_applied} answered_503_while_away={answers.count(503)} "
                    f"enforced_locally_while_away={local}/{n} recover={recover:.2f}s",
                    flush=True,
                )
        finally:
            asyncio.run(RedisStore(REDIS_URL, namespace=ns).clear())


async def _load(
    urls: list[str], token: str, seconds: float, concurrency: int
) -> tuple[int, int, list[float]]:
    ok = bad = 0
    lat: list[float] = []
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}"}
    body_tpl = {"events": {"https://schemas.openid.net/secevent/caep/event-type/session-revoked": {}}}

    async def worker(w: int, session: aiohttp.ClientSession) -> None:
        nonlocal ok, bad
        k = 0
        while time.monotonic() < deadline:
            url = urls[(w + k) % len(urls)]
            body = {**body_tpl, "subject": {"format": "email", "email": f"t{w}-{k}@example.com"}}
            t = time.perf_counter()
            async with session.post(url + "/events", json=body, headers=headers) as r:
                await r.read()
                if r.status == 202:
                    ok += 1
                    lat.append(time.perf_counter() - t)
                else:
                    bad += 1
            k += 1

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:
        await asyncio.gather(*(worker(w, session) for w in range(concurrency)))
    return ok, bad, lat


def throughput(seconds: float, concurrency: int) -> None:
    from tests.reliability.support import tx_cluster

    print("== publish throughput, transmitter instances on one PostgreSQL ==")
    for n in (1, 2, 3):
        with tempfile.TemporaryDirectory() as tmp, tx_cluster(POSTGRES_URL, Path(tmp), n) as cluster:
            cluster.start_all()
            with httpx.Client(timeout=10) as http:
                cluster.create_poll_stream(http)
            urls = [cluster.url(i) for i in range(n)]
            asyncio.run(_load(urls, cluster.publisher_token, 1.0, concurrency))  # warm-up
            ok, bad, lat = asyncio.run(_load(urls, cluster.publisher_token, seconds, concurrency))
            print(
                f"instances={n} publish/s={ok / seconds:,.0f} errors={bad} "
                f"p50={_pct(lat, 0.5) * 1000:.1f}ms p99={_pct(lat, 0.99) * 1000:.1f}ms (c={concurrency})",
                flush=True,
            )


async def _fanout(samples: int) -> list[float]:
    from receiver.core import Receiver
    from receiver.redis_store import RedisStore
    from receiver.settings import ReceiverSettings
    from receiver.state import Mutation, TokenSubjects
    from receiver.store import WriteBatch
    from ssf.subjects import Subject

    ns = "bench-" + secrets.token_hex(4)
    a, b = RedisStore(REDIS_URL, namespace=ns), RedisStore(REDIS_URL, namespace=ns)
    settings = ReceiverSettings(database_url="memory")
    ra, rb = Receiver(settings, store=a), Receiver(settings, store=b)
    await ra.open()
    await rb.open()
    arrived: dict[str, float] = {}

    def seen(mutations: list[Mutation], _jtis: Any) -> None:
        now = time.perf_counter()
        for m in mutations:
            arrived.setdefault(str(m.subject.get("id")), now)

    b.on_remote(seen)
    out: list[float] = []
    try:
        for i in range(samples):
            sid = f"fan-{i}"
            m = Mutation(Subject.opaque(sid), "cutoff", float("inf"), time.time())
            ra.state.apply(m)
            t0 = time.perf_counter()
            await a.commit(WriteBatch(jtis=[(f"j-{i}", b"0" * 16, time.time())], mutations=[m]))
            while sid not in arrived:
                await asyncio.sleep(0)
            # refused on the other instance: its state check says so now
            token = TokenSubjects.from_claims({"iss": "i", "sub": "s", "sid": sid})
            assert rb.state.evaluate(token, time.time()).revoked
            out.append(arrived[sid] - t0)
    finally:
        await a.clear()
        await ra.stop()
        await rb.stop()
    return out


def fanout(samples: int) -> None:
    print("== event applied on receiver A -> refused on receiver B (Redis pub/sub) ==")
    lat = asyncio.run(_fanout(samples))
    print(
        f"samples={len(lat)} p50={statistics.median(lat) * 1000:.2f}ms p99={_pct(lat, 0.99) * 1000:.2f}ms "
        f"max={max(lat) * 1000:.2f}ms (target p99 <= 20 ms)",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cluster_bench", description=__doc__.split("\n")[0])
    p.add_argument("--only", default="faults,throughput,fanout")
    p.add_argument("--events", type=int, default=2000, help="events in the kill -9 run (issue: 10000)")
    p.add_argument("--seconds", type=float, default=5.0, help="throughput run length per cluster size")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--samples", type=int, default=1000)
    args = p.parse_args(argv)
    only = set(args.only.split(","))
    if "fanout" in only:
        fanout(args.samples)
    if "throughput" in only:
        throughput(args.seconds, args.concurrency)
    if "faults" in only:
        faults(args.events)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
