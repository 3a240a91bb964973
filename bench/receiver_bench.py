"""Receiver benchmark: middleware cost, state check, push and poll throughput, memory.

``.venv/bin/python -m bench.receiver_bench [--n N] [--only middleware,state,push,poll,memory]
[--algs ES256,RS256] [--concurrency C] [--store sqlite|memory] [--generator raw|aiohttp]
[--no-baseline]``

* middleware: the per-request cost of :class:`ContinuousAuthMiddleware` on a cached RFC 9068
  token, measured in-process on the ASGI call (the same trivial app with and without it),
  p50 of each, µs. No HTTP noise: the figure is exactly what the middleware adds.
* state: the state check alone, ns: the cached path (one generation comparison) and a full
  evaluation of a token's 5 subject keys against a state of 1M entries.
* push: the receiver service (``create_app``; uvicorn + uvloop with the receiver's push
  protocol as ``ssf receiver serve`` runs it, ``--server-http uvicorn`` for uvicorn's httptools
  one; no access log, a SQLite file) in its own process; a load generator on loopback POSTs
  N distinct, pre-signed SETs over C keep-alive connections, one request in flight on each.
  The default generator writes pre-built requests on raw asyncio connections (~25 µs of its
  own CPU per request, against ~200 µs for aiohttp, ``--generator aiohttp``), so the figure
  is the receiver's, not the client's. Every SET is verified, applied and committed (group
  commit) before its 202. SETs/s = N / wall time; the receiver's count is checked. Printed
  with it: the server's and the generator's CPU µs per SET, request p50/p99, and (unless
  ``--no-baseline``) a bare uvicorn route under the same load as the floor.
* poll: a minimal RFC 8936 transmitter in its own process serves the same N pre-signed SETs
  (``maxEvents`` 1000); the receiver's :class:`Poller` drains them in this process, verifying,
  applying and committing each batch before acking it.
* memory: in a fresh process, RSS growth for 1M revoked sessions plus 1M user cutoffs applied
  through ``RevocationState.apply``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
ISS = "https://tx.bench.example"
AUD = "https://rx.bench.example"
IDP = "https://idp.bench.example"
PUSH_AUTH = "Bearer bench-push"


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


# --- middleware and state ------------------------------------------------------------------
async def _middleware(n: int) -> dict[str, Any]:
    import math

    import httpx
    from joserfc import jws

    from receiver.core import Receiver
    from receiver.jwks import JWKSCache
    from receiver.middleware import ContinuousAuthMiddleware
    from receiver.settings import ReceiverSettings
    from receiver.store import MemoryStore
    from receiver.tokens import CompositeValidator, JWTAccessTokenValidator
    from ssf.keys import PublicKeys, generate_signing_key

    key = generate_signing_key("ES256", kid="idp")
    now = int(time.time())
    claims = {
        "iss": IDP, "sub": "alice", "aud": "api", "iat": now, "exp": now + 3600, "jti": "j1",
        "sid": "s1", "acr": "nist-aal2", "email": "alice@example.com", "device_id": "d1", "scope": "read",
    }  # fmt: skip
    token = jws.serialize_compact(
        {"alg": "ES256", "typ": "at+jwt", "kid": "idp"},
        json.dumps(claims).encode(),
        key.key,
        algorithms=["ES256"],
    )
    rcv = Receiver(ReceiverSettings(database_url="memory", delivery="poll"), store=MemoryStore())
    async with httpx.AsyncClient() as http:
        jwks = JWKSCache("http://unused.invalid/jwks", http)
        jwks.keys = PublicKeys.from_jwks({"keys": [key.public_jwk()]})
        rcv.token_validator = CompositeValidator(
            JWTAccessTokenValidator(issuer=IDP, jwks=jwks, audience="api"), None
        )

        sent: list[int] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})

        async def send(message: Any) -> None:
            if message["type"] == "http.response.start":
                sent.append(message["status"])

        async def receive() -> Any:
            return {"type": "http.request", "body": b"", "more_body": False}

        mw = ContinuousAuthMiddleware(app, receiver=rcv)
        scope = {
            "type": "http", "method": "GET", "path": "/api/items", "client": ("127.0.0.1", 5000),
            "headers": [
                (b"host", b"api.example"), (b"user-agent", b"bench/1.0"), (b"accept", b"*/*"),
                (b"authorization", f"Bearer {token}".encode()),
            ],
        }  # fmt: skip
        await mw(dict(scope), receive, send)  # validate once: the token is cached from here
        assert sent == [200], sent

        async def run(target: Any) -> list[float]:
            out = []
            pc = time.perf_counter_ns
            for _ in range(n):
                s = dict(scope)
                t = pc()
                await target(s, receive, send)
                out.append((pc() - t) / 1000)
            return out

        for _ in range(2):  # warm-up, then alternate to share any drift
            await run(app)
            await run(mw)
        bare, with_mw = [], []
        for _ in range(3):
            bare += await run(app)
            with_mw += await run(mw)
        assert set(sent) == {200}

        # The state check alone.
        from receiver.state import CUTOFF, Mutation, TokenSubjects
        from ssf.subjects import Subject

        state = rcv.state
        for i in range(200_000):
            state.apply(Mutation(Subject.opaque(f"sid-{i}"), CUTOFF, math.inf, 1.0))
            state.apply(Mutation(Subject.iss_sub(IDP, f"user-{i}"), CUTOFF, 1.0, 1.0))
        entry = rcv.tokens.get(token)
        assert entry is not None
        ts = TokenSubjects.from_claims(claims)
        loops = 200_000
        empty = timeit.timeit("pass", number=loops)
        cached = timeit.timeit("e.gen != s.generation", globals={"e": entry, "s": state}, number=loops)
        full = timeit.timeit("s.evaluate(t, 100.0)", globals={"s": state, "t": ts}, number=loops)
        cx = Subject.complex(user=Subject.iss_sub(IDP, "bob"), device=Subject.opaque("d9"))
        state.apply(Mutation(cx, CUTOFF, 5.0, 5.0))
        state.apply(
            Mutation(
                Subject.complex(user=Subject.iss_sub(IDP, "alice"), device=Subject.opaque("dz")),
                CUTOFF,
                5.0,
                5.0,
            )
        )
        full_cx = timeit.timeit("s.evaluate(t, 100.0)", globals={"s": state, "t": ts}, number=loops)
    return {
        "requests": len(bare),
        "bare_p50_us": round(statistics.median(bare), 2),
        "middleware_p50_us": round(statistics.median(with_mw), 2),
        "added_p50_us": round(statistics.median(with_mw) - statistics.median(bare), 2),
        "added_p99_us": round(_pct(with_mw, 99) - _pct(bare, 99), 2),
        "state_entries": len(state.cutoffs),
        "state_check_cached_ns": round((cached - empty) / loops * 1e9, 1),
        "state_evaluate_ns": round((full - empty) / loops * 1e9, 1),
        "state_evaluate_with_complex_ns": round((full_cx - empty) / loops * 1e9, 1),
    }


# --- signing helpers ----------------------------------------------------------------------------
def _sign_sets(alg: str, n: int) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    from ssf.events import SessionRevoked
    from ssf.keys import generate_signing_key
    from ssf.set import SecurityEventToken, sign_set
    from ssf.subjects import Subject

    key = generate_signing_key(alg, kid=f"bench-{alg}")
    now = int(time.time())
    out = []
    for i in range(n):
        jti = f"{alg}-{i:07d}-{os.getpid()}"
        subject = Subject.opaque(f"sid-{i}") if i % 2 else Subject.iss_sub(IDP, f"user-{i}")
        t = SecurityEventToken.create(
            iss=ISS, aud=AUD, sub_id=subject, event=SessionRevoked(event_timestamp=now), jti=jti, iat=now
        )
        out.append((jti, sign_set(t, key)))
    return {"keys": [key.public_jwk()]}, out


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited: {proc.args}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- push -----------------------------------------------------------------------------------------
def _serve_baseline(port: int) -> None:
    """Subprocess: the floor: uvicorn + a bare Starlette route reading the body, answering 202."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def push(request: Request) -> Response:
        await request.body()
        return Response(status_code=202)

    async def health(request: Request) -> Response:
        return Response(b"{}", media_type="application/json")

    app = Starlette(routes=[Route("/ssf/push", push, methods=["POST"]), Route("/health", health)])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


