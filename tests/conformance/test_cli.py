"""`ssf conformance` as a user runs it: a real process, its last line, exit code and files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

from typer.testing import CliRunner

from conformance.cli import app
from tests.conformance.fixture_transmitter import CLIENT_ID, CLIENT_SECRET
from tests.conformance.helpers import fixture_transmitter

SSF = [sys.executable, "-m", "ssfcli"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A real `ssf conformance` process."""
    return subprocess.run([*SSF, "conformance", *args], capture_output=True, text=True, timeout=timeout)


def invoke(*args: str) -> subprocess.CompletedProcess[str]:
    """The same command in-process (faster: no interpreter start-up)."""
    result = CliRunner().invoke(app, list(args))
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def tx_args(issuer: str) -> list[str]:
    return [
        "transmitter",
        "--issuer",
        issuer,
        "--client-id",
        CLIENT_ID,
        "--client-secret",
        CLIENT_SECRET,
        "--allow-http-loopback",
        "--event-timeout",
        "1",
        "--settle",
        "0.3",
        "--only",
        "openid-ssf-transmitter-metadata,openid-ssf-transmitter-stream-verification-push",
    ]


def test_transmitter_run_passes_and_writes_reports(tmp_path: Path) -> None:
    with fixture_transmitter() as fx:
        out = run(*tx_args(fx.issuer), "--json", str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.xml"))
    assert out.returncode == 0, out.stdout + out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.endswith(" failed, 2 skipped") and last.split()[2:4] == ["0", "failed,"], last
    assert out.stdout.count(last) == 1
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["failed"] == 0 and data["passed"] > 20
    assert {m["module"] for m in data["modules"]} == {
        "openid-ssf-transmitter-metadata",
        "openid-ssf-transmitter-stream-verification-push",
    }
    suites = ET.parse(tmp_path / "r.xml").getroot()
    assert suites.tag == "testsuites" and suites.get("failures") == "0"
    assert len(suites.findall("testsuite")) == 2


def test_transmitter_failure_exits_non_zero(tmp_path: Path) -> None:
    with fixture_transmitter(["set-typ"]) as fx:
        out = invoke(*tx_args(fx.issuer), "--junit", str(tmp_path / "r.xml"))
    assert out.returncode == 1, out.stdout + out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert " 1 failed" in last
    assert "set.typ" in out.stdout
    failures = ET.parse(tmp_path / "r.xml").getroot().iter("failure")
    assert [f.get("type") for f in failures] == ["FAILURE"]


def test_only_warning_failures_exit_zero() -> None:
    with fixture_transmitter(["push-no-accept"]) as fx:
        out = invoke(*tx_args(fx.issuer))
    assert out.returncode == 0, out.stdout
    assert " 1 failed" in out.stdout.strip().splitlines()[-1]


def test_usage_errors_exit_2() -> None:
    assert invoke("transmitter", "--client-id", "x", "--client-secret", "y").returncode == 2
    assert (
        invoke(
            "transmitter", "--issuer", "https://t.example", "--delivery", "carrier-pigeon", "--token", "t"
        ).returncode
        == 2
    )
    assert invoke("transmitter", "--issuer", "https://t.example").returncode == 2


def test_list_names_every_module_with_its_checks() -> None:
    out = invoke("transmitter", "--list", "--delivery", "poll")
    assert out.returncode == 0
    assert "openid-ssf-transmitter-stream-verification-poll-and-ack" in out.stdout
    assert "openid-ssf-transmitter-stream-verification-push" not in out.stdout
    assert "poll.acked-not-redelivered" in out.stdout and "RFC 8936 2.4" in out.stdout
    out = invoke("receiver", "--list")
    assert "kit-receiver-bad-set-corpus" in out.stdout and "corpus.jti-reuse" in out.stdout
    assert "kit-receiver-tls" in out.stdout and "rx.stream-iss.checked" in out.stdout


def test_receiver_without_a_receiver_skips_everything() -> None:
    out = invoke("receiver", "--wait", "0.3", "--idle", "0.2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Emulated transmitter issuer: http://127.0.0.1:" in out.stderr
    assert out.stdout.strip().splitlines()[-1] == "0 passed, 0 failed, 12 skipped"


def test_a_port_in_use_is_a_usage_error_naming_the_option() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        out = invoke("receiver", "--port", port, "--wait", "0.3", "--idle", "0.2")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "--host/--port" in out.stderr and "that address is in use" in out.stderr
    assert "Traceback" not in out.stderr
