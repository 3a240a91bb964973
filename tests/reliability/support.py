"""Real pieces for the reliability tests and the cluster bench.

- :class:`TcpProxy`: a loopback TCP proxy we control, put in front of PostgreSQL, Redis or a
  receiver, so a test can take a backend "away" (refuse and reset every connection) or
  swallow responses without touching the shared servers other tests use.
- :class:`TxCluster`: several ``ssf transmitter serve`` processes on one PostgreSQL schema,
  started, SIGKILLed and restarted by index.
- :class:`RecordingReceiver`: a push endpoint that runs the real receiver engine
  (:class:`receiver.core.Receiver`: signature, claims, ``jti`` dedupe, state) and records
  every delivery, what was applied, per-subject order and overlapping pushes per stream; a
  fault script can make it answer 500, 503 + Retry-After, 429 or hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver.core import Receiver
from receiver.settings import ReceiverSettings
from receiver.store import MemoryStore
from ssf.keys import PublicKeys
from ssf.set import decode_unverified
from tests.support.services import free_port, serve
from transmitter.service import Transmitter
from transmitter.settings import TransmitterSettings

SSF = str(Path(sys.executable).with_name("ssf"))
SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
CHAOS = os.environ.get("SSF_CHAOS", "") not in ("", "0")


def wait_until(pred: Callable[[], Any], timeout: float = 20, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in time: {what}")
        time.sleep(interval)


# --- a TCP proxy we can cut ---------------------------------------------------------------
class TcpProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<target>. Modes:

    ``pass``: forward; ``down``: reset every open connection and every new one at once (the
    backend is gone); ``swallow``: forward requests but reset the client connection as soon
    as the backend answers (the peer did the work, the caller never hears of it).
    """

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self.mode = "pass"
        self.swallowed = 0
        self._loop = asyncio.new_event_loop()
        self._conns: set[asyncio.StreamWriter] = set()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        fut.result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._reset_all()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def set_mode(self, mode: str) -> None:
        assert mode in ("pass", "down", "swallow")

        def apply() -> None:
            self.mode = mode
            if mode == "down":
                self._reset_all()

        self._loop.call_soon_threadsafe(apply)
        time.sleep(0.02)

    def _reset_all(self) -> None:
        for w in list(self._conns):
            _reset(w)
        self._conns.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self._forward(reader, writer)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "down":
            _reset(writer)
            return
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            _reset(writer)
            return
        self._conns.update((writer, up_w))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, answer: bool) -> None:
            try:
                while data := await src.read(65536):
                    if answer and self.mode == "swallow":
                        self.swallowed += 1
                        _reset(writer)
                        _reset(up_w)
                        return
                    dst.write(data)
                    await dst.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pipe(reader, up_w, False), pipe(up_r, writer, True))
        self._conns.discard(writer)
        self._conns.discard(up_w)


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(Exception):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()


# --- PostgreSQL schemas -------------------------------------------------------------------
@contextlib.contextmanager
def pg_schema(url: str) -> Iterator[str]:
    """A fresh schema, dropped afterwards."""
    schema = "rel_" + secrets.token_hex(6)
    yield schema
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


