"""SSRF guard, signing keys and rotation, and the `ssf transmitter` commands."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ssf.keys import KeySet, PublicKeys, generate_signing_key
from ssf.set import SETVerifier, decode_unverified
from ssf.subjects import Subject
from tests.support.services import free_port
from tests.transmitter.conftest import (
    SESSION_REVOKED,
    Server,
    ServerFactory,
    make_settings,
    running,
    wait_until,
)
from transmitter.cli import app as cli_app
from transmitter.service import Transmitter
from transmitter.settings import TransmitterSettings, normalize_database_url
from transmitter.ssrf import SSRFGuard

PUSH = "urn:ietf:rfc:8935"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://example.com/push", "https"),
        ("https://127.0.0.1/push", "loopback"),
        ("https://[::1]:8443/push", "loopback"),
        ("https://10.1.2.3/push", "private"),
        ("https://192.168.0.7/push", "private"),
        ("https://169.254.169.254/latest/meta-data", "metadata"),
        ("https://[fe80::1]/push", "link-local"),
        ("https://[::ffff:127.0.0.1]/push", "loopback"),
        ("https://0.0.0.0/push", "address"),
        ("https://user:pw@example.com/push", "credentials"),
        ("https://localhost/push", "loopback"),
        ("not a url", "absolute"),
    ],
)
def test_ssrf_guard_refuses(url: str, problem: str, tmp_path: Path) -> None:
    guard = SSRFGuard(TransmitterSettings(secret_file=tmp_path / "s"))
    found = guard.allowed(url)
    assert found is not None and problem in found


def test_ssrf_guard_allows_public_and_operator_allowed(tmp_path: Path) -> None:
    guard = SSRFGuard(
        TransmitterSettings(allowed_push_destinations=["127.0.0.1", "10.0.0.0/8", "rx.internal"])
    )
    assert guard.allowed("https://127.0.0.1:8443/push") is None
    assert guard.allowed("https://10.9.9.9/push") is None
    assert guard.allowed("https://rx.internal/push") is None
    assert guard.allowed("https://8.8.8.8/push") is None
    assert guard.allowed("https://192.168.1.1/push") is not None
    assert SSRFGuard(TransmitterSettings(dev_mode=True)).allowed("http://127.0.0.1/x") is None


def test_ssrf_guard_over_http_without_dev_mode(tmp_path: Path, db_config: dict[str, Any]) -> None:
    port = free_port()
    settings = make_settings(
        tmp_path,
        db_config,
        port,
        issuer="https://tx.example",
        dev_mode=False,
        allowed_push_destinations=["127.0.0.2"],
    )
    with running(settings, port) as srv:
        info, _ = srv.tx.auth.add_client("rx")
        tok = srv.tx.auth.issue_token(info, None)["access_token"]

        def create(url: str) -> Any:
            return srv.http.post(
                f"http://127.0.0.1:{port}/ssf/streams",
                headers={"Authorization": f"Bearer {tok}"},
                json={"delivery": {"method": PUSH, "endpoint_url": url}},
            )

        r = create("https://127.0.0.1:9/push")
        assert r.status_code == 400 and "loopback" in r.json()["description"]
        assert create("http://127.0.0.2:9/push").status_code == 400  # https even when allowed
        assert create("https://169.254.169.254/").status_code == 400
        assert create("https://127.0.0.2:9/push").status_code == 201


def test_first_start_generates_rs256_key_encrypted_at_rest(tmp_path: Path) -> None:
    tx = Transmitter(
        TransmitterSettings(database_url=f"sqlite:///{tmp_path / 'a.db'}", secret_file=tmp_path / "s")
    )
    key = tx.keys.active
    assert key.alg == "RS256" and key.key.raw_value.key_size >= 2048  # type: ignore[union-attr]
    raw = (tmp_path / "a.db").read_bytes()
    assert key.private_jwk()["d"].encode() not in raw
    tx.close()
    again = Transmitter(
        TransmitterSettings(database_url=f"sqlite:///{tmp_path / 'a.db'}", secret_file=tmp_path / "s")
    )
    assert again.keys.active.kid == key.kid  # stored, not regenerated
    again.close()


def test_signing_key_file_is_imported(tmp_path: Path) -> None:
    key = generate_signing_key("ES256", kid="op-key")
    path = tmp_path / "key.json"
    path.write_text(json.dumps(KeySet([key]).private_jwks()))
    tx = Transmitter(
        TransmitterSettings(
            database_url=f"sqlite:///{tmp_path / 'b.db'}", secret_file=tmp_path / "s", signing_key_file=path
        )
    )
    assert tx.keys.active.kid == "op-key"
    tx.close()


def test_signing_key_file_not_stored_is_ignored_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    db, secret = tmp_path / "k.db", tmp_path / "s"
    first = Transmitter(TransmitterSettings(database_url=f"sqlite:///{db}", secret_file=secret))
    stored = first.keys.active.kid
    first.close()
    path = tmp_path / "key.json"
    path.write_text(json.dumps(KeySet([generate_signing_key("ES256", kid="late-key")]).private_jwks()))
    with caplog.at_level(logging.WARNING, logger="transmitter.keystore"):
        again = Transmitter(
            TransmitterSettings(database_url=f"sqlite:///{db}", secret_file=secret, signing_key_file=path)
        )
    assert again.keys.active.kid == stored  # the file is not used ...
    again.close()
    warned = [r.getMessage() for r in caplog.records if r.name == "transmitter.keystore"]
    assert len(warned) == 1  # ... and that is said once
    assert "late-key" in warned[0] and "ignored" in warned[0] and "keys import" in warned[0]
    # the way the warning names: the CLI makes it the active key, the old one stays published
    monkeypatch.setenv("SSF_TRANSMITTER_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("SSF_TRANSMITTER_SECRET_FILE", str(secret))
    runner = CliRunner()
    out = runner.invoke(cli_app, ["keys", "import", str(path), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == {"kid": "late-key", "alg": "ES256", "imported": True}
    assert (
        json.loads(runner.invoke(cli_app, ["keys", "import", str(path), "--json"]).stdout)["imported"]
        is False
    )
    listed = json.loads(runner.invoke(cli_app, ["keys", "list", "--json"]).stdout)
    assert {(k["kid"], k["active"]) for k in listed} == {(stored, False), ("late-key", True)}
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    assert runner.invoke(cli_app, ["keys", "import", str(bad)]).exit_code == 2
    # a start with the file's key now stored warns no more
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="transmitter.keystore"):
        third = Transmitter(
            TransmitterSettings(database_url=f"sqlite:///{db}", secret_file=secret, signing_key_file=path)
        )
    assert third.keys.active.kid == "late-key"
    third.close()
    assert [r for r in caplog.records if r.name == "transmitter.keystore"] == []


def test_signing_key_file_already_stored_gives_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "key.json"
    path.write_text(json.dumps(KeySet([generate_signing_key("ES256", kid="op-key")]).private_jwks()))
    settings = {
        "database_url": f"sqlite:///{tmp_path / 'n.db'}",
        "secret_file": tmp_path / "s",
        "signing_key_file": path,
    }
    Transmitter(TransmitterSettings(**settings)).close()  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="transmitter.keystore"):
        tx = Transmitter(TransmitterSettings(**settings))  # type: ignore[arg-type]
    assert tx.keys.active.kid == "op-key"
    tx.close()
    assert [r for r in caplog.records if r.name == "transmitter.keystore"] == []


def test_rotation_keeps_old_key_for_overlap(server: Server) -> None:
    rx = server.client()
    s = server.create(rx, {"events_requested": [SESSION_REVOKED]})
    old_kid = server.tx.keys.active.kid
    server.tx.publish(Subject.email("a@example.com"), {SESSION_REVOKED: {}})
    new = server.tx.keys.rotate()
    server.tx.publish(Subject.email("a@example.com"), {SESSION_REVOKED: {}})
    jwks = server.http.get(server.url + "/jwks.json").json()
    assert {k["kid"] for k in jwks["keys"]} == {old_kid, new.kid}
    sets = list(server.poll(rx, s)["sets"].values())
    assert [decode_unverified(t)[0]["kid"] for t in sets] == [old_kid, new.kid]
    verifier = SETVerifier(issuer=server.url, keys=PublicKeys.from_jwks(jwks))
    assert all(verifier.verify(t) for t in sets)  # SETs in flight keep verifying
    server.tx.settings.key_overlap_seconds = 0
    # past the overlap, but a SET it signed is still waiting for its acknowledgement
    assert server.tx.keys.prune() == []
    assert {k["kid"] for k in server.http.get(server.url + "/jwks.json").json()["keys"]} == {old_kid, new.kid}
    server.poll(rx, s, ack=[decode_unverified(sets[0])[1]["jti"]])
    assert server.tx.keys.prune() == [old_kid]
    assert [k["kid"] for k in server.http.get(server.url + "/jwks.json").json()["keys"]] == [new.kid]


def test_scheduled_rotation(server_factory: ServerFactory) -> None:
    with server_factory(key_rotation_interval=1) as server:
        first = server.tx.keys.active.kid
        wait_until(lambda: server.tx.keys.active.kid != first, timeout=10)
        kids = {k["kid"] for k in server.http.get(server.url + "/jwks.json").json()["keys"]}
        assert first in kids and len(kids) >= 2


def test_the_served_jwks_has_a_key_another_instance_rotated_in(server: Server) -> None:
    """Instances share one database: a SET signed by the instance that rotated must verify
    against the JWKS whichever instance serves it, before that one's next reload."""
    rx = server.client()
    s = server.create(rx, {"events_requested": [SESSION_REVOKED]})
    other = Transmitter(server.tx.settings)
    try:
        new = other.keys.rotate()
        other.publish(Subject.email("b@example.com"), {SESSION_REVOKED: {}})
        (token,) = server.poll(rx, s)["sets"].values()
        assert decode_unverified(token)[0]["kid"] == new.kid
        assert server.verifier().verify(token)  # the JWKS this instance serves has the new key
    finally:
        other.close()


