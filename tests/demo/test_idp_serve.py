"""``python -m demo.idp_serve`` (the docker-compose ``idp`` service command) runs from its settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from demo.idp_settings import IdPSettings
from tests.support.services import free_port


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


def test_idp_serve_process() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "SSF_DEMO_IDP_ISSUER": url,
        "SSF_DEMO_IDP_AUDIENCE": "https://api.example.com",
        "SSF_DEMO_IDP_OAUTH_CLIENTS": json.dumps(
            {"api": {"secret": "s", "scope": "ssf.read", "audience": "x"}}
        ),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "demo.idp_serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                jwks = httpx.get(f"{url}/jwks.json", timeout=1)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
                assert time.monotonic() < deadline, "the identity provider did not start"
                time.sleep(0.1)
        assert jwks.json()["keys"][0]["kty"] == "RSA"
        token = httpx.post(
            f"{url}/oauth/token", data={"grant_type": "client_credentials"}, auth=("api", "s"), timeout=5
        )
        assert token.status_code == 200 and token.json()["scope"] == "ssf.read"
        login = httpx.post(f"{url}/login", json={"username": "grace"}, timeout=5)
        assert login.status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_idp_serve_refuses_incomplete_publisher_settings() -> None:
    env = {**os.environ, "SSF_DEMO_IDP_TRANSMITTER_URL": "http://127.0.0.1:9"}
    done = subprocess.run(
        [sys.executable, "-m", "demo.idp_serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "SSF_DEMO_IDP_PUBLISHER_CLIENT_ID" in done.stderr
