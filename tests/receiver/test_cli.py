"""`ssf receiver status` reads the stored stream and state."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from receiver.cli import app
from receiver.state import CUTOFF, Mutation, RevocationState
from receiver.store import SQLStore, WriteBatch
from ssf.subjects import Subject


def test_status_prints_stream_and_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/r.db"

    async def seed() -> None:
        store = SQLStore(url)
        await store.open()
        state = RevocationState()
        m = Mutation(Subject.opaque("s1"), CUTOFF, math.inf, 1.0)
        state.apply(m)
        await store.commit(
            WriteBatch(
                [("j1", b"x" * 16, 1e12)],
                [m],
                {m.subject.key: [x.to_json() for x in state.export(m.subject)]},
            )
        )
        await store.save_stream(
            "https://t.example", {"stream_id": "st-1", "delivery": {"method": "urn:ietf:rfc:8935"}}
        )
        await store.close()

    asyncio.run(seed())
    monkeypatch.setenv("SSF_RECEIVER_DATABASE_URL", url)
    monkeypatch.setenv("SSF_RECEIVER_TRANSMITTER_ISSUER", "https://t.example")
    result = CliRunner().invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["stream"]["stream_id"] == "st-1"
    assert out["state"]["revoked_sessions"] == 1 and out["jtis"] == 1
    text = CliRunner().invoke(app, ["status"])
    assert "st-1" in text.output and "revoked_sessions: 1" in text.output


def test_serve_command_is_mounted_under_ssf() -> None:
    from ssfcli.main import app as ssf_app

    result = CliRunner().invoke(ssf_app, ["receiver", "serve", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--no-demo"):
        assert option in result.output