def _serve_receiver(
    port: int, jwks_file: str, db_url: str, log_level: str = "off", http: str = "receiver"
) -> None:
    """Subprocess: the receiver service, configured with the bench transmitter's keys, on the
    HTTP protocol ``ssf receiver serve`` uses (``http="uvicorn"``: uvicorn's httptools one).

    ``log_level`` other than ``off``: JSON logs as ``ssf receiver serve`` writes them by default
    (one line per SET at ``info``), to /dev/null, so their cost is in the figure.
    """
    import uvicorn

    from receiver.app import create_app
    from receiver.core import Receiver
    from receiver.settings import ReceiverSettings
    from ssf.keys import PublicKeys

    settings = ReceiverSettings(database_url=db_url, push_authorization=PUSH_AUTH)
    rcv = Receiver(settings)
    rcv.configure(ISS, PublicKeys.from_jwks(json.loads(Path(jwks_file).read_text())), audience=AUD)
    app = create_app(settings, receiver=rcv, protected_demo=False)
    log_config: Any = uvicorn.config.LOGGING_CONFIG
    if log_level != "off":
        from ssfcli.logs import configure_logging

        configure_logging("json", log_level, stream=open(os.devnull, "w"))
        log_config = None
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http=app.http_protocol if http == "receiver" else "httptools",
        access_log=False,
        log_level="warning",
        log_config=log_config,
    )


