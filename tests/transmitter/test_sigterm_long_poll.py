"""SIGTERM stops `ssf transmitter serve` promptly even while a receiver holds a long poll open:
the poll is answered (empty) at once, not cut, and nothing ends in a traceback."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx

from tests.support.services import free_port
from tests.transmitter.test_kill_restart import start
from transmitter.service import Transmitter
from transmitter.settings import TransmitterSettings


def test_sigterm_does_not_wait_for_an_open_long_poll(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "SSF_TRANSMITTER_ISSUER": base,
        "SSF_TRANSMITTER_DEV_MODE": "1",
        "SSF_TRANSMITTER_DATABASE_URL": f"sqlite:///{tmp_path / 'tx.db'}",
        "SSF_TRANSMITTER_SECRET_FILE": str(tmp_path / "secret"),
        "SSF_TRANSMITTER_SIGNING_ALG": "ES256",
        "SSF_TRANSMITTER_LONG_POLL_TIMEOUT": "120",
    }
    setup = Transmitter(
        TransmitterSettings(
            _env_file=None, **{k[16:].lower(): v for k, v in env.items() if k.startswith("SSF_TRANSMITTER_")}
        )
    )
    token = setup.auth.issue_token(setup.auth.add_client("rx")[0], None)["access_token"]
    setup.close()
    proc = start(env, port)
    try:
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, timeout=10) as http:
            stream = http.post("/ssf/streams", json={}, headers=auth).json()
        poll_url = stream["delivery"]["endpoint_url"]
        poll_started = threading.Event()
        answers: list[httpx.Response] = []

        def long_poll() -> None:
            poll_started.set()
            answers.append(httpx.post(poll_url, json={"maxEvents": 10}, headers=auth, timeout=150))

        poller = threading.Thread(target=long_poll, daemon=True)
        poller.start()
        poll_started.wait()
        time.sleep(1.0)  # the poll is now held by the server
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        # Bounded by the shutdown, not by the 120 s long-poll timeout.
        assert time.monotonic() - began < 30
        poller.join(timeout=10)
        assert answers and answers[0].status_code == 200
        assert answers[0].json()["sets"] == {}
        assert proc.stderr is not None
        assert b"Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
