"""SIGTERM while the receiver is still retrying an unreachable transmitter at start-up.

uvicorn acts on a signal only once its start-up (the app's lifespan) has finished, and the
receiver's start-up keeps retrying the transmitter for up to ``STARTUP_TIMEOUT``; the stop
must cut that wait instead of being held by it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.services import free_port

SSF = str(Path(sys.executable).parent / "ssf")


def test_sigterm_during_startup_retries_stops_at_once(tmp_path: Path) -> None:
    dead = free_port()  # nothing listens there: every discovery attempt fails at once
    log = tmp_path / "receiver.log"
    env = {
        **os.environ,
        "SSF_RECEIVER_TRANSMITTER_ISSUER": f"http://127.0.0.1:{dead}",
        "SSF_RECEIVER_DEV_MODE": "1",
        "SSF_RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path / 'rx.db'}",
        "SSF_RECEIVER_AUDIENCE": "https://rx.example",
        "SSF_RECEIVER_STARTUP_TIMEOUT": "120",
        "SSF_RECEIVER_BACKOFF_BASE": "5",
        "SSF_LOG_FORMAT": "text",
    }
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [SSF, "receiver", "serve", "--port", str(free_port()), "--no-demo"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 60
        while "retrying in" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the receiver never tried the transmitter"
            time.sleep(0.05)
        assert "ConnectError: " in log.read_text(), "the log should say why the connection failed"
        proc.send_signal(signal.SIGTERM)
        # Without the interruption the process would sleep out its 5 s back-off, then retry
        # until the 120 s start-up timeout.
        proc.wait(timeout=4)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