class _PushConn(asyncio.Protocol):
    """One keep-alive connection of the raw load generator: one request in flight at a time.

    Requests are pre-built bytes (request line, headers and the pre-signed SET), so the
    generator's CPU per request is a write, a small parse and two clock reads (aiohttp costs
    several times that; perf-anchors c), and the figure measures the receiver, not the client.
    """

    def __init__(self, load: _RawLoad) -> None:
        self.load = load
        self.buf = b""
        self.sent_at = 0.0
        self.transport: Any = None  # uvloop's transport is not an asyncio.Transport subclass
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._next()

    def _next(self) -> None:
        req = self.load.take()
        assert self.transport is not None
        if req is None:
            self.transport.close()
            return
        self.sent_at = time.perf_counter()
        self.transport.write(req)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].lower()
        i = head.find(b"\r\ncontent-length:")
        if i < 0:  # every answer of the push endpoint carries a length; anything else is a fault
            self.closed.set_exception(RuntimeError(f"response without content-length: {head[:200]!r}"))
            self.transport.close()
            return
        j = head.find(b"\r\n", i + 2)
        length = int(head[i + 17 : j if j >= 0 else None])
        if len(self.buf) < end + 4 + length:
            return
        self.load.done(int(head[9:12]), time.perf_counter() - self.sent_at)
        self.buf = self.buf[end + 4 + length :]
        self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed.done():
            return
        if self.load.pos < len(self.load.requests) or self.buf:
            self.closed.set_exception(RuntimeError(f"the server closed a connection ({exc})"))
        else:
            self.closed.set_result(None)


class _RawLoad:
    """Pre-built POSTs shared by C connections; statuses and per-request latencies."""

    def __init__(self, requests: list[bytes]) -> None:
        self.requests = requests
        self.pos = 0
        self.statuses: dict[int, int] = {}
        self.latencies: list[float] = []

    def take(self) -> bytes | None:
        if self.pos >= len(self.requests):
            return None
        self.pos += 1
        return self.requests[self.pos - 1]

    def done(self, status: int, latency: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.latencies.append(latency)


def _push_requests(port: int, path: str, sets: list[tuple[str, str]]) -> list[bytes]:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/secevent+jwt\r\nAccept: application/json\r\n"
        f"Authorization: {PUSH_AUTH}\r\n"
    ).encode()
    return [head + b"Content-Length: %d\r\n\r\n" % len(t) + t.encode() for _, t in sets]


async def _load_raw(port: int, requests: list[bytes], concurrency: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    load = _RawLoad(requests)
    conns: list[_PushConn] = []
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(min(concurrency, len(requests))):
        _, proto = await loop.create_connection(lambda: _PushConn(load), "127.0.0.1", port)
        conns.append(proto)
    await asyncio.gather(*(c.closed for c in conns))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"elapsed": elapsed, "cpu": cpu, "statuses": load.statuses, "latencies": load.latencies}


