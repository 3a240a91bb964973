"""Transmitter benchmark: publish-to-delivered throughput and latency, push and poll, fan-out.

``.venv/bin/python -m bench.transmitter_bench [--db sqlite|postgres|both] [--only RUNS] [--n N] [--rate R]
[--seconds S] [--fanout F] [--alg ES256]``

Three processes, as deployed: the transmitter (``ssf transmitter serve``: uvicorn, uvloop,
httptools, delivery worker), a minimal loopback push sink answering 202
(``bench/transmitter_sink.py``), and this driver (publisher and poll receiver).

* push throughput: N SETs are queued while the stream is paused, then the receiver re-enables
  it; rate = N / (last arrival - enable).
* poll throughput: N SETs queued, then drained with ``maxEvents=1000`` + ``ack`` batches.
* latency at R events/s for S seconds: each event is published with ``POST /events`` (open
  loop); latency = arrival at the sink (push) or in a long-poll response (poll) minus the
  start of the publish request. p50/p99.
* fan-out: one event to F push streams; time until the sink has all F.

On PostgreSQL the latency runs also print ``commit_probe_*``: during the run a separate
connection commits a one-row insert every 10 ms, and its commit time is the disk's WAL flush
as any client sees it. A publish answers only once its transaction is durable, so when that
floor spikes (this machine's shared disk stalls for 100-800 ms at times), the transmitter's
p99 spikes with it; the probe tells the two apart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import sqlalchemy

from tests.support.services import POSTGRES_URL, free_port
from transmitter.service import Transmitter
from transmitter.settings import TransmitterSettings

SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
PUSH, POLL = "urn:ietf:rfc:8935", "urn:ietf:rfc:8936"
BIN = Path(sys.executable).parent


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited: {proc.args}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


class Rig:
    """Transmitter process + sink process + an in-process Transmitter for setup and preloading."""

    def __init__(self, db: str, alg: str, workdir: Path) -> None:
        self.port, self.sink_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.sink = f"http://127.0.0.1:{self.sink_port}"
        self.schema: str | None = None
        env = {
            "SSF_TRANSMITTER_ISSUER": self.base,
            "SSF_TRANSMITTER_DEV_MODE": "1",
            "SSF_TRANSMITTER_SECRET_FILE": str(workdir / "secret"),
            "SSF_TRANSMITTER_SIGNING_ALG": alg,
            "SSF_TRANSMITTER_MAX_STREAMS_PER_CLIENT": "5000",
            "SSF_TRANSMITTER_WORKER_POLL_INTERVAL": "0.5",
            "SSF_TRANSMITTER_PUSH_BATCH": "512",
            "SSF_TRANSMITTER_MIN_VERIFICATION_INTERVAL": "0",
            # the bench's driver creates 1,000 streams at once: lift the per-client API rate limit
            "SSF_TRANSMITTER_MANAGEMENT_RATE": "1000000",
            "SSF_TRANSMITTER_MANAGEMENT_BURST": "1000000",
        }
        if db == "sqlite":
            env["SSF_TRANSMITTER_DATABASE_URL"] = f"sqlite:///{workdir / 'bench.db'}"
        else:
            self.schema = "bench_" + secrets.token_hex(4)
            env["SSF_TRANSMITTER_DATABASE_URL"] = POSTGRES_URL
            env["SSF_TRANSMITTER_DATABASE_SCHEMA"] = self.schema
        # Per-delivery INFO log lines (transmitter.ops) are an operator's choice; the bench
        # measures the delivery path itself. Override with SSF_LOG_LEVEL=info to include them.
        self.env = {"SSF_LOG_LEVEL": "warning", **os.environ, **env}
        settings = TransmitterSettings(**{k[16:].lower(): v for k, v in env.items()})
        self.tx = Transmitter(settings)  # creates schema and key before the server starts
        self.procs = [
            subprocess.Popen([str(BIN / "python"), "-m", "bench.transmitter_sink", str(self.sink_port)]),
            subprocess.Popen(
                [str(BIN / "python"), "-m", "ssfcli.main", "transmitter", "serve", "--port", str(self.port)],
                env=self.env,
            ),
        ]
        _wait_http(self.sink + "/stats", self.procs[0])
        _wait_http(self.base + "/jwks.json", self.procs[1])
        self.http = httpx.Client(timeout=60)

    def client(self, scopes: list[str] | None = None) -> str:
        info, _ = self.tx.auth.add_client("c" + secrets.token_hex(6), scopes)
        return str(self.tx.auth.issue_token(info, None)["access_token"])

    def stream(self, token: str, push: bool) -> dict[str, Any]:
        delivery = {"method": PUSH, "endpoint_url": self.sink + "/push"} if push else {"method": POLL}
        r = self.http.post(
            self.base + "/ssf/streams",
            headers={"Authorization": f"Bearer {token}"},
            json={"events_requested": [SESSION_REVOKED], "delivery": delivery},
        )
        r.raise_for_status()
        return dict(r.json())

    def status(self, token: str, sid: str, status: str) -> None:
        self.http.post(
            self.base + "/ssf/status",
            headers={"Authorization": f"Bearer {token}"},
            json={"stream_id": sid, "status": status},
        ).raise_for_status()

    def cpu(self) -> float:
        """CPU seconds used so far by the transmitter process (load-independent cost)."""
        fields = Path(f"/proc/{self.procs[1].pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def sink_stats(self) -> dict[str, Any]:
        return dict(self.http.get(self.sink + "/stats").json())

    def reset_sink(self) -> None:
        self.http.post(self.sink + "/reset")

    def preload(self, n: int) -> None:
        batch = 500
        for i in range(0, n, batch):
            self.tx.publish_many(
                [
                    ({"format": "email", "email": f"u{j}@example.com"}, {SESSION_REVOKED: {}}, None)
                    for j in range(i, min(n, i + batch))
                ]
            )

    def close(self) -> None:
        self.http.close()
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(15)
        self.tx.close()
        if self.schema:
            eng = sqlalchemy.create_engine(POSTGRES_URL)
            with eng.begin() as conn:
                conn.execute(sqlalchemy.text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
            eng.dispose()


class CommitProbe:
    """Commit times of a one-row insert every 10 ms on a connection of its own (PostgreSQL)."""

    def __init__(self, schema: str | None) -> None:
        self.schema = schema
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CommitProbe:
        if self.schema:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        eng = sqlalchemy.create_engine(POSTGRES_URL)
        table = f'"{self.schema}".bench_commit_probe'
        try:
            with eng.begin() as conn:
                conn.execute(sqlalchemy.text(f"CREATE TABLE IF NOT EXISTS {table} (id serial PRIMARY KEY)"))
            with eng.connect() as conn:
                insert = sqlalchemy.text(f"INSERT INTO {table} DEFAULT VALUES")
                while not self._stop.wait(0.01):
                    t = time.perf_counter()
                    conn.execute(insert)
                    conn.commit()
                    self.times.append((time.perf_counter() - t) * 1000)
        finally:
            eng.dispose()

    def figures(self) -> dict[str, float]:
        if not self.times:
            return {}
        return {
            "commit_probe_p50_ms": round(pct(self.times, 50), 2),
            "commit_probe_p99_ms": round(pct(self.times, 99), 2),
            "commit_probe_max_ms": round(max(self.times), 1),
        }


@contextlib.contextmanager
def _no_driver_gc() -> Iterator[None]:
    """No garbage collection in this driver while it times: a full collection here (60 ms
    seen after the throughput runs) delays the publisher and the poll receiver and counted as
    the transmitter's latency."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def push_throughput(rig: Rig, n: int, streams: int = 1) -> dict[str, Any]:
    """N SETs spread over ``streams`` push streams (one SET in flight per stream: order)."""
    tok = rig.client()
    sids = [rig.stream(tok, push=True)["stream_id"] for _ in range(streams)]
    for sid in sids:
        rig.status(tok, sid, "paused")
    rig.preload(n // streams)
    total = (n // streams) * streams
    rig.reset_sink()
    c0 = rig.cpu()
    t0 = time.time()
    for sid in sids:
        rig.status(tok, sid, "enabled")
    deadline = time.time() + 120
    while (st := rig.sink_stats())["count"] < total:
        if time.time() > deadline or any(p.poll() is not None for p in rig.procs):
            raise RuntimeError(f"push throughput: {st['count']} of {total} SETs arrived; giving up")
        time.sleep(0.05)
    last = max(st["arrivals"].values())
    cpu = rig.cpu() - c0
    for sid in sids:
        rig.status(tok, sid, "disabled")
    return {
        "streams": streams,
        "n": total,
        "sets_per_s": round(total / (last - t0)),
        "server_cpu_ms_per_set": round(cpu / total * 1000, 3),
    }


def poll_throughput(rig: Rig, n: int) -> dict[str, Any]:
    tok = rig.client()
    s = rig.stream(tok, push=False)
    rig.preload(n)
    url = s["delivery"]["endpoint_url"]
    got = 0
    ack: list[str] = []
    c0 = rig.cpu()
    t0 = time.perf_counter()
    while True:
        r = rig.http.post(
            url,
            headers={"Authorization": f"Bearer {tok}"},
            json={"maxEvents": 1000, "returnImmediately": True, "ack": ack},
        )
        sets = r.json()["sets"]
        if not sets:
            break
        got += len(sets)
        ack = list(sets)
    dt = time.perf_counter() - t0
    cpu = rig.cpu() - c0
    rig.status(tok, s["stream_id"], "disabled")
    return {
        "n": got,
        "sets_per_s": round(got / dt),
        "server_cpu_ms_per_set": round(cpu / max(got, 1) * 1000, 3),
    }


async def _publish_open_loop(
    rig: Rig, pub: str, rate: float, seconds: float, answered: list[float] | None = None
) -> dict[str, float]:
    """POST /events at ``rate``/s (aiohttp: httpx cannot sustain this, see perf-anchors c);
    returns {jti: publish start time}; ``answered`` gets each call's duration in ms."""
    started: dict[str, float] = {}
    headers = {"Authorization": f"Bearer {pub}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:

        async def one(i: int) -> None:
            t = time.time()
            body = {
                "subject": {"format": "email", "email": f"lat{i}@example.com"},
                "events": {SESSION_REVOKED: {}},
            }
            async with http.post(rig.base + "/events", headers=headers, json=body) as r:
                data = await r.json()
            if answered is not None:
                answered.append((time.time() - t) * 1000)
            for jti in data["jti"].values():
                started[jti] = t

        tasks = []
        t0 = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return started


def push_latency(rig: Rig, rate: float, seconds: float) -> dict[str, Any]:
    tok = rig.client()
    s = rig.stream(tok, push=True)
    pub = rig.client(["ssf.publish"])
    rig.reset_sink()
    c0 = rig.cpu()
    answered: list[float] = []
    with CommitProbe(rig.schema) as probe, _no_driver_gc():
        started = asyncio.run(_publish_open_loop(rig, pub, rate, seconds, answered))
    deadline = time.time() + 30
    while rig.sink_stats()["count"] < len(started) and time.time() < deadline:
        time.sleep(0.05)
    arrivals = rig.sink_stats()["arrivals"]
    cpu = rig.cpu() - c0
    lat = [(arrivals[j] - t) * 1000 for j, t in started.items() if j in arrivals]
    rig.status(tok, s["stream_id"], "disabled")
    return {
        "rate": rate,
        "n": len(lat),
        "p50_ms": round(pct(lat, 50), 2),
        "p99_ms": round(pct(lat, 99), 2),
        "publish_p50_ms": round(pct(answered, 50), 2),
        "publish_p99_ms": round(pct(answered, 99), 2),
        "server_cpu_ms_per_event": round(cpu / max(len(started), 1) * 1000, 3),
        **probe.figures(),
    }


def poll_latency(rig: Rig, rate: float, seconds: float) -> dict[str, Any]:
    tok = rig.client()
    s = rig.stream(tok, push=False)
    pub = rig.client(["ssf.publish"])
    url = s["delivery"]["endpoint_url"]
    received: dict[str, float] = {}
    stop = False

    async def receiver() -> None:
        # aiohttp, like the publisher: httpx's AsyncClient costs ~0.7 ms of this process's CPU
        # per request (perf-anchors c), which the publisher's loop would pay as latency.
        ack: list[str] = []
        headers = {"Authorization": f"Bearer {tok}"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            while not stop or ack:
                body = {"maxEvents": 1000, "ack": ack, "returnImmediately": stop}
                async with http.post(url, headers=headers, json=body) as r:
                    data = await r.json()
                now = time.time()
                sets = data["sets"]
                for jti in sets:
                    received.setdefault(jti, now)
                ack = list(sets)

    async def run() -> dict[str, float]:
        nonlocal stop
        task = asyncio.create_task(receiver())
        await asyncio.sleep(0.2)
        started = await _publish_open_loop(rig, pub, rate, seconds)
        deadline = time.time() + 30
        while len(received) < len(started) and time.time() < deadline:
            await asyncio.sleep(0.05)
        stop = True
        rig.tx.publish({"format": "email", "email": "wake@example.com"}, {SESSION_REVOKED: {}})
        await task
        return started

    with CommitProbe(rig.schema) as probe, _no_driver_gc():
        started = asyncio.run(run())
    lat = [(received[j] - t) * 1000 for j, t in started.items() if j in received]
    rig.status(tok, s["stream_id"], "disabled")
    return {
        "rate": rate,
        "n": len(lat),
        "p50_ms": round(pct(lat, 50), 2),
        "p99_ms": round(pct(lat, 99), 2),
        **probe.figures(),
    }


def fan_out(rig: Rig, streams: int) -> dict[str, Any]:
    tok = rig.client()
    for _ in range(streams):
        rig.stream(tok, push=True)
    rig.reset_sink()
    t0 = time.time()
    out = rig.tx.publish({"format": "email", "email": "fan@example.com"}, {SESSION_REVOKED: {}})
    t_durable = time.time()
    deadline = time.time() + 60
    while (st := rig.sink_stats())["count"] < streams and time.time() < deadline:
        time.sleep(0.02)
    last = max(st["arrivals"].values()) if st["arrivals"] else float("nan")
    return {
        "streams": len(out),
        "delivered": st["count"],
        "publish_durable_ms": round((t_durable - t0) * 1000),
        "all_delivered_ms": round((last - t0) * 1000),
    }


RUNS = ("push_throughput", "push_throughput_8", "poll_throughput", "push_latency", "poll_latency", "fan_out")


def run(db: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        rig = Rig(db, args.alg, Path(tmp))
        todo = {
            "push_throughput": lambda: push_throughput(rig, args.n),
            "push_throughput_8": lambda: push_throughput(rig, args.n, streams=8),
            "poll_throughput": lambda: poll_throughput(rig, args.n),
            "push_latency": lambda: push_latency(rig, args.rate, args.seconds),
            "poll_latency": lambda: poll_latency(rig, args.rate, args.seconds),
            "fan_out": lambda: fan_out(rig, args.fanout),
        }
        try:
            return {name: todo[name]() for name in args.only if name != "fan_out" or args.fanout}
        finally:
            rig.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.transmitter_bench", description=__doc__.split("\n")[0])
    ap.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--n", type=int, default=10000, help="SETs for the throughput runs")
    ap.add_argument("--rate", type=float, default=200.0, help="events/s for the latency runs")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of the latency runs")
    ap.add_argument("--fanout", type=int, default=1000, help="streams for the fan-out run (0 = skip)")
    ap.add_argument("--alg", default="ES256", help="signing algorithm (RS256 is the CAEP-interop default)")
    ap.add_argument("--only", default=",".join(RUNS), help="comma-separated subset of: " + ", ".join(RUNS))
    args = ap.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(RUNS))
    if unknown:
        ap.error(f"unknown run(s): {', '.join(unknown)}")
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    print(
        f"transmitter bench: alg={args.alg} n={args.n} rate={args.rate}/s x {args.seconds}s "
        f"fanout={args.fanout} cpus={os.cpu_count()} load_average={os.getloadavg()[0]:.1f}"
    )
    print("(wall-clock figures depend on the machine's load; server_cpu_* is the transmitter's own cost)")
    for db in dbs:
        res = run(db, args)
        for name, vals in res.items():
            print(f"{db:9s} {name:18s} " + "  ".join(f"{k}={v}" for k, v in vals.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
