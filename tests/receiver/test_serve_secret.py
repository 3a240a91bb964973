"""``ssf receiver serve`` where the generated secret cannot be kept: one line, exit 1."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.receiver.conftest import serve_env
from tests.receiver.fake import FakeTransmitter
from tests.support.services import free_port, require_redis


def _read_only_dir() -> Path:
    """A 0555 directory; as root (who writes there anyway) sysfs, which refuses new files."""
    if os.geteuid() != 0:
        path = Path(tempfile.mkdtemp(prefix="ssf-ro-"))
        path.chmod(0o555)
    else:
        path = Path("/sys")
    probe = path / f".probe-{secrets.token_hex(4)}"
    try:
        probe.touch()
    except OSError:
        return path
    probe.unlink()
    pytest.skip(f"{path} accepts new files here: no read-only directory to run in")


def test_serve_in_a_read_only_directory_without_a_secret_says_what_to_set(fake: FakeTransmitter) -> None:
    # Redis state: the secret's default place is then the working directory (with SQLite it
    # would be beside the database file).
    redis_url = require_redis()
    port = free_port()
    cwd = _read_only_dir()
    env = serve_env(
        fake,
        port,
        redis_url=redis_url,
        redis_namespace="ssf-test-" + secrets.token_hex(4),
        verify_on_start="false",
        startup_timeout="5",
    )
    try:
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "ssf"), "receiver", "serve", "--port", str(port)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert "Traceback" not in proc.stdout + proc.stderr
        (line,) = [x for x in proc.stderr.splitlines() if x.strip()]
        assert "ssf-receiver.secret" in line and "SSF_RECEIVER_SECRET_KEY" in line
        assert "SSF_RECEIVER_SECRET_FILE" in line
        assert not (cwd / "ssf-receiver.secret").exists()
    finally:
        if cwd.is_relative_to(tempfile.gettempdir()):
            cwd.chmod(0o755)
            shutil.rmtree(cwd, ignore_errors=True)