async def _load_aiohttp(url: str, sets: list[tuple[str, str]], concurrency: int) -> dict[str, Any]:
    import aiohttp

    statuses: dict[int, int] = {}
    latencies: list[float] = []
    it = iter(sets)
    headers = {
        "Content-Type": "application/secevent+jwt",
        "Accept": "application/json",
        "Authorization": PUSH_AUTH,
    }
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def worker() -> None:
            for _jti, token in it:
                t = time.perf_counter()
                async with session.post(url, data=token, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                latencies.append(time.perf_counter() - t)

        # warm the connections
        async with session.get(url.replace("/ssf/push", "/health")) as r:
            await r.read()
        c0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"elapsed": elapsed, "cpu": cpu, "statuses": statuses, "latencies": latencies}


def _run_load(port: int, sets: list[tuple[str, str]], concurrency: int, generator: str) -> dict[str, Any]:
    """Drive the push endpoint on ``port`` with every SET once; the generator runs on uvloop."""
    import uvloop

    if generator == "aiohttp":
        return uvloop.run(_load_aiohttp(f"http://127.0.0.1:{port}/ssf/push", sets, concurrency))
    requests = _push_requests(port, "/ssf/push", sets)  # built before the clock starts
    return uvloop.run(_load_raw(port, requests, concurrency))