def test_scheduled_rotation_runs_once_per_interval_across_instances(
    tmp_path: Path, db_config: dict[str, Any]
) -> None:
    """Every instance runs the schedule; on one database they rotate once per interval
    between them, not once each."""
    settings = TransmitterSettings(
        dev_mode=True, secret_file=tmp_path / "s", signing_alg="ES256", key_rotation_interval=60, **db_config
    )
    a, b = Transmitter(settings), Transmitter(settings)
    try:
        first = a.keys.active.kid
        assert a.keys.rotate_due(60) is None  # the first key is new: not due
        a.keys.rotate()  # an operator's `keys rotate`
        assert b.keys.rotate_due(60) is None and a.keys.rotate_due(60) is None
        assert b.keys.rotate_due(0) is not None  # due: rotated
        assert a.keys.rotate_due(10) is None  # ... once: the other instance sees its key
        a.keys.reload()
        assert len({k.kid for k in a.keys.all()} - {first}) == 2
    finally:
        a.close()
        b.close()


def test_cli_clients_tokens_publish_and_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSF_TRANSMITTER_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("SSF_TRANSMITTER_SECRET_FILE", str(tmp_path / "secret"))
    monkeypatch.setenv("SSF_TRANSMITTER_SIGNING_ALG", "ES256")
    monkeypatch.setenv("SSF_TRANSMITTER_ISSUER", "https://tx.example")
    runner = CliRunner()
    out = runner.invoke(cli_app, ["client", "add", "rx1"])
    assert out.exit_code == 0, out.output
    assert (
        "client_id=" in out.output
        and "client_secret=" in out.output
        and "scope=ssf.read ssf.manage" in out.output
    )
    pub = runner.invoke(cli_app, ["client", "add", "idp", "--publisher", "--scope", "ssf.read"])
    assert "ssf.publish" in pub.output
    assert runner.invoke(cli_app, ["client", "add", "rx1"]).exit_code == 2  # duplicate name
    token = runner.invoke(cli_app, ["client", "token", "rx1"]).output.strip()
    tx = Transmitter(TransmitterSettings())
    principal = tx.auth.verify(f"Bearer {token}", "ssf.manage")
    from ssf.stream import StreamRequest

    stream = tx.create_stream(principal, StreamRequest(events_requested=[SESSION_REVOKED]))
    res = runner.invoke(
        cli_app,
        [
            "publish",
            SESSION_REVOKED,
            "--subject",
            '{"format":"email","email":"a@b.example"}',
            "--payload",
            '{"initiating_entity":"admin"}',
            "--txn",
            "t1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert list(json.loads(res.output)["jti"]) == [stream["stream_id"]]
    bad = runner.invoke(cli_app, ["publish", SESSION_REVOKED, "--subject", '{"format":"email"}'])
    assert bad.exit_code == 2
    before = tx.keys.active.kid
    assert runner.invoke(cli_app, ["keys", "rotate"]).exit_code == 0
    listing = runner.invoke(cli_app, ["keys", "list"]).output
    assert before in listing and "retired_at=" in listing and "active" in listing
    tx.keys.reload()
    assert tx.keys.active.kid != before
    tx.close()
    time.sleep(0)


def test_database_url_normalisation() -> None:
    assert normalize_database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_database_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert TransmitterSettings(database_url="postgresql://h/db").database_url.startswith(
        "postgresql+psycopg://"
    )
    assert TransmitterSettings().database_url == "sqlite:///ssf-transmitter.db"


def test_cli_operator_stream_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSF_TRANSMITTER_DATABASE_URL", f"sqlite:///{tmp_path / 'ops.db'}")
    monkeypatch.setenv("SSF_TRANSMITTER_SECRET_FILE", str(tmp_path / "secret"))
    monkeypatch.setenv("SSF_TRANSMITTER_SIGNING_ALG", "ES256")
    tx = Transmitter(TransmitterSettings())
    info, _ = tx.auth.add_client("rx")
    from ssf.stream import StreamRequest
    from transmitter.auth import Principal

    principal = Principal(info.client_id, frozenset({"ssf.read"}), info.client_id)
    sid = tx.create_stream(principal, StreamRequest(events_requested=[SESSION_REVOKED]))["stream_id"]
    runner = CliRunner()
    assert sid in runner.invoke(cli_app, ["streams", "list"]).output
    out = runner.invoke(cli_app, ["streams", "status", sid, "paused", "--reason", "maintenance"])
    assert out.exit_code == 0 and json.loads(out.output) == {
        "stream_id": sid,
        "status": "paused",
        "reason": "maintenance",
    }
    assert runner.invoke(cli_app, ["streams", "status", sid, "sleeping"]).exit_code == 2
    assert runner.invoke(cli_app, ["streams", "verify", "nope"]).exit_code == 2
    assert runner.invoke(cli_app, ["streams", "verify", sid]).exit_code == 0
    from ssf.poll import PollRequest

    sets, _ = tx.poll_once(principal, sid, PollRequest())
    events = [decode_unverified(t)[1]["events"] for t in sets.values()]
    # paused: the stream-updated notice is delivered, the verification waits for re-enable
    assert events == [
        {
            "https://schemas.openid.net/secevent/ssf/event-type/stream-updated": {
                "status": "paused",
                "reason": "maintenance",
            }
        }
    ]
    tx.close()


def test_allowed_destinations_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSF_TRANSMITTER_ALLOWED_PUSH_DESTINATIONS", "127.0.0.1, 10.0.0.0/8")
    assert TransmitterSettings().allowed_push_destinations == ["127.0.0.1", "10.0.0.0/8"]
    monkeypatch.setenv("SSF_TRANSMITTER_ALLOWED_PUSH_DESTINATIONS", '["rx.internal"]')
    assert TransmitterSettings().allowed_push_destinations == ["rx.internal"]
