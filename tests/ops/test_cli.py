"""`ssf transmitter ...` operator commands, run as the user runs them (CliRunner on the `ssf`
app, and a real process for `tail` following new SETs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ssf.stream import StreamRequest
from ssfcli.main import app
from tests.transmitter.conftest import SESSION_REVOKED
from transmitter.auth import Principal
from transmitter.service import Transmitter
from transmitter.settings import TransmitterSettings

ALICE = {"format": "email", "email": "alice@example.com"}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "SSF_TRANSMITTER_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "SSF_TRANSMITTER_SECRET_FILE": str(tmp_path / "secret"),
        "SSF_TRANSMITTER_SIGNING_ALG": "ES256",
        "SSF_TRANSMITTER_ISSUER": "https://tx.example",
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, ["transmitter", *args])
    assert result.exit_code == code, (args, result.output, result.stderr)
    return result.stdout


def make_stream(events: list[str] | None = None) -> tuple[Transmitter, str]:
    tx = Transmitter(TransmitterSettings())
    info, _ = tx.auth.add_client("rx-" + str(time.monotonic_ns()), None, None)
    cfg = tx.create_stream(
        Principal(info.client_id, frozenset({"ssf.manage"}), info.client_id),
        StreamRequest.model_validate({"events_requested": events or [SESSION_REVOKED]}),
    )
    return tx, str(cfg["stream_id"])


def test_clients_keys_and_streams_as_json(env: dict[str, str]) -> None:
    added = json.loads(run("client", "add", "rx1", "--json"))
    assert added["client_id"].startswith("c_") and added["client_secret"]
    assert added["scope"] == "ssf.read ssf.manage"
    listed = json.loads(run("client", "list", "--json"))
    assert [c["name"] for c in listed] == ["rx1"]
    assert "client_secret" not in listed[0] and added["client_secret"] not in json.dumps(listed)
    token = json.loads(run("client", "token", "rx1", "--scope", "ssf.read", "--json"))
    assert token["token_type"] == "Bearer" and token["scope"] == "ssf.read" and token["expires_in"] > 0
    assert run("client", "token", "rx1").strip().count(".") == 2  # the bare token, for $(...)

    rotated = json.loads(run("keys", "rotate", "--json"))
    keys = json.loads(run("keys", "list", "--json"))
    assert len(keys) == 2
    assert [k["kid"] for k in keys if k["active"]] == [rotated["kid"]]
    assert all(k["retired_at"] for k in keys if not k["active"])

    tx, sid = make_stream()
    published = json.loads(run("publish", SESSION_REVOKED, "--subject", json.dumps(ALICE), "--txn", "t-1"))
    jti = published["jti"][sid]
    streams = json.loads(run("streams", "list", "--json"))
    assert [(s["stream_id"], s["status"], s["outbox"]) for s in streams] == [(sid, "enabled", {"pending": 1})]
    shown = json.loads(run("streams", "show", sid, "--json"))
    assert shown["configuration"]["stream_id"] == sid and shown["status"] == "enabled"
    assert shown["outbox"] == {"pending": 1}
    assert "s_" in run("streams", "show", sid)  # the human form too
    run("streams", "show", "s_nope", code=1)

    status = json.loads(run("streams", "status", sid, "paused", "--reason", "maintenance"))
    assert status == {"stream_id": sid, "status": "paused", "reason": "maintenance"}
    verified = json.loads(run("streams", "verify", sid, "--json"))
    assert verified["stream_id"] == sid and verified["jti"]

    tailed = [json.loads(x) for x in run("tail", sid, "--no-follow", "--json").splitlines()]
    by_jti = {t["jti"]: t for t in tailed}
    assert by_jti[jti]["claims"]["txn"] == "t-1"
    assert by_jti[jti]["claims"]["sub_id"] == ALICE
    assert by_jti[verified["jti"]]["event_type"].endswith("/verification")
    assert any(t["event_type"].endswith("/stream-updated") for t in tailed)

    run("streams", "delete", sid, "--yes")
    assert json.loads(run("streams", "list", "--json")) == []
    assert tx.outbox_counts(sid) == {}
    tx.close()


def test_publish_file_with_progress(env: dict[str, str], tmp_path: Path) -> None:
    tx, sid = make_stream()
    path = tmp_path / "events.jsonl"
    lines = [
        json.dumps(
            {"subject": {"format": "opaque", "id": f"u{i}"}, "events": {SESSION_REVOKED: {}}, "txn": f"t{i}"}
        )
        for i in range(25)
    ]
    path.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(app, ["transmitter", "publish-file", str(path), "--batch", "10", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"events": 25, "sets_queued": 25}
    assert tx.outbox_counts(sid) == {"pending": 25}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"subject": {"format": "opaque", "id": "x"}}\n')
    result = CliRunner().invoke(app, ["transmitter", "publish-file", str(bad)])
    assert result.exit_code == 2 and "line 1" in result.stderr
    tx.close()


def test_tail_follows_new_sets(env: dict[str, str]) -> None:
    tx, sid = make_stream()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ssfcli", "transmitter", "tail", sid, "--json", "--last", "0", "--limit", "2"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert "following" in proc.stderr.readline()  # from here on, new SETs are shown
        jtis = [tx.publish(ALICE, {SESSION_REVOKED: {}}, f"follow-{i}")[sid] for i in range(2)]
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    got = [json.loads(x) for x in out.splitlines()]
    assert [g["jti"] for g in got] == jtis
    assert [g["claims"]["txn"] for g in got] == ["follow-0", "follow-1"]
    tx.close()


def test_serve_options_and_bad_log_format(env: dict[str, str]) -> None:
    out = CliRunner().invoke(app, ["transmitter", "serve", "--help"]).output
    assert "--log-format" in out and "--log-level" in out
    result = CliRunner().invoke(app, ["transmitter", "serve", "--log-format", "xml"])
    assert result.exit_code == 2 and "json or text" in result.stderr