# --- transmitter processes ----------------------------------------------------------------
@dataclass
class TxCluster:
    """``n`` transmitter processes sharing one database; all answer for the same issuer."""

    database_url: str
    schema: str | None
    tmp: Path
    n: int = 2
    extra_env: dict[str, str] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    receiver_token: str = ""
    publisher_token: str = ""
    audience: str = ""

    def __post_init__(self) -> None:
        self.ports = [free_port() for _ in range(self.n)]
        self.secret = secrets.token_urlsafe(24)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}"

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    def env(self, i: int) -> dict[str, str]:
        env = {
            **os.environ,
            "SSF_TRANSMITTER_ISSUER": self.issuer,
            "SSF_TRANSMITTER_DEV_MODE": "1",
            "SSF_TRANSMITTER_DATABASE_URL": self.database_url,
            "SSF_TRANSMITTER_SECRET_KEY": self.secret,
            "SSF_TRANSMITTER_SIGNING_ALG": "ES256",
            "SSF_TRANSMITTER_LEASE_SECONDS": "1.5",
            "SSF_TRANSMITTER_WORKER_POLL_INTERVAL": "0.2",
            "SSF_TRANSMITTER_MAINTENANCE_INTERVAL": "1",
            "SSF_TRANSMITTER_RETRY_BASE_SECONDS": "0.05",
            "SSF_TRANSMITTER_RETRY_MAX_SECONDS": "0.5",
            "SSF_TRANSMITTER_PUSH_TIMEOUT": "2",
            "SSF_TRANSMITTER_LONG_POLL_TIMEOUT": "10",
            "SSF_TRANSMITTER_MIN_VERIFICATION_INTERVAL": "0",
            "SSF_TRANSMITTER_MAX_STREAMS_PER_CLIENT": "50",
            "SSF_TRANSMITTER_INSTANCE_ID": f"tx{i}-{secrets.token_hex(3)}",
            **self.extra_env,
        }
        if self.schema:
            env["SSF_TRANSMITTER_DATABASE_SCHEMA"] = self.schema
        return env

    def settings(self) -> TransmitterSettings:
        env = self.env(0)
        values = {k[16:].lower(): v for k, v in env.items() if k.startswith("SSF_TRANSMITTER_")}
        return TransmitterSettings(_env_file=None, **values)  # type: ignore[call-arg]

    def prepare(self) -> None:
        """Schema, signing key and two clients, made once before any instance starts."""
        tx = Transmitter(self.settings())
        try:
            rx_info, _ = tx.auth.add_client("rx-" + secrets.token_hex(3))
            self.audience = rx_info.audience
            self.receiver_token = tx.auth.issue_token(rx_info, None)["access_token"]
            pub_info, _ = tx.auth.add_client("idp-" + secrets.token_hex(3), ["ssf.publish"])
            self.publisher_token = tx.auth.issue_token(pub_info, None)["access_token"]
        finally:
            tx.close()

    def start(self, i: int, wait: bool = True) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"tx{i}.log", "ab")
        proc = subprocess.Popen(
            [SSF, "transmitter", "serve", "--port", str(self.ports[i])],
            env=self.env(i),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        log.close()
        self.procs[i] = proc
        if wait:
            self.wait_up(i)
        return proc

    def wait_up(self, i: int) -> None:
        proc = self.procs[i]

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"transmitter {i} exited: {self.log(i)[-2000:]}")
            try:
                return httpx.get(self.url(i) + "/jwks.json", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        # generous: on a loaded 2-core machine an interpreter start can take many seconds
        wait_until(up, timeout=120, interval=0.1, what=f"transmitter {i} up")

    def start_all(self) -> None:
        for i in range(self.n):
            self.start(i, wait=False)
        for i in range(self.n):
            self.wait_up(i)

    def log(self, i: int) -> str:
        path = self.tmp / f"tx{i}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self, i: int) -> None:
        proc = self.procs.pop(i, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def stop_all(self) -> None:
        for proc in list(self.procs.values()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for i, proc in list(self.procs.items()):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            self.procs.pop(i, None)

    def alive(self) -> list[int]:
        return [i for i, p in list(self.procs.items()) if p.poll() is None]

    # --- HTTP helpers ---------------------------------------------------------------------
    def create_push_stream(self, http: httpx.Client, endpoint: str, i: int = 0, **delivery: Any) -> str:
        r = http.post(
            self.url(i) + "/ssf/streams",
            headers={"Authorization": f"Bearer {self.receiver_token}"},
            json={
                "events_requested": [SESSION_REVOKED],
                "delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": endpoint, **delivery},
            },
        )
        assert r.status_code == 201, r.text
        return str(r.json()["stream_id"])

    def create_poll_stream(self, http: httpx.Client, i: int = 0) -> str:
        r = http.post(
            self.url(i) + "/ssf/streams",
            headers={"Authorization": f"Bearer {self.receiver_token}"},
            json={"events_requested": [SESSION_REVOKED]},
        )
        assert r.status_code == 201, r.text
        return str(r.json()["stream_id"])

    def publish(self, http: httpx.Client, i: int, subject: str, txn: str | None = None) -> httpx.Response:
        body: dict[str, Any] = {
            "subject": {"format": "email", "email": subject},
            "events": {SESSION_REVOKED: {"event_timestamp": int(time.time())}},
        }
        if txn is not None:
            body["txn"] = txn
        return http.post(
            self.url(i) + "/events", headers={"Authorization": f"Bearer {self.publisher_token}"}, json=body
        )

    def jwks(self) -> dict[str, Any]:
        return dict(httpx.get(self.issuer + "/jwks.json", timeout=5).json())


@contextlib.contextmanager
def tx_cluster(database_url: str, tmp: Path, n: int, **env: str) -> Iterator[TxCluster]:
    with pg_schema(database_url) as schema:
        cluster = TxCluster(
            database_url, schema, tmp, n, {f"SSF_TRANSMITTER_{k.upper()}": v for k, v in env.items()}
        )
        cluster.prepare()
        try:
            yield cluster
        finally:
            cluster.stop_all()


# --- a recording push receiver around the real receiver engine -----------------------------
@dataclass
class Applied:
    jti: str
    stream: str
    subject: str
    txn: str | None
    at: float
    event_type: str = ""
    event: dict[str, Any] = field(default_factory=dict)


@dataclass
class RecordingReceiver:
    """``POST /push/{stream}``: validates and applies through :class:`Receiver`; records."""

    issuer: str
    audience: str
    url: str = ""
    deliveries: int = 0
    applied: list[Applied] = field(default_factory=list)
    apply_count: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    inflight: Counter[str] = field(default_factory=Counter)
    #: Pushes that arrived while another push of the same stream was still being handled.
    overlap_by_stream: Counter[str] = field(default_factory=Counter)
    #: (stream, time, status) of every answer, for the backoff checks.
    answers: list[tuple[str, float, int]] = field(default_factory=list)
    #: ``fault(stream, n)`` → None to answer normally, else (status, headers, delay seconds).
    fault: Callable[[str, int], tuple[int, dict[str, str], float] | None] | None = None
    delay: float = 0.0
    engine: Receiver | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set_keys(self, jwks: dict[str, Any]) -> None:
        assert self.engine is not None
        self.engine.configure(self.issuer, PublicKeys.from_jwks(jwks), audience=self.audience)

    @property
    def overlaps(self) -> int:
        return sum(self.overlap_by_stream.values())

    def jtis(self) -> set[str]:
        with self.lock:
            return set(self.apply_count)

    def duplicates_applied(self) -> int:
        return sum(n - 1 for n in self.apply_count.values() if n > 1)

    def order_violations(self) -> int:
        """Per stream and subject, the ``txn`` sequence numbers of first applications increase."""
        last: dict[tuple[str, str], int] = {}
        bad = 0
        for a in self.applied:
            if a.txn is None or "#" not in a.txn:
                continue
            subject, seq = a.txn.rsplit("#", 1)
            key = (a.stream, subject)
            if int(seq) < last.get(key, -1):
                bad += 1
            last[key] = max(last.get(key, -1), int(seq))
        return bad

    def app(self) -> Starlette:
        async def push(request: Request) -> Response:
            stream = request.path_params["stream"]
            body = await request.body()
            with self.lock:
                self.deliveries += 1
                n = self.deliveries
                self.inflight[stream] += 1
                if self.inflight[stream] > 1:
                    self.overlap_by_stream[stream] += 1
            try:
                if self.delay:
                    await asyncio.sleep(self.delay)
                if self.fault is not None:
                    action = self.fault(stream, n)
                    if action is not None:
                        status, headers, wait = action
                        if wait:
                            await asyncio.sleep(wait)
                        self.answers.append((stream, time.monotonic(), status))
                        return JSONResponse({"err": "unavailable", "description": "fault"}, status, headers)
                assert self.engine is not None
                try:
                    new = await self.engine.receive(body)
                except Exception as exc:  # a refused SET: recorded, answered 400
                    self.refused[type(exc).__name__] += 1
                    self.answers.append((stream, time.monotonic(), 400))
                    return JSONResponse({"err": "invalid_request", "description": str(exc)}, 400)
                if new:
                    _, claims = decode_unverified(body)
                    sub = claims.get("sub_id") or {}
                    ((etype, payload),) = dict(claims.get("events") or {"": {}}).items()
                    with self.lock:
                        self.apply_count[claims["jti"]] += 1
                        self.applied.append(
                            Applied(
                                claims["jti"],
                                stream,
                                json.dumps(sub),
                                claims.get("txn"),
                                time.time(),
                                etype,
                                payload,
                            )
                        )
                self.answers.append((stream, time.monotonic(), 202))
                return Response(status_code=202)
            finally:
                with self.lock:
                    self.inflight[stream] -= 1

        @contextlib.asynccontextmanager
        async def lifespan(_app: Starlette) -> AsyncIterator[None]:
            self.engine = Receiver(
                ReceiverSettings(database_url="memory", delivery="push", out_of_band=True),
                store=MemoryStore(),
            )
            await self.engine.open()
            yield
            await self.engine.stop()

        return Starlette(routes=[Route("/push/{stream}", push, methods=["POST"])], lifespan=lifespan)


@contextlib.contextmanager
def recording_receiver(issuer: str, audience: str) -> Iterator[RecordingReceiver]:
    rec = RecordingReceiver(issuer, audience)
    with serve(rec.app()) as url:
        rec.url = url
        yield rec


def per_subject_txn(subject: str, seq: int) -> str:
    return f"{subject}#{seq}"


def group_by(items: list[Applied]) -> dict[str, list[Applied]]:
    out: dict[str, list[Applied]] = defaultdict(list)
    for a in items:
        out[a.stream].append(a)
    return out
