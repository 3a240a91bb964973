"""What a user of `ssf` reads when a setting is wrong or a service is out of reach: one line
naming the variable or the service, never a traceback."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from receiver.settings import ReceiverSettings
from ssfcli.main import app
from tests.support.services import free_port


@pytest.fixture(autouse=True)
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SSF_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SSF_TRANSMITTER_DATABASE_URL", f"sqlite:///{tmp_path / 'tx.db'}")
    monkeypatch.setenv("SSF_TRANSMITTER_SECRET_FILE", str(tmp_path / "tx.secret"))
    monkeypatch.setenv("SSF_TRANSMITTER_SIGNING_ALG", "ES256")
    monkeypatch.setenv("SSF_RECEIVER_DATABASE_URL", f"sqlite:///{tmp_path / 'rx.db'}")


def one_error_line(result: Result, code: int) -> str:
    assert result.exit_code == code, (result.output, result.exception)
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("variables", "args", "expected"),
    [
        (
            {"SSF_TRANSMITTER_DEFAULT_SUBJECTS": "bogus"},
            ["transmitter", "client", "list"],
            "SSF_TRANSMITTER_DEFAULT_SUBJECTS='bogus': Input should be 'ALL' or 'NONE'",
        ),
        (
            {"SSF_TRANSMITTER_DEFAULT_SUBJECTS": "bogus"},
            ["transmitter", "serve", "--port", "1"],
            "SSF_TRANSMITTER_DEFAULT_SUBJECTS='bogus'",
        ),
        (
            {"SSF_TRANSMITTER_ALLOWED_PUSH_DESTINATIONS": "[bad"},
            ["transmitter", "keys", "list"],
            "SSF_TRANSMITTER_ALLOWED_PUSH_DESTINATIONS='[bad'",
        ),
        ({"SSF_RECEIVER_JTI_RETENTION": "abc"}, ["receiver", "status"], "SSF_RECEIVER_JTI_RETENTION='abc'"),
        ({"SSF_RECEIVER_DELIVERY": "bogus"}, ["receiver", "serve"], "SSF_RECEIVER_DELIVERY='bogus'"),
        (
            {"SSF_RECEIVER_EVENTS": "not json"},
            ["receiver", "status"],
            "SSF_RECEIVER_EVENTS is not valid JSON",
        ),
        (
            {"SSF_RECEIVER_TOKEN_ISSUER": "https://as", "SSF_RECEIVER_TOKEN_JWKS_URL": "https://as/jwks"},
            ["receiver", "serve"],
            "invalid SSF_RECEIVER_* settings: TOKEN_AUDIENCE is required with TOKEN_JWKS_URL",
        ),
        (
            {"SSF_RECEIVER_TRANSMITTER_ISSUER": "http://127.0.0.1:1", "SSF_RECEIVER_DELIVERY": "bogus"},
            ["receiver", "streams", "read"],
            "SSF_RECEIVER_DELIVERY='bogus'",
        ),
        ({"SSF_RECEIVER_DATABASE_URL": "bogus"}, ["receiver", "status"], "invalid database URL"),
    ],
)
def test_a_wrong_setting_is_one_line_naming_the_variable(
    variables: dict[str, str], args: list[str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    line = one_error_line(CliRunner().invoke(app, args), 2)
    assert expected in line


def test_a_setting_that_may_hold_a_secret_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSF_RECEIVER_TOKEN_CACHE_SIZE", "hunter2")
    line = one_error_line(CliRunner().invoke(app, ["receiver", "status"]), 2)
    assert "SSF_RECEIVER_TOKEN_CACHE_SIZE: Input should be a valid integer" in line and "hunter2" not in line


def test_an_http_transmitter_issuer_needs_dev_mode_before_anything_starts() -> None:
    with pytest.raises(
        ValueError, match=r"TRANSMITTER_ISSUER must be an https URL \(DEV_MODE=true allows http"
    ):
        ReceiverSettings(transmitter_issuer="http://127.0.0.1:8080", database_url="memory")
    with pytest.raises(ValueError, match="TRANSMITTER_ISSUER must be an https URL"):
        ReceiverSettings(transmitter_issuer="127.0.0.1:8080", dev_mode=True, database_url="memory")
    assert ReceiverSettings(transmitter_issuer="http://127.0.0.1:8080", dev_mode=True, database_url="memory")
    assert ReceiverSettings(transmitter_issuer="https://tx.example", database_url="memory")


def test_http_issuer_without_dev_mode_stops_serve_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSF_RECEIVER_TRANSMITTER_ISSUER", "http://127.0.0.1:8080")
    serve = ["receiver", "serve", "--port", str(free_port())]
    line = one_error_line(CliRunner().invoke(app, serve), 2)
    assert "TRANSMITTER_ISSUER must be an https URL (DEV_MODE=true allows http" in line


def test_an_unreachable_database_or_redis_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("SSF_TRANSMITTER_DATABASE_URL", f"postgresql://nobody@127.0.0.1:{port}/x")
    line = one_error_line(CliRunner().invoke(app, ["transmitter", "client", "list"]), 1)
    assert "the database is unreachable" in line and str(port) in line
    monkeypatch.setenv("SSF_RECEIVER_REDIS_URL", f"redis://127.0.0.1:{port}/0")
    line = one_error_line(CliRunner().invoke(app, ["receiver", "status"]), 1)
    assert "Redis is unreachable" in line and str(port) in line


def test_refused_operator_requests_are_one_line() -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["transmitter", "client", "add", "idp", "--publisher"]).exit_code == 0
    line = one_error_line(runner.invoke(app, ["transmitter", "keys", "rotate", "--alg", "HS256"]), 1)
    assert "unsupported signing algorithm 'HS256'" in line
    line = one_error_line(
        runner.invoke(app, ["transmitter", "client", "token", "idp", "--scope", "ssf.manage"]), 1
    )
    assert "the requested scope exceeds the client's scopes" in line


def test_a_failed_start_up_logs_its_reason_not_a_traceback(tmp_path: Path) -> None:
    """Redis out of reach at start: `receiver serve` exits, saying why in one log line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSF_")}
    env.update(
        SSF_RECEIVER_DATABASE_URL=f"sqlite:///{tmp_path / 'rx.db'}",
        SSF_RECEIVER_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        SSF_RECEIVER_SECRET_KEY="k" * 32,
    )
    cmd = [sys.executable, "-m", "ssfcli", "receiver", "serve", "--port", str(free_port())]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert "start-up failed: redis.exceptions.ConnectionError" in done.stderr, done.stderr