def _push(
    alg: str,
    n: int,
    concurrency: int,
    store: str,
    workdir: Path,
    generator: str,
    baseline: bool,
    server_log: str = "off",
    server_http: str = "receiver",
) -> dict[str, Any]:
    import httpx

    from tests.support.services import free_port

    jwks, sets = _sign_sets(alg, n)
    jwks_file = workdir / f"jwks-{alg}.json"
    jwks_file.write_text(json.dumps(jwks))
    db = "memory" if store == "memory" else f"sqlite:///{workdir / f'push-{alg}.db'}"
    port = free_port()
    proc = subprocess.Popen(
        [
            *(str(BIN / "python"), "-m", "bench.receiver_bench", "_serve-receiver"),
            *(str(port), str(jwks_file), db, server_log, server_http),
        ]
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(base + "/health", proc)
        cpu0 = _cpu_seconds(proc.pid)
        run = _run_load(port, sets, concurrency, generator)
        cpu = _cpu_seconds(proc.pid) - cpu0
        health = httpx.get(base + "/health").json()
    finally:
        proc.terminate()
        proc.wait(15)
    elapsed, lat = run["elapsed"], run["latencies"]
    out: dict[str, Any] = {
        "alg": alg, "n": n, "concurrency": concurrency, "store": store, "generator": generator,
        "server_log": server_log, "server_http": server_http,
        "sets_per_s": round(n / elapsed), "server_cpu_us_per_set": round(cpu / n * 1e6, 1),
        "sets_per_server_cpu_s": round(n / cpu) if cpu else None,
        "generator_cpu_us_per_set": round(run["cpu"] / n * 1e6, 1),
        "request_p50_ms": round(_pct(lat, 50) * 1000, 2), "request_p99_ms": round(_pct(lat, 99) * 1000, 2),
        "statuses": run["statuses"], "receiver_accepted": health["stats"].get("accepted", 0),
    }  # fmt: skip
    if baseline:
        # The floor in the same conditions: uvicorn + a bare route, same load generator.
        bport = free_port()
        base_proc = subprocess.Popen(
            [str(BIN / "python"), "-m", "bench.receiver_bench", "_serve-baseline", str(bport)]
        )
        try:
            _wait_http(f"http://127.0.0.1:{bport}/health", base_proc)
            bcpu0 = _cpu_seconds(base_proc.pid)
            brun = _run_load(bport, sets, concurrency, generator)
            bcpu = _cpu_seconds(base_proc.pid) - bcpu0
        finally:
            base_proc.terminate()
            base_proc.wait(15)
        out["bare_route_req_per_s"] = round(n / brun["elapsed"])
        out["bare_route_cpu_us_per_req"] = round(bcpu / n * 1e6, 1)
    return out


# --- poll -----------------------------------------------------------------------------------------
def _serve_transmitter(port: int, sets_file: str) -> None:
    """Subprocess: a minimal RFC 8936 poll endpoint over a fixed list of SETs."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    sets: list[list[str]] = json.loads(Path(sets_file).read_text())
    pos = 0
    acked = 0

    async def poll(request: Request) -> Response:
        nonlocal pos, acked
        body = json.loads(await request.body())
        acked += len(body.get("ack", ()))
        limit = body.get("maxEvents")
        limit = len(sets) if limit is None else int(limit)
        chunk = sets[pos : pos + limit]
        pos += len(chunk)
        out: dict[str, Any] = {"sets": dict(chunk)}
        if pos < len(sets):
            out["moreAvailable"] = True
        return Response(json.dumps(out), media_type="application/json")

    async def stats(request: Request) -> Response:
        return JSONResponse({"served": pos, "acked": acked})

    app = Starlette(routes=[Route("/poll", poll, methods=["POST"]), Route("/stats", stats)])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


async def _drain(url: str, jwks: dict[str, Any], n: int, db: str) -> tuple[float, float, int]:
    import httpx

    from receiver.client import StaticToken, TransmitterClient
    from receiver.core import Receiver
    from receiver.poll import Poller
    from receiver.settings import ReceiverSettings
    from ssf.keys import PublicKeys
    from ssf.metadata import TransmitterMetadata

    rcv = Receiver(ReceiverSettings(database_url=db, delivery="poll", poll_max_events=1000))
    await rcv.open()
    rcv.configure(ISS, PublicKeys.from_jwks(jwks), audience=AUD)
    async with httpx.AsyncClient(timeout=60) as http:
        client = TransmitterClient(TransmitterMetadata(issuer=ISS), http, StaticToken("bench"))
        poller = Poller(rcv, client, url + "/poll?stream_id=bench")
        t0, c0 = time.perf_counter(), time.process_time()
        applied = 0
        while applied < n:
            count, _more = await poller.poll_once()
            applied += count
        await poller.flush_acks()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    accepted = rcv.stats["accepted"]
    await rcv.stop()
    return elapsed, cpu, accepted


def _poll(alg: str, n: int, store: str, workdir: Path) -> dict[str, Any]:
    import httpx

    from tests.support.services import free_port

    jwks, sets = _sign_sets(alg, n)
    sets_file = workdir / f"sets-{alg}.json"
    sets_file.write_text(json.dumps(sets))
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "python"), "-m", "bench.receiver_bench", "_serve-transmitter", str(port), str(sets_file)]
    )
    db = "memory" if store == "memory" else f"sqlite:///{workdir / f'poll-{alg}.db'}"
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(base + "/stats", proc)
        try:
            import uvloop

            elapsed, cpu, accepted = uvloop.run(_drain(base, jwks, n, db))
        except ImportError:
            elapsed, cpu, accepted = asyncio.run(_drain(base, jwks, n, db))
        stats = httpx.get(base + "/stats").json()
    finally:
        proc.terminate()
        proc.wait(15)
    return {
        "alg": alg, "n": n, "store": store, "sets_per_s": round(n / elapsed),
        "receiver_cpu_us_per_set": round(cpu / n * 1e6, 1), "sets_per_receiver_cpu_s": round(n / cpu),
        "receiver_accepted": accepted, "transmitter_acked": stats["acked"],
    }  # fmt: skip


# --- memory ---------------------------------------------------------------------------------------
def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _memory_child(n: int) -> None:
    import math

    from receiver.state import CUTOFF, Mutation, RevocationState
    from ssf.subjects import Subject

    state = RevocationState()
    gc.collect()
    before = _rss_kb()
    t0 = time.perf_counter()
    for i in range(n):
        state.apply(Mutation(Subject.opaque(f"session-{i:09d}"), CUTOFF, math.inf, 1.0))
    for i in range(n):
        state.apply(
            Mutation(Subject.iss_sub("https://idp.example.com", f"user-{i:09d}"), CUTOFF, 1.7e9 + i, 1.0)
        )
    elapsed = time.perf_counter() - t0
    gc.collect()
    after = _rss_kb()
    counts = state.counts()
    print(json.dumps({
        "revoked_sessions": counts["revoked_sessions"], "user_cutoffs": counts["cutoffs"],
        "rss_growth_mb": round((after - before) / 1024, 1), "apply_per_s": round(2 * n / elapsed),
    }))  # fmt: skip


def _memory(n: int) -> dict[str, Any]:
    out = subprocess.run(
        [str(BIN / "python"), "-m", "bench.receiver_bench", "_memory", str(n)],
        capture_output=True,
        check=True,
    )
    return dict(json.loads(out.stdout))


# --- end to end with the project's transmitter ------------------------------------------------------
SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"


def _latency(mode: str, n: int, workdir: Path) -> dict[str, Any]:
    """Publish (``POST /events`` on ``ssf transmitter serve``) → the receiver refusing the next request.

    Three processes: the transmitter, the receiver (``ssf receiver serve``, push or poll) and
    this driver, which also serves the resource's AS JWKS. Per event: a fresh session token is
    accepted (200), the session is revoked through the publish API, and from the moment the
    publish call returns the driver repeats the request until it gets 401.
    """
    import httpx
    from joserfc import jws
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from ssf.keys import generate_signing_key
    from tests.support.services import free_port, serve
    from transmitter.service import Transmitter
    from transmitter.settings import TransmitterSettings

    work = workdir / f"e2e-{mode}"
    work.mkdir()
    tport, rport = free_port(), free_port()
    tbase, rbase = f"http://127.0.0.1:{tport}", f"http://127.0.0.1:{rport}"
    tenv = {
        "SSF_TRANSMITTER_ISSUER": tbase,
        "SSF_TRANSMITTER_DEV_MODE": "1",
        "SSF_TRANSMITTER_SECRET_FILE": str(work / "secret"),
        "SSF_TRANSMITTER_SIGNING_ALG": "ES256",
        "SSF_TRANSMITTER_DATABASE_URL": f"sqlite:///{work / 'tx.db'}",
        "SSF_TRANSMITTER_MIN_VERIFICATION_INTERVAL": "0",
        "SSF_TRANSMITTER_LONG_POLL_TIMEOUT": "20",
    }
    tx = Transmitter(TransmitterSettings(**{k[16:].lower(): v for k, v in tenv.items()}))
    rinfo, rsecret = tx.auth.add_client("bench-receiver-" + mode, ["ssf.read", "ssf.manage"])
    pinfo, _ = tx.auth.add_client("bench-publisher-" + mode, ["ssf.publish"])
    pub_token = tx.auth.issue_token(pinfo, "ssf.publish")["access_token"]
    tx.close()

    idp_key = generate_signing_key("ES256", kid="idp")

    async def jwks_ep(request: Request) -> Response:
        return JSONResponse({"keys": [idp_key.public_jwk()]})

    procs: list[subprocess.Popen[bytes]] = []
    with serve(Starlette(routes=[Route("/jwks", jwks_ep)])) as idp:
        renv = {
            "SSF_RECEIVER_TRANSMITTER_ISSUER": tbase,
            "SSF_RECEIVER_DEV_MODE": "1",
            "SSF_RECEIVER_CLIENT_ID": rinfo.client_id,
            "SSF_RECEIVER_CLIENT_SECRET": rsecret,
            "SSF_RECEIVER_DELIVERY": mode,
            "SSF_RECEIVER_PUSH_URL": rbase + "/ssf/push",
            "SSF_RECEIVER_DATABASE_URL": f"sqlite:///{work / 'rx.db'}",
            "SSF_RECEIVER_TOKEN_ISSUER": IDP,
            "SSF_RECEIVER_TOKEN_JWKS_URL": idp + "/jwks",
            "SSF_RECEIVER_TOKEN_AUDIENCE": "api",
            "SSF_RECEIVER_POLL_TIMEOUT": "30",
        }
        try:
            procs.append(
                subprocess.Popen(
                    [str(BIN / "ssf"), "transmitter", "serve", "--port", str(tport)],
                    env={**os.environ, **tenv},
                )
            )
            _wait_http(tbase + "/jwks.json", procs[0])
            procs.append(
                subprocess.Popen(
                    [str(BIN / "ssf"), "receiver", "serve", "--port", str(rport)], env={**os.environ, **renv}
                )
            )
            http = httpx.Client(timeout=30)
            deadline = time.monotonic() + 60
            while True:
                if procs[1].poll() is not None:
                    raise RuntimeError("the receiver exited")
                try:
                    h = http.get(rbase + "/health").json()
                    if h.get("ready") and h.get("verified"):
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the receiver did not become ready and verified")
                time.sleep(0.1)
            lat: list[float] = []
            probes = 0
            for i in range(n):
                now = int(time.time())
                claims = {
                    "iss": IDP,
                    "sub": f"u{i}",
                    "aud": "api",
                    "iat": now,
                    "exp": now + 600,
                    "sid": f"sid-{i}",
                }
                token = jws.serialize_compact(
                    {"alg": "ES256", "typ": "at+jwt", "kid": "idp"},
                    json.dumps(claims).encode(),
                    idp_key.key,
                    algorithms=["ES256"],
                )
                auth = {"Authorization": f"Bearer {token}"}
                assert http.get(rbase + "/protected/whoami", headers=auth).status_code == 200
                r = http.post(
                    tbase + "/events",
                    headers={"Authorization": f"Bearer {pub_token}"},
                    json={"subject": {"format": "opaque", "id": f"sid-{i}"}, "events": {SESSION_REVOKED: {}}},
                )
                r.raise_for_status()
                t1 = time.perf_counter()
                while http.get(rbase + "/protected/whoami", headers=auth).status_code != 401:
                    probes += 1
                    if time.perf_counter() - t1 > 30:
                        raise RuntimeError("the session was never refused")
                lat.append((time.perf_counter() - t1) * 1000)
            http.close()
        finally:
            for p in reversed(procs):  # the receiver first: its long poll holds the transmitter
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
    return {
        "mode": mode, "events": n, "p50_ms": round(_pct(lat, 50), 2), "p99_ms": round(_pct(lat, 99), 2),
        "max_ms": round(max(lat), 2), "probe_requests_while_waiting": probes,
    }  # fmt: skip


# --- main -----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "_serve-receiver":
        _serve_receiver(int(args[1]), *args[2:4], *args[4:6])
        return 0
    if args and args[0] == "_serve-baseline":
        _serve_baseline(int(args[1]))
        return 0
    if args and args[0] == "_serve-transmitter":
        _serve_transmitter(int(args[1]), args[2])
        return 0
    if args and args[0] == "_memory":
        _memory_child(int(args[1]))
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.receiver_bench", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=10_000, help="SETs per throughput run")
    p.add_argument("--only", default="middleware,push,poll,latency,memory")
    p.add_argument("--algs", default="ES256,RS256")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--store", choices=["sqlite", "memory"], default="sqlite")
    p.add_argument(
        "--generator",
        choices=["raw", "aiohttp"],
        default="raw",
        help="push load generator: pre-built requests on raw asyncio connections, or aiohttp",
    )
    p.add_argument("--no-baseline", action="store_true", help="skip the bare-route floor run")
    p.add_argument(
        "--server-log",
        choices=["off", "info", "warning"],
        default="off",
        help="push server logging: off, or JSON at a level as 'ssf receiver serve' (default info)",
    )
    p.add_argument(
        "--server-http",
        choices=["receiver", "uvicorn"],
        default="receiver",
        help="push server HTTP protocol: the receiver's (pushes off the socket, as 'ssf receiver "
        "serve'), or uvicorn's httptools one for every request",
    )
    p.add_argument("--memory-n", type=int, default=1_000_000)
    p.add_argument("--requests", type=int, default=20_000, help="middleware timing loop size")
    p.add_argument("--events", type=int, default=1000, help="events per end-to-end latency run")
    opts = p.parse_args(args)
    parts = set(opts.only.split(","))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if parts & {"middleware", "state"}:
            results["middleware"] = asyncio.run(_middleware(opts.requests))
            print("middleware:", json.dumps(results["middleware"]), flush=True)
        for alg in opts.algs.split(","):
            if "push" in parts:
                r = _push(
                    *(alg, opts.n, opts.concurrency, opts.store, work),
                    *(opts.generator, not opts.no_baseline, opts.server_log, opts.server_http),
                )
                results[f"push_{alg}"] = r
                print(f"push {alg}:", json.dumps(r), flush=True)
            if "poll" in parts:
                r = _poll(alg, opts.n, opts.store, work)
                results[f"poll_{alg}"] = r
                print(f"poll {alg}:", json.dumps(r), flush=True)
        for mode in ("push", "poll"):
            if "latency" in parts:
                r = _latency(mode, opts.events, work)
                results[f"latency_{mode}"] = r
                print(f"latency {mode}:", json.dumps(r), flush=True)
        if "memory" in parts:
            results["memory"] = _memory(opts.memory_n)
            print("memory:", json.dumps(results["memory"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
