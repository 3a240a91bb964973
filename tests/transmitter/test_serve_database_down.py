"""The database unreachable: ``ssf transmitter serve`` says so in one line and exits 1; the
worker's retries log one line each.

A supervisor restarts the process; what an operator reads must be the reason, not a
traceback through SQLAlchemy and the driver.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy.exc import OperationalError

from tests.support.services import free_port
from transmitter.delivery import _log_failure

SSF = str(Path(sys.executable).parent / "ssf")


def test_unreachable_database_is_one_line_and_exit_1(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SSF_TRANSMITTER_ISSUER": "http://127.0.0.1:9",
        "SSF_TRANSMITTER_DEV_MODE": "1",
        # nothing listens on this port: the connection is refused at once
        "SSF_TRANSMITTER_DATABASE_URL": f"postgresql://127.0.0.1:{free_port()}/test",
        "SSF_TRANSMITTER_SECRET_FILE": str(tmp_path / "secret"),
        "SSF_LOG_FORMAT": "text",
    }
    proc = subprocess.run(
        [SSF, "transmitter", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "╭" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: the database is unreachable: "), proc.stderr
    assert "Connection refused" in lines[-1] or "connection failed" in lines[-1], proc.stderr


def test_worker_failures_from_an_unreachable_database_are_one_line(caplog: pytest.LogCaptureFixture) -> None:
    """The push worker retries every tick while the database is away; each tick logs the
    reason in one line, not a traceback (other failures keep theirs)."""
    engine = sqlalchemy.create_engine(f"postgresql+psycopg://127.0.0.1:{free_port()}/test")
    with pytest.raises(OperationalError) as info:
        engine.connect()
    with caplog.at_level(logging.WARNING, logger="transmitter.delivery"):
        _log_failure("claiming push work failed", info.value)
        _log_failure("maintenance failed", RuntimeError("a bug"))
    outage, bug = caplog.records
    assert outage.levelno == logging.WARNING and outage.exc_info is None
    assert outage.getMessage().startswith("claiming push work failed: the database is unavailable (")
    assert "refused" in outage.getMessage() or "failed" in outage.getMessage()
    assert bug.levelno == logging.ERROR and bug.exc_info is not None
