"""Nothing lost: kill -9 a real `ssf transmitter serve` process while SETs are queued and
mid-push; after a restart on the same database every accepted SET is delivered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from ssf.keys import PublicKeys
from ssf.set import SETVerifier
from tests.support.services import free_port
from tests.transmitter.conftest import SESSION_REVOKED, Sink, wait_until
from transmitter.service import Transmitter
from transmitter.settings import TransmitterSettings

SSF = str(Path(sys.executable).with_name("ssf"))


def start(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [SSF, "transmitter", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "server exited")
        try:
            return httpx.get(base + "/jwks.json", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout=30, interval=0.1)
    return proc


def cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [SSF, "transmitter", *args], env=env, check=True, capture_output=True, text=True
    ).stdout


def test_kill_while_queued_and_mid_push_then_restart_delivers_all(tmp_path: Path, sink: Sink) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "SSF_TRANSMITTER_ISSUER": base,
        "SSF_TRANSMITTER_DEV_MODE": "1",
        "SSF_TRANSMITTER_DATABASE_URL": f"sqlite:///{tmp_path / 'tx.db'}",
        "SSF_TRANSMITTER_SECRET_FILE": str(tmp_path / "secret"),
        "SSF_TRANSMITTER_SIGNING_ALG": "ES256",
        "SSF_TRANSMITTER_LEASE_SECONDS": "1",
        "SSF_TRANSMITTER_WORKER_POLL_INTERVAL": "0.2",
        "SSF_TRANSMITTER_RETRY_BASE_SECONDS": "0.05",
        "SSF_TRANSMITTER_RETRY_MAX_SECONDS": "0.2",
    }
    setup = Transmitter(
        TransmitterSettings(
            _env_file=None, **{k[16:].lower(): v for k, v in env.items() if k.startswith("SSF_TRANSMITTER_")}
        )
    )
    rx = setup.auth.issue_token(setup.auth.add_client("rx")[0], None)["access_token"]
    pub = setup.auth.issue_token(setup.auth.add_client("idp", ["ssf.publish"])[0], None)["access_token"]
    setup.close()

    proc = start(env, port)
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            r = http.post(
                "/ssf/streams",
                headers={"Authorization": f"Bearer {rx}"},
                json={
                    "events_requested": [SESSION_REVOKED],
                    "delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": sink.url},
                },
            )
            assert r.status_code == 201
            sid = r.json()["stream_id"]
            sink.delay = 0.3  # slow receiver: SETs queue up and some are in flight at the kill
            accepted: list[str] = []
            for i in range(15):
                body: dict[str, Any] = {
                    "subject": {"format": "email", "email": f"u{i}@example.com"},
                    "events": {SESSION_REVOKED: {}},
                }
                r = http.post("/events", headers={"Authorization": f"Bearer {pub}"}, json=body)
                assert r.status_code == 202
                accepted.append(r.json()["jti"][sid])
            sink.wait_for(2)
            jwks = http.get("/jwks.json").json()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    before = len(sink.pushes)
    assert before < len(accepted)  # the kill really left SETs undelivered

    sink.delay = 0.0
    proc = start(env, port)
    try:
        verifier = SETVerifier(issuer=base, keys=PublicKeys.from_jwks(jwks))
        wait_until(lambda: set(accepted) <= {verifier.verify(t).jti for t in sink.tokens()}, timeout=30)
        got = [verifier.verify(t).jti for t in sink.tokens()]
        # order of first delivery is the publish order; a SET caught mid-push may come twice
        firsts = list(dict.fromkeys(got))
        assert firsts == accepted
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
