"""`ssf receiver streams …`: the operator's stream management against a transmitter on the wire."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response
from typer.testing import CliRunner, Result

from receiver.cli import app
from receiver.store import SQLStore
from ssf import uris
from tests.receiver.fake import CLIENT_ID, CLIENT_SECRET, FakeTransmitter
from tests.support.services import free_port, serve

SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
CREDENTIAL_CHANGE = "https://schemas.openid.net/secevent/caep/event-type/credential-change"


class RecordingTransmitter(FakeTransmitter):
    """The receiver tests' fake, also recording status updates."""

    async def status_ep(self, request: Request) -> Response:
        if request.method == "POST":
            self.requests.append(("STATUS", str(request.url), json.loads(await request.body())))
        return await super().status_ep(request)


@pytest.fixture
def tx() -> Iterator[FakeTransmitter]:
    port = free_port()
    fake = RecordingTransmitter(port)
    with serve(fake.app, port=port):
        yield fake


def _seed(tx: FakeTransmitter, db: str, *, stored: bool = True) -> str:
    sid = "stream_cli"
    tx.streams[sid] = tx._config(sid, {"events_requested": [SESSION_REVOKED], "description": "orig"})

    async def save() -> None:
        store = SQLStore(db)
        await store.open()
        if stored:
            record = {**tx.streams[sid], "_receiver": {"push_authorization": "Bearer remembered"}}
            await store.save_stream(tx.issuer, record)
        await store.close()

    asyncio.run(save())
    return sid


@pytest.fixture
def env(tx: FakeTransmitter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    db = f"sqlite:///{tmp_path}/r.db"
    for name, value in {
        "TRANSMITTER_ISSUER": tx.issuer,
        "DEV_MODE": "true",
        "CLIENT_ID": CLIENT_ID,
        "CLIENT_SECRET": CLIENT_SECRET,
        "DATABASE_URL": db,
        "PUSH_URL": "http://127.0.0.1:9/ssf/push",
        "EVENTS": json.dumps([SESSION_REVOKED, CREDENTIAL_CHANGE]),
        "DESCRIPTION": "from settings",
    }.items():
        monkeypatch.setenv(f"SSF_RECEIVER_{name}", value)
    return db


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, ["streams", *args])


def ok_json(*args: str) -> Any:
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def failed(result: Result, *needles: str) -> None:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not an escaped exception
    assert "Traceback" not in result.output and "error:" in result.output
    for needle in needles:
        assert needle in result.output


def last(tx: FakeTransmitter, method: str) -> tuple[str, Any]:
    _, url, body = [r for r in tx.requests if r[0] == method][-1]
    return url, body


def test_read_uses_the_stored_stream_and_lists(tx: FakeTransmitter, env: str) -> None:
    sid = _seed(tx, env)
    out = ok_json("read")
    assert out["stream_id"] == sid and out["description"] == "orig"
    assert out["events_requested"] == [SESSION_REVOKED] and out["iss"] == tx.issuer
    url, _ = last(tx, "GET")
    assert url.endswith(f"/streams?stream_id={sid}")
    text = invoke("read")
    assert text.exit_code == 0 and sid in text.stdout and SESSION_REVOKED in text.stdout
    listed = ok_json("read", "--all")
    assert [c["stream_id"] for c in listed["streams"]] == [sid]
    assert last(tx, "GET")[0].endswith("/streams")


def test_update_patches_only_what_is_given(tx: FakeTransmitter, env: str) -> None:
    sid = _seed(tx, env)
    out = ok_json("update", "--description", "patched", "--events", f"{SESSION_REVOKED},{CREDENTIAL_CHANGE}")
    _, body = last(tx, "PATCH")
    assert body == {
        "stream_id": sid,
        "description": "patched",
        "events_requested": [SESSION_REVOKED, CREDENTIAL_CHANGE],
    }
    assert out["description"] == "patched" and out["events_requested"] == [SESSION_REVOKED, CREDENTIAL_CHANGE]
    text = invoke("update", "--stream-id", sid, "--description", "again")
    assert text.exit_code == 0 and "description: again" in text.stdout
    assert last(tx, "PATCH")[1] == {"stream_id": sid, "description": "again"}
    nothing = invoke("update")
    assert nothing.exit_code == 2 and "nothing to update" in nothing.output


