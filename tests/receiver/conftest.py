from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from receiver.app import create_app
from receiver.core import Receiver
from receiver.settings import ReceiverSettings
from tests.receiver.fake import AUDIENCE, CLIENT_ID, CLIENT_SECRET, FakeTransmitter
from tests.support.services import free_port, serve


@pytest.fixture
def fake_factory() -> Iterator[Callable[..., FakeTransmitter]]:
    stack = contextlib.ExitStack()

    def make(**kw: Any) -> FakeTransmitter:
        port = free_port()
        fake = FakeTransmitter(port, **kw)
        stack.enter_context(serve(fake.app, port=port))
        return fake

    with stack:
        yield make


@pytest.fixture
def fake(fake_factory: Callable[..., FakeTransmitter]) -> FakeTransmitter:
    return fake_factory()


def serve_env(fake: FakeTransmitter, port: int, **extra: str) -> dict[str, str]:
    """The environment an operator gives ``ssf receiver serve`` (as its own process) to push
    from ``fake`` to ``port``; ``extra`` adds or overrides ``SSF_RECEIVER_*`` variables."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SSF_LOG_FORMAT": "text",
        "SSF_RECEIVER_TRANSMITTER_ISSUER": fake.issuer,
        "SSF_RECEIVER_DEV_MODE": "true",
        "SSF_RECEIVER_CLIENT_ID": CLIENT_ID,
        "SSF_RECEIVER_CLIENT_SECRET": CLIENT_SECRET,
        "SSF_RECEIVER_PUSH_URL": f"http://127.0.0.1:{port}/ssf/push",
        **{"SSF_RECEIVER_" + k.upper(): v for k, v in extra.items()},
    }


def receiver_settings(fake: FakeTransmitter, tmp_path: Path, port: int, **kw: Any) -> ReceiverSettings:
    values: dict[str, Any] = {
        "transmitter_issuer": fake.issuer,
        "dev_mode": True,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "push_url": f"http://127.0.0.1:{port}/ssf/push",
        "database_url": f"sqlite:///{tmp_path}/receiver.db",
        "secret_file": tmp_path / "receiver.secret",
        "token_issuer": fake.base + "/as",
        "token_jwks_url": fake.base + "/as/jwks",
        "token_audience": AUDIENCE,
        "jwks_min_refresh_interval": 0.2,
        "poll_timeout": 5,
        "backoff_base": 0.05,
        "backoff_max": 0.2,
        "startup_timeout": 5,
    }
    values.update(kw)
    return ReceiverSettings(**values)


class Running:
    def __init__(self, url: str, receiver: Receiver, fake: FakeTransmitter) -> None:
        self.url = url
        self.receiver = receiver
        self.fake = fake
        self.http = httpx.Client(base_url=url, timeout=10)
        #: Pushes go on their own connections, as a transmitter's do: a connection that served
        #: another path is uvicorn's from then on (receiver.push_http), even for pushes.
        self.pusher = httpx.Client(base_url=url, timeout=10)

    def push(self, token: str, *, auth: str | bool | None = True, **headers: str) -> httpx.Response:
        h = {"Content-Type": "application/secevent+jwt", "Accept": "application/json", **headers}
        if auth is True:
            assert self.receiver.push_authorization
            h["Authorization"] = self.receiver.push_authorization
        elif isinstance(auth, str):
            h["Authorization"] = auth
        return self.pusher.post("/ssf/push", content=token, headers=h)

    def whoami(self, token: str, **headers: str) -> httpx.Response:
        return self.http.get("/protected/whoami", headers={"Authorization": f"Bearer {token}", **headers})

    def wait(self, cond: Callable[[], bool], what: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.01)


@contextlib.contextmanager
def run_receiver(
    fake: FakeTransmitter, tmp_path: Path, *, policy: Any = None, port: int | None = None, **kw: Any
) -> Iterator[Running]:
    port = port or free_port()
    settings = receiver_settings(fake, tmp_path, port, **kw)
    receiver = Receiver(settings)
    app = create_app(settings, receiver=receiver, policy=policy)
    with serve(app, port=port) as url:
        running = Running(url, receiver, fake)
        try:
            yield running
        finally:
            running.http.close()
            running.pusher.close()


@pytest.fixture(scope="module")
def rcv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One receiver (and transmitter) per test module: start-up costs ~0.5 s, tests use
    distinct subjects and tokens so they do not see each other's events."""
    port = free_port()
    fake = FakeTransmitter(port)
    with serve(fake.app, port=port), run_receiver(fake, tmp_path_factory.mktemp("rcv")) as running:
        running.wait(lambda: bool(running.receiver.verified_states), "start-up verification")
        yield running
