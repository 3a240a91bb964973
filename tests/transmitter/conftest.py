"""Fixtures: a real transmitter on a loopback port (SQLite in tmp_path, and PostgreSQL in a
schema of its own), a push sink that records what it receives, and client helpers."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ssf.keys import PublicKeys
from ssf.set import SecurityEventToken, SETVerifier
from tests.support.services import free_port, require_postgres, serve
from transmitter.app import create_app
from transmitter.service import Transmitter
from transmitter.settings import TransmitterSettings

SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
CREDENTIAL_CHANGE = "https://schemas.openid.net/secevent/caep/event-type/credential-change"


@pytest.fixture(params=["sqlite", "postgres"])
def db_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_config(db_kind: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Database settings: a fresh SQLite file, or a fresh PostgreSQL schema dropped afterwards."""
    if db_kind == "sqlite":
        yield {"database_url": f"sqlite:///{tmp_path / 'tx.db'}"}
        return
    url = require_postgres()
    schema = "t_" + secrets.token_hex(6)
    yield {"database_url": url, "database_schema": schema}
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def make_settings(tmp_path: Path, db: dict[str, Any], port: int, **over: Any) -> TransmitterSettings:
    values: dict[str, Any] = {
        "issuer": f"http://127.0.0.1:{port}",
        "dev_mode": True,
        "secret_file": tmp_path / "secret",
        "signing_alg": "ES256",
        "min_verification_interval": 0,
        "long_poll_timeout": 5,
        "worker_poll_interval": 0.2,
        "maintenance_interval": 0.3,
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 0.3,
        "retry_cap_seconds": 60,
        "lease_seconds": 3,
        "push_timeout": 3,
        **db,
    }
    values.update(over)
    return TransmitterSettings(**values)


@dataclass
class Server:
    url: str
    tx: Transmitter
    http: httpx.Client

    def client(
        self, name: str | None = None, scopes: list[str] | None = None, audience: str | None = None
    ) -> str:
        """Register a client and return a bearer token for it (through the token endpoint)."""
        name = name or "rx-" + secrets.token_hex(4)
        info, secret = self.tx.auth.add_client(name, scopes, audience)
        r = self.http.post(
            self.url + "/oauth/token",
            data={"grant_type": "client_credentials", "scope": " ".join(info.scopes)},
            auth=(info.client_id, secret),
        )
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def publisher(self) -> str:
        return self.client(scopes=["ssf.publish"])

    def req(self, method: str, path: str, token: str | None, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.request(method, self.url + path, headers=headers, **kw)

    def create(self, token: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        r = self.req("POST", "/ssf/streams", token, json=body if body is not None else {})
        assert r.status_code == 201, r.text
        return dict(r.json())

    def verifier(self, audience: str | None = None) -> SETVerifier:
        jwks = self.http.get(self.url + "/jwks.json").json()
        return SETVerifier(issuer=self.url, keys=PublicKeys.from_jwks(jwks), audience=audience)

    def poll(self, token: str, stream: dict[str, Any], **body: Any) -> dict[str, Any]:
        body.setdefault("returnImmediately", True)
        r = self.http.post(
            stream["delivery"]["endpoint_url"], json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 200, r.text
        return dict(r.json())


@contextlib.contextmanager
def running(settings: TransmitterSettings, port: int) -> Iterator[Server]:
    tx = Transmitter(settings)
    app = create_app(transmitter=tx)
    with serve(app, port=port), httpx.Client(timeout=30) as http:
        yield Server(settings.issuer, tx, http)
    tx.close()


ServerFactory = Callable[..., contextlib.AbstractContextManager[Server]]


@pytest.fixture
def server_factory(tmp_path: Path, db_config: dict[str, Any]) -> ServerFactory:
    def factory(**over: Any) -> contextlib.AbstractContextManager[Server]:
        port = free_port()
        return running(make_settings(tmp_path, db_config, port, **over), port)

    return factory


@pytest.fixture
def server(server_factory: ServerFactory) -> Iterator[Server]:
    with server_factory() as srv:
        yield srv


@dataclass
class Push:
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Sink:
    """A loopback push endpoint: records every POST; answers from a script, then 202."""

    url: str = ""
    pushes: list[Push] = field(default_factory=list)
    script: collections.deque[tuple[int, dict[str, str], bytes]] = field(default_factory=collections.deque)
    default_status: int = 202
    delay: float = 0.0
    cond: threading.Condition = field(default_factory=threading.Condition)

    def tokens(self) -> list[str]:
        return [p.body.decode() for p in self.pushes]

    def wait_for(self, n: int, timeout: float = 15) -> list[Push]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.pushes) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {n} pushes, got {len(self.pushes)}")
                self.cond.wait(left)
            return list(self.pushes)

    def decoded(self, verifier: SETVerifier) -> list[SecurityEventToken]:
        return [verifier.verify(t) for t in self.tokens()]


@pytest.fixture
def sink() -> Iterator[Sink]:
    rec = Sink()

    async def endpoint(request: Request) -> Response:
        body = await request.body()
        if rec.delay:
            await asyncio.sleep(rec.delay)
        with rec.cond:
            rec.pushes.append(Push(dict(request.headers), body, time.time()))
            status, headers, content = rec.script.popleft() if rec.script else (rec.default_status, {}, b"")
            rec.cond.notify_all()
        return Response(content, status_code=status, headers=headers)

    app = Starlette(routes=[Route("/push", endpoint, methods=["POST"])])
    with serve(app) as url:
        rec.url = url + "/push"
        yield rec


def wait_until(pred: Callable[[], Any], timeout: float = 15, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def event_of(token: SecurityEventToken) -> dict[str, Any]:
    return {token.event_type: token.event.payload()}


def dumps(obj: Any) -> str:
    return json.dumps(obj)
