"""`ssf receiver status` reads the stored stream and state; `ssf receiver serve` runs the chain."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from receiver.cli import app
from receiver.state import CUTOFF, Mutation, RevocationState
from receiver.store import SQLStore, WriteBatch
from ssf.events import SessionRevoked
from ssf.subjects import Subject
from tests.receiver.conftest import serve_env
from tests.receiver.fake import AUDIENCE, FakeTransmitter
from tests.support.services import free_port


def test_status_prints_stream_and_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/r.db"

    async def seed() -> None:
        store = SQLStore(url)
        await store.open()
        state = RevocationState()
        m = Mutation(Subject.opaque("s1"), CUTOFF, math.inf, 1.0)
        state.apply(m)
        await store.commit(
            WriteBatch(
                [("j1", b"x" * 16, 1e12)],
                [m],
                {m.subject.key: [x.to_json() for x in state.export(m.subject)]},
            )
        )
        await store.save_stream(
            "https://t.example", {"stream_id": "st-1", "delivery": {"method": "urn:ietf:rfc:8935"}}
        )
        await store.close()

    asyncio.run(seed())
    monkeypatch.setenv("SSF_RECEIVER_DATABASE_URL", url)
    monkeypatch.setenv("SSF_RECEIVER_TRANSMITTER_ISSUER", "https://t.example")
    result = CliRunner().invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["stream"]["stream_id"] == "st-1"
    assert out["state"]["revoked_sessions"] == 1 and out["jtis"] == 1
    text = CliRunner().invoke(app, ["status"])
    assert "st-1" in text.output and "revoked_sessions: 1" in text.output


def test_serve_command_is_mounted_under_ssf() -> None:
    from ssfcli.main import app as ssf_app

    result = CliRunner().invoke(ssf_app, ["receiver", "serve", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--no-demo"):
        assert option in result.output


@contextlib.contextmanager
def _serving(fake: FakeTransmitter, tmp_path: Path, *args: str) -> Iterator[str]:
    """``ssf receiver serve`` as its own process, configured by environment as an operator
    would; yields its base URL once it reports ready, and stops it by its pid."""
    port = free_port()
    env = serve_env(
        fake,
        port,
        push_authorization="Bearer cli-push",
        database_url=f"sqlite:///{tmp_path}/cli.db",
        token_issuer=fake.base + "/as",
        token_jwks_url=fake.base + "/as/jwks",
        token_audience=AUDIENCE,
        startup_timeout="10",
    )
    ssf = str(Path(sys.executable).parent / "ssf")
    proc = subprocess.Popen(
        [ssf, "receiver", "serve", "--port", str(port), *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (proc.stdout.read() if proc.stdout else "")[-2000:]
            try:
                if httpx.get(url + "/health", timeout=1).json().get("verified"):
                    break
            except (httpx.HTTPError, ValueError):
                pass
            assert time.monotonic() < deadline, "ssf receiver serve did not get ready"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        assert "Traceback" not in out, out[-3000:]


def test_serve_runs_the_whole_chain_with_the_protected_demo(fake: FakeTransmitter, tmp_path: Path) -> None:
    with _serving(fake, tmp_path) as url, httpx.Client(base_url=url, timeout=10) as http:
        token = fake.mint("cli-user", sid="cli-sid")
        who = http.get("/protected/whoami", headers={"Authorization": f"Bearer {token}"})
        assert who.status_code == 200 and (who.json()["sub"], who.json()["sid"]) == ("cli-user", "cli-sid")
        assert http.get("/protected/whoami").status_code == 401
        revocation = fake.sign(Subject.opaque("cli-sid"), SessionRevoked())
        headers = {"Content-Type": "application/secevent+jwt", "Authorization": "Bearer cli-push"}
        assert http.post("/ssf/push", content=revocation, headers=headers).status_code == 202
        refused = http.get("/protected/whoami", headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 401 and 'error="invalid_token"' in refused.headers["www-authenticate"]
        assert (
            http.post("/ssf/push", content=revocation, headers={**headers, "Authorization": "x"}).status_code
            == 401
        )


def test_serve_without_the_demo_has_no_protected_route(fake: FakeTransmitter, tmp_path: Path) -> None:
    with _serving(fake, tmp_path, "--no-demo") as url:
        token = fake.mint("cli-user")
        assert (
            httpx.get(url + "/protected/whoami", headers={"Authorization": f"Bearer {token}"}).status_code
            == 404
        )
