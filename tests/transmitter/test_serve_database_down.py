"""``ssf transmitter serve`` with its database unreachable: one line saying so, exit 1.

A supervisor restarts the process; what an operator reads must be the reason, not a
traceback through SQLAlchemy and the driver.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.services import free_port

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