def test_serve_says_where_it_listens(tmp_path: Path) -> None:
    """uvicorn's own start-up lines are off: without this line a started service prints nothing."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSF_")}
    env.update(
        SSF_TRANSMITTER_DATABASE_URL=f"sqlite:///{tmp_path / 'tx.db'}",
        SSF_TRANSMITTER_SECRET_FILE=str(tmp_path / "tx.secret"),
        SSF_TRANSMITTER_SIGNING_ALG="ES256",
        SSF_TRANSMITTER_ISSUER=f"http://127.0.0.1:{port}",
        SSF_TRANSMITTER_DEV_MODE="1",
    )
    cmd = [sys.executable, "-m", "ssfcli", "transmitter", "serve", "--port", str(port)]
    cmd += ["--log-format", "text"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        ready, _, _ = select.select([proc.stderr], [], [], 30)  # a silent server: no line, no hang
        line = proc.stderr.readline() if ready else ""
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert f"starting on http://127.0.0.1:{port} (issuer http://127.0.0.1:{port})" in line, line


def test_a_missing_tls_file_is_named(tmp_path: Path) -> None:
    missing = str(tmp_path / "cert.pem")
    result = CliRunner().invoke(app, ["transmitter", "serve", "--port", "1", "--ssl-certfile", missing])
    assert f"--ssl-certfile: no such file: {missing}" in one_error_line(result, 2)
