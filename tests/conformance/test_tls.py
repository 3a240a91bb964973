"""The TLS module against real TLS listeners on loopback, one per protocol policy."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conformance.registry import Outcome
from conformance.tx import TransmitterOptions, run_transmitter_plan
from tests.conformance.helpers import failed_ids

TLS = "kit-transmitter-tls"


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    crt = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("tls")
    (d / "c.pem").write_bytes(crt.public_bytes(serialization.Encoding.PEM))
    (d / "k.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return d / "c.pem", d / "k.pem"


@asynccontextmanager
async def tls_listener(cert: tuple[Path, Path], low: str, high: str) -> AsyncIterator[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*cert)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = getattr(ssl.TLSVersion, low)
        ctx.maximum_version = getattr(ssl.TLSVersion, high)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"https://127.0.0.1:{port}/tx"
    finally:
        server.close()
        await server.wait_closed()


async def run_tls(issuer: str) -> set[str]:
    report = await run_transmitter_plan(
        TransmitterOptions(issuer=issuer, token="t", http_timeout=5), only=[TLS]
    )
    return failed_ids(report)


async def test_modern_tls_passes(cert: tuple[Path, Path]) -> None:
    async with tls_listener(cert, "TLSv1_2", "TLSv1_3") as issuer:
        report = await run_transmitter_plan(TransmitterOptions(issuer=issuer, token="t"), only=[TLS])
    assert not report.failures()
    assert {r.check.id for r in report.results() if r.outcome is Outcome.PASSED} >= {
        "tls.modern",
        "tls.13-offered",
    }


async def test_legacy_tls_accepted_is_reported(cert: tuple[Path, Path]) -> None:
    async with tls_listener(cert, "TLSv1", "TLSv1_3") as issuer:
        assert "tls.no-legacy" in await run_tls(issuer)


async def test_missing_tls13_is_reported(cert: tuple[Path, Path]) -> None:
    async with tls_listener(cert, "TLSv1_2", "TLSv1_2") as issuer:
        assert await run_tls(issuer) == {"tls.13-offered"}


async def test_legacy_only_server_fails_modern(cert: tuple[Path, Path]) -> None:
    async with tls_listener(cert, "TLSv1", "TLSv1_1") as issuer:
        assert {"tls.modern", "tls.no-legacy", "tls.13-offered"} <= await run_tls(issuer)


async def test_http_issuer_skips_tls() -> None:
    report = await run_transmitter_plan(
        TransmitterOptions(issuer="http://127.0.0.1:9/tx", token="t"), only=[TLS]
    )
    assert report.modules[0].skipped_reason == "the transmitter is not served over https"
