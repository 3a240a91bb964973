"""docker-compose.yml without Docker: every app service's command runs here as a process.

Each service gets the environment compose would give it, with its host names mapped to
loopback ports, PostgreSQL to a fresh database on the test server and Redis to the test
Redis under a fresh namespace. The services then start in the compose order, each once the
previous ones pass their compose health check (run as written), and the chain is exercised:
a user's token is allowed by the receiver's API until the identity provider ends the session.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.deploy.test_compose import APP_SERVICES, load_compose, service_env
from tests.support.services import POSTGRES_URL, free_port, require_postgres, require_redis

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
BIN = Path(sys.executable).parent


def _admin_url() -> str:
    return POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    name = "ssf_compose_" + secrets.token_hex(4)
    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _admin_url().rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(_admin_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Local:
    """Maps compose host names and ports to loopback ones."""

    def __init__(self, services: dict[str, Any], database: str, redis: str) -> None:
        self.ports = {name: free_port() for name in APP_SERVICES}
        self.compose_ports = {
            name: services[name]["command"][services[name]["command"].index("--port") + 1]
            for name in APP_SERVICES
        }
        self.database = database
        self.redis = redis

    def value(self, key: str, value: str) -> str:
        if key.endswith("_DATABASE_URL"):
            assert value.startswith("postgresql://") and "@postgres:5432/" in value, key
            return self.database
        if key.endswith("_REDIS_URL"):
            assert value.startswith("redis://redis:6379"), key
            return self.redis
        for name, port in self.ports.items():
            value = value.replace(f"{name}:{self.compose_ports[name]}", f"127.0.0.1:{port}")
        if key == "SSF_TRANSMITTER_ALLOWED_PUSH_DESTINATIONS":
            value = json.dumps(["127.0.0.1" if h == "receiver" else h for h in json.loads(value)])
        return value

    def command(self, name: str, command: list[str]) -> list[str]:
        out = list(command)
        out[out.index("--host") + 1] = "127.0.0.1"  # loopback only in tests
        out[out.index("--port") + 1] = str(self.ports[name])
        if out[0] == "ssf":
            out[0] = str(BIN / "ssf")
        elif out[0] == "python":
            out[0] = sys.executable
        return out

    def healthcheck(self, name: str, test: list[str]) -> list[str]:
        assert test[0] == "CMD" and test[1] == "python"
        url = test[-1].replace(f"127.0.0.1:{self.compose_ports[name]}", f"127.0.0.1:{self.ports[name]}")
        return [sys.executable, *test[2:-1], url]


def _wait_healthy(name: str, proc: subprocess.Popen[bytes], check: list[str], timeout: float = 60) -> None:
    """Wait (cheaply, in-process) for the health URL, then run the compose health check as written."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(check[-1], timeout=2).status_code < 400:
                done = subprocess.run(check, capture_output=True, timeout=10)
                assert done.returncode == 0, f"{name}: health check failed: {done.stderr.decode()[-500:]}"
                return
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise AssertionError(f"{name} exited with {proc.returncode}:\n{out[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} did not pass its health check within {timeout} s")
        time.sleep(0.05)


@pytest.mark.timeout(240)  # three cold Python processes: slow only on a machine that is very busy
def test_every_compose_service_command_runs_and_the_chain_works(tmp_path: Path) -> None:
    require_postgres()
    redis_url = require_redis()
    services = load_compose()["services"]
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    with fresh_database() as database:
        local = Local(services, database, redis_url)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("SSF_")}
        base_env["SSF_RECEIVER_REDIS_NAMESPACE"] = "compose-test-" + secrets.token_hex(4)
        try:
            # The compose start order, except that the identity provider and the transmitter
            # boot side by side (neither calls the other on start) to keep the test short.
            for group in (("idp", "transmitter"), ("receiver",)):
                started = []
                for name in group:
                    svc = services[name]
                    env = {**base_env, **{k: local.value(k, v) for k, v in service_env(svc).items()}}
                    proc = subprocess.Popen(
                        local.command(name, svc["command"]),
                        env=env,
                        cwd=tmp_path,  # the image's WORKDIR: relative files land here
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                    )
                    procs.append((name, proc))
                    started.append((name, proc, local.healthcheck(name, svc["healthcheck"]["test"])))
                for name, proc, check in started:
                    _wait_healthy(name, proc, check)

            idp = f"http://127.0.0.1:{local.ports['idp']}"
            api = f"http://127.0.0.1:{local.ports['receiver']}/protected/whoami"
            with httpx.Client(timeout=10) as http:
                # The receiver created and verified its push stream through the IdP-issued token.
                health: dict[str, Any] = {}
                deadline = time.monotonic() + 30
                while not health.get("verified") and time.monotonic() < deadline:
                    health = http.get(f"http://127.0.0.1:{local.ports['receiver']}/health").json()
                    time.sleep(0.1)
                assert health.get("verified"), health
                assert health["delivery"] == "push"

                login = http.post(f"{idp}/login", json={"username": "ada", "device_id": "laptop-1"}).json()
                auth = {"Authorization": f"Bearer {login['access_token']}"}
                assert http.get(api, headers=auth).status_code == 200
                ended = http.post(f"{idp}/admin/sessions/{login['sid']}/end")
                assert ended.status_code == 200, ended.text
                assert list(ended.json()["jti"]) == [health["stream_id"]]
                deadline = time.monotonic() + 10
                answer = http.get(api, headers=auth)
                while answer.status_code == 200 and time.monotonic() < deadline:
                    time.sleep(0.02)
                    answer = http.get(api, headers=auth)
                assert answer.status_code == 401
                assert re.search(r'error="invalid_token"', answer.headers["www-authenticate"])
        finally:
            for _, proc in reversed(procs):
                proc.terminate()
            for name, proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
                    pytest.fail(f"{name} did not stop on SIGTERM")