def test_replace_puts_the_full_receiver_supplied_set(tx: FakeTransmitter, env: str) -> None:
    sid = _seed(tx, env)
    out = ok_json("replace")
    _, body = last(tx, "PUT")
    assert body == {
        "stream_id": sid,
        "events_requested": [SESSION_REVOKED, CREDENTIAL_CHANGE],
        "delivery": {
            "method": uris.PUSH,
            "endpoint_url": "http://127.0.0.1:9/ssf/push",
            # the receiver's remembered push credential, so pushes keep authenticating
            "authorization_header": "Bearer remembered",
        },
        "description": "from settings",
    }
    assert out["stream_id"] == sid and out["delivery"]["method"] == uris.PUSH
    ok_json("replace", "--events", SESSION_REVOKED, "--description", "put")
    _, body = last(tx, "PUT")
    assert body["events_requested"] == [SESSION_REVOKED] and body["description"] == "put"
    assert tx.streams[sid]["description"] == "put"


def test_status_read_and_set(tx: FakeTransmitter, env: str) -> None:
    sid = _seed(tx, env)
    assert ok_json("status") == {"stream_id": sid, "status": "enabled"}
    out = ok_json("status", "--set", "paused", "--reason", "conformance test")
    assert out == {"stream_id": sid, "status": "paused"}
    assert last(tx, "STATUS")[1] == {"stream_id": sid, "status": "paused", "reason": "conformance test"}
    assert tx.streams[sid]["_status"] == "paused"
    text = invoke("status")
    assert text.exit_code == 0 and f"stream {sid}: paused" in text.stdout
    bad = invoke("status", "--set", "sleeping")
    assert bad.exit_code == 2 and "enabled, paused, disabled" in bad.output
    lonely = invoke("status", "--reason", "why")
    assert lonely.exit_code == 2 and "--reason needs --set" in lonely.output


def test_verify_sends_the_state(tx: FakeTransmitter, env: str) -> None:
    sid = _seed(tx, env)
    assert ok_json("verify", "--state", "op-state-1") == {
        "stream_id": sid,
        "verification_requested": True,
        "state": "op-state-1",
    }
    text = invoke("verify")
    assert text.exit_code == 0 and "verification requested" in text.stdout
    assert tx.verifications == ["op-state-1", None]
    assert len(tx.queue) == 2  # poll stream: both verification SETs queued by the transmitter


def test_delete_removes_the_stream(tx: FakeTransmitter, env: str) -> None:
    sid = _seed(tx, env)
    assert ok_json("delete") == {"stream_id": sid, "deleted": True}
    assert sid not in tx.streams
    url, _ = last(tx, "DELETE")
    assert url.endswith(f"/streams?stream_id={sid}")
    failed(invoke("delete"), f"stream {sid} is unknown to the transmitter")


@pytest.mark.parametrize(
    "args",
    [
        ["read"],
        ["update", "--description", "x"],
        ["replace"],
        ["status"],
        ["status", "--set", "enabled"],
        ["verify"],
        ["delete"],
    ],
)
def test_unknown_stream_is_a_clear_error(tx: FakeTransmitter, env: str, args: list[str]) -> None:
    _seed(tx, env)
    failed(invoke(*args, "--stream-id", "nope"), "stream nope is unknown to the transmitter")


def test_no_stream_id_anywhere(tx: FakeTransmitter, env: str) -> None:
    _seed(tx, env, stored=False)
    failed(invoke("read"), "no stream id")


def test_transmitter_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSF_RECEIVER_TRANSMITTER_ISSUER", f"http://127.0.0.1:{free_port()}/t")
    monkeypatch.setenv("SSF_RECEIVER_DEV_MODE", "true")
    monkeypatch.setenv("SSF_RECEIVER_STATIC_TOKEN", "tok")
    monkeypatch.setenv("SSF_RECEIVER_DATABASE_URL", f"sqlite:///{tmp_path}/r.db")
    for args in (["read", "--stream-id", "s"], ["delete", "--stream-id", "s"]):
        failed(invoke(*args), "discovery at", "failed")


def test_no_issuer_configured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SSF_RECEIVER_TRANSMITTER_ISSUER", raising=False)
    monkeypatch.setenv("SSF_RECEIVER_DATABASE_URL", f"sqlite:///{tmp_path}/r.db")
    failed(invoke("read"), "SSF_RECEIVER_TRANSMITTER_ISSUER is not set")


def test_streams_are_mounted_under_ssf() -> None:
    from ssfcli.main import app as ssf_app

    result = CliRunner().invoke(ssf_app, ["receiver", "streams", "--help"])
    assert result.exit_code == 0
    for name in ("read", "update", "replace", "status", "verify", "delete"):
        assert name in result.output


def test_a_refused_client_secret_says_what_the_token_endpoint_said(
    tx: FakeTransmitter, env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = _seed(tx, env)
    monkeypatch.setenv("SSF_RECEIVER_CLIENT_SECRET", "not-the-secret")
    failed(invoke("read", "--stream-id", sid), "token endpoint answered 401 (invalid_client)")
