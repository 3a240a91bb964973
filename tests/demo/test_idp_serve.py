"""``python -m demo.idp_serve`` (the docker-compose ``idp`` service command) is built from its settings."""

from __future__ import annotations

import json

import pytest

from demo import idp_serve
from demo.idp_settings import IdPSettings


def test_settings_parse_clients() -> None:
    settings = IdPSettings(
        oauth_clients=json.dumps(
            {"api": {"secret": "s", "scope": "ssf.read ssf.manage", "audience": "http://t"}}
        )
    )
    (client,) = settings.clients()
    assert (client.client_id, client.secret, client.scopes, client.audience) == (
        "api",
        "s",
        ("ssf.read", "ssf.manage"),
        "http://t",
    )
    with pytest.raises(ValueError, match="needs a 'secret'"):
        IdPSettings(oauth_clients='{"api": {}}').clients()


def test_idp_serve_refuses_incomplete_publisher_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """(tests/deploy/test_compose_processes.py runs the command itself as a process.)"""
    monkeypatch.setenv("SSF_DEMO_IDP_TRANSMITTER_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("SSF_DEMO_IDP_PUBLISHER_CLIENT_ID", raising=False)
    with pytest.raises(SystemExit) as exit_:
        idp_serve.main(["--port", "9"])
    assert exit_.value.code == 2
    assert "SSF_DEMO_IDP_PUBLISHER_CLIENT_ID" in capsys.readouterr().err


def test_build_wires_the_publisher(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSF_DEMO_IDP_TRANSMITTER_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("SSF_DEMO_IDP_PUBLISHER_CLIENT_ID", "idp")
    monkeypatch.setenv("SSF_DEMO_IDP_PUBLISHER_CLIENT_SECRET", "s")
    monkeypatch.setenv("SSF_DEMO_IDP_ISSUER", "http://idp.test")
    idp = idp_serve.build(IdPSettings())
    assert idp.issuer == "http://idp.test" and idp.publisher is not None
    assert idp.publisher.transmitter_url == "http://127.0.0.1:9"
