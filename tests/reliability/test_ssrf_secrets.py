"""SSRF guard (hostnames resolving to loopback/private addresses, numeric and IPv6 forms,
redirects, connect-time re-check), constant-time secret comparisons, secrets at rest."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ssf.errors import ModelError
from tests.reliability.support import SESSION_REVOKED, pg_schema, wait_until
from tests.reliability.test_limits import transmitter
from tests.support.services import require_postgres, serve
from transmitter.service import Transmitter
from transmitter.settings import TransmitterSettings
from transmitter.ssrf import GuardedResolver, SSRFGuard

FORBIDDEN = [
    "https://localhost/push",
    "https://localhost./push",
    "https://127.0.0.1/push",
    "https://127.1/push",  # short dotted form
    "https://2130706433/push",  # integer form of 127.0.0.1
    "https://0x7f000001/push",  # hex form
    "https://0177.0.0.1/push",  # octal form
    "https://[::1]/push",
    "https://[::ffff:127.0.0.1]/push",  # IPv4-mapped IPv6
    "https://[0:0:0:0:0:ffff:7f00:1]/push",
    "https://[::]/push",
    "https://0.0.0.0/push",
    "https://10.0.0.7/push",
    "https://172.16.3.4/push",
    "https://192.168.1.1/push",
    "https://100.64.0.1/push",  # carrier-grade NAT
    "https://169.254.169.254/latest/meta-data",  # cloud metadata
    "https://[fd00:ec2::254]/push",
    "https://[2002:7f00:1::]/push",  # 6to4 carrying 127.0.0.1
    "https://[2002:a9fe:a9fe::]/push",  # 6to4 carrying the metadata address
    "https://[64:ff9b::a00:7]/push",  # NAT64 carrying 10.0.0.7
    "https://[64:ff9b::7f00:1]/push",  # NAT64 carrying 127.0.0.1
    "https://[fe80::1]/push",
    "https://[fc00::1]/push",
    "https://224.0.0.1/push",
    "http://example.com/push",  # not https
    "https://user:pw@example.com/push",  # credentials in the URL
    "ftp://example.com/push",
]


@pytest.mark.parametrize("url", FORBIDDEN)
def test_guard_refuses_loopback_private_and_odd_forms(url: str) -> None:
    guard = SSRFGuard(TransmitterSettings(dev_mode=False))
    with pytest.raises(ModelError):
        guard.check_url(url)


def test_guard_allows_only_what_the_operator_listed() -> None:
    guard = SSRFGuard(TransmitterSettings(dev_mode=False, allowed_push_destinations="10.0.0.0/8,localhost"))
    guard.check_url("https://10.1.2.3/push")
    guard.check_url("https://localhost/push")
    with pytest.raises(ModelError):
        guard.check_url("https://192.168.1.1/push")


async def test_connect_time_resolver_refuses_forbidden_addresses() -> None:
    """DNS rebinding: the URL passed the check earlier, the dialled address is re-checked."""
    resolver = GuardedResolver(SSRFGuard(TransmitterSettings(dev_mode=False)))
    try:
        with pytest.raises(OSError, match="refused"):
            await resolver.resolve("localhost", 443)
        with pytest.raises(OSError, match="refused"):
            await resolver.resolve("127.0.0.1", 443)
    finally:
        await resolver.close()
    allowed = GuardedResolver(
        SSRFGuard(TransmitterSettings(dev_mode=False, allowed_push_destinations="127.0.0.0/8"))
    )
    try:
        assert (await allowed.resolve("127.0.0.1", 443))[0]["host"] == "127.0.0.1"
    finally:
        await allowed.close()


def test_management_api_refuses_a_private_push_endpoint(tmp_path: Path) -> None:
    with transmitter(tmp_path, dev_mode=False, issuer="https://tx.example") as (url, tx):
        info, _ = tx.auth.add_client("ssrf")
        token = tx.auth.issue_token(info, None)["access_token"]
        for endpoint in ("https://localhost:9/x", "https://[::ffff:10.0.0.1]/x", "https://169.254.169.254/"):
            r = httpx.post(
                url + "/ssf/streams",
                headers={"Authorization": f"Bearer {token}"},
                json={"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": endpoint}},
            )
            assert r.status_code == 400 and "endpoint_url" in r.json()["description"]
        assert not tx.list_streams()


def test_push_never_follows_a_redirect(tmp_path: Path) -> None:
    hits: dict[str, int] = {"push": 0, "trap": 0}
    lock = threading.Lock()

    async def push(request: Request) -> Response:
        await request.body()
        with lock:
            hits["push"] += 1
        return Response(status_code=307, headers={"Location": "/trap"})

    async def trap(request: Request) -> Response:
        with lock:
            hits["trap"] += 1
        return Response(status_code=202)

    sink = Starlette(routes=[Route("/push", push, methods=["POST"]), Route("/trap", trap, methods=["POST"])])
    with (
        serve(sink) as sink_url,
        transmitter(tmp_path, retry_base_seconds=0.05, retry_max_seconds=0.1, worker_poll_interval=0.1) as (
            url,
            tx,
        ),
    ):
        info, _ = tx.auth.add_client("redir")
        token = tx.auth.issue_token(info, None)["access_token"]
        r = httpx.post(
            url + "/ssf/streams",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "events_requested": [SESSION_REVOKED],
                "delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": sink_url + "/push"},
            },
        )
        sid = r.json()["stream_id"]
        tx.publish({"format": "email", "email": "r@example.com"}, {SESSION_REVOKED: {}})
        wait_until(lambda: hits["push"] >= 3, what="retries after the 307")
        assert hits["trap"] == 0
        assert tx.outbox_counts(sid).get("pending") == 1  # a redirect is not a delivery


def test_secret_comparisons_are_constant_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    import receiver.credential as cred_mod
    import transmitter.secrets_box as box_mod

    monkeypatch.setattr(cred_mod.hmac, "compare_digest", spy)
    assert box_mod.hmac is cred_mod.hmac  # the same module object: patched for both
    with transmitter(tmp_path) as (url, tx):
        info, secret = tx.auth.add_client("ct")
        calls.clear()
        r = httpx.post(
            url + "/oauth/token", data={"grant_type": "client_credentials"}, auth=(info.client_id, secret)
        )
        assert r.status_code == 200
        assert any(tx.box.hash_client_secret(secret) in (a, b) for a, b in calls)  # client secret
        calls.clear()
        token = r.json()["access_token"]
        assert (
            httpx.get(url + "/ssf/streams", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        )
        assert calls, "the HS256 access token MAC was not compared with compare_digest"
    # the receiver's push Authorization check: see also test_limits (the same endpoint)
    from receiver.core import Receiver
    from receiver.push import PushEndpoint
    from receiver.settings import ReceiverSettings
    from receiver.store import MemoryStore

    rcv = Receiver(
        ReceiverSettings(database_url="memory", push_authorization="Bearer s3cret"), store=MemoryStore()
    )
    endpoint = PushEndpoint(rcv)
    sent: list[dict[str, Any]] = []

    async def call() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"x", "more_body": False}

        async def send(msg: dict[str, Any]) -> None:
            sent.append(msg)

        scope = {
            "type": "http",
            "method": "POST",
            "headers": [(b"authorization", b"Bearer guess")],
            "client": ("1.2.3.4", 1),
        }
        await endpoint(scope, receive, send)

    calls.clear()
    asyncio.run(call())
    assert sent[0]["status"] == 401
    # the push credential is checked by digest (fixed length: its length leaks nothing either)
    assert (hashlib.sha256(b"Bearer guess").digest(), hashlib.sha256(b"Bearer s3cret").digest()) in calls


def _secrets_fixture(tx: Transmitter) -> list[str]:
    """Make every kind of secret the transmitter keeps; return their plaintexts."""
    header = "Bearer at-rest-" + secrets.token_urlsafe(24)
    info, client_secret = tx.auth.add_client("dump-" + secrets.token_hex(3))
    from ssf.stream import StreamRequest
    from transmitter.auth import Principal

    principal = Principal(info.client_id, frozenset({"ssf.manage"}), info.audience)
    req = StreamRequest.model_validate(
        {
            "delivery": {
                "method": "urn:ietf:rfc:8935",
                "endpoint_url": "https://rx.example/push",
                "authorization_header": header,
            }
        }
    )
    tx.create_stream(principal, req)
    private = tx.keys.active.private_jwk()
    return [header, header.split(" ", 1)[1], client_secret, str(private["d"])]


def test_secrets_at_rest_are_not_in_a_sqlite_dump(tmp_path: Path) -> None:
    db = tmp_path / "tx.db"
    tx = Transmitter(
        TransmitterSettings(
            database_url=f"sqlite:///{db}",
            secret_file=tmp_path / "secret",
            signing_alg="ES256",
            dev_mode=True,
        )
    )
    try:
        plain = _secrets_fixture(tx)
    finally:
        tx.close()
    con = sqlite3.connect(db)
    dump = "\n".join(con.iterdump())
    con.close()
    assert "ssf_stream" in dump and "ssf_key" in dump  # the dump is real
    for value in plain:
        assert value not in dump
    assert (tmp_path / "secret").read_text().strip() not in dump


def test_secrets_at_rest_are_not_in_a_pg_dump(tmp_path: Path) -> None:
    url = require_postgres()
    with pg_schema(url) as schema:
        tx = Transmitter(
            TransmitterSettings(
                database_url=url,
                database_schema=schema,
                secret_key="k-" + secrets.token_urlsafe(16),
                signing_alg="ES256",
                dev_mode=True,
            )
        )
        try:
            plain = _secrets_fixture(tx)
        finally:
            tx.close()
        dump = subprocess.run(
            ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "-n", schema, "--data-only", "test"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert "ssf_stream" in dump and "ssf_client" in dump
        for value in plain:
            assert value not in dump
