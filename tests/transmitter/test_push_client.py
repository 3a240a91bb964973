"""The push HTTP client against real loopback servers: TLS checks, reuse, answers, limits."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.services import serve
from transmitter.push_client import Answer, PushClient, PushTransportError
from transmitter.settings import TransmitterSettings
from transmitter.ssrf import GuardedResolver, SSRFGuard

HEADERS = {"Content-Type": "application/secevent+jwt", "Accept": "application/json"}


def _cert(d: Path, name: str, san: x509.GeneralName) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    crt = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (d / f"{name}.crt").write_bytes(crt.public_bytes(serialization.Encoding.PEM))
    (d / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return d / f"{name}.crt", d / f"{name}.key"


def _client(**kwargs: object) -> PushClient:
    settings = TransmitterSettings(dev_mode=True)
    return PushClient(GuardedResolver(SSRFGuard(settings)), timeout=3, **kwargs)  # type: ignore[arg-type]


peers: list[tuple[str, int]] = []


async def _push(request: Request) -> Response:
    peers.append(request.scope["client"])
    body = await request.body()
    if body == b"busy":
        return Response(b"", 503, headers={"Retry-After": "7"})
    if body == b"slow":
        await asyncio.sleep(10)
    return Response(b'{"ok": true}', 202 if body.count(b".") == 2 else 400)


APP = Starlette(routes=[Route("/push", _push, methods=["POST"])])


def test_https_receiver_certificate_and_name_are_checked(tmp_path: Path) -> None:
    good_crt, good_key = _cert(tmp_path, "good", x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    other_crt, other_key = _cert(tmp_path, "other", x509.DNSName("other.example"))

    async def run(url: str, ctx: ssl.SSLContext | None) -> int:
        client = _client(ssl_context=ctx)
        try:
            return (await client.post(url + "/push", b"a.b.c", HEADERS, 16384)).status
        finally:
            await client.close()

    with serve(APP, ssl_certfile=str(good_crt), ssl_keyfile=str(good_key)) as url:
        url = url.replace("http://", "https://")
        assert asyncio.run(run(url, ssl.create_default_context(cafile=str(good_crt)))) == 202
        with pytest.raises(ssl.SSLCertVerificationError):  # not in the system's trust store
            asyncio.run(run(url, None))
    with serve(APP, ssl_certfile=str(other_crt), ssl_keyfile=str(other_key)) as url:
        url = url.replace("http://", "https://")
        with pytest.raises(ssl.SSLCertVerificationError):  # trusted, but for another name
            asyncio.run(run(url, ssl.create_default_context(cafile=str(other_crt))))


def test_connection_reused_answers_and_retry_after() -> None:
    async def run(url: str) -> None:
        client = _client()
        try:
            peers.clear()
            for _ in range(5):
                answer = await client.post(url + "/push", b"a.b.c", HEADERS, 16384)
                assert (answer.status, answer.body) == (202, b'{"ok": true}')
            assert len(set(peers)) == 1  # one connection for all five
            answer = await client.post(url + "/push", b"busy", HEADERS, 16384)
            assert (answer.status, answer.retry_after) == (503, "7")
            answer = await client.post(url + "/push", b"nope", HEADERS, 4)
            assert (answer.status, answer.body) == (400, b'{"ok')  # cut at the bound
            answer = await client.post(url + "/push?x=1", b"a.b.c", HEADERS, 16384)
            assert answer.status == 202
        finally:
            await client.close()

    with serve(APP) as url:
        asyncio.run(run(url))


def test_timeout_refused_headers_and_closed_port() -> None:
    async def run(url: str) -> None:
        client = _client()
        try:
            with pytest.raises(TimeoutError):
                await client.post(url + "/push", b"slow", HEADERS, 16384)
            with pytest.raises(PushTransportError):
                await client.post(url + "/push", b"a.b.c", {"Authorization": "x\r\nX-Evil: 1"}, 16384)
            assert (await client.post(url + "/push", b"a.b.c", HEADERS, 16384)).status == 202
        finally:
            await client.close()

    with serve(APP) as url:
        asyncio.run(run(url))
        port = url.rsplit(":", 1)[1]

    async def closed() -> None:
        client = _client()
        try:
            with pytest.raises(OSError):
                await client.post(f"http://127.0.0.1:{port}/push", b"a.b.c", HEADERS, 16384)
        finally:
            await client.close()

    asyncio.run(closed())


async def _post_to_raw_server(chunks: list[bytes], linger: float = 0.01) -> Answer:
    """POST a SET to a loopback server that writes ``chunks`` (a pause after each), then closes."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"a.b.c")
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(linger)
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = _client()
    try:
        return await client.post(f"http://127.0.0.1:{port}/push", b"a.b.c", HEADERS, 16384)
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("chunks", "status", "body"),
    [
        # An interim answer, then the real one, in one write and in two.
        ([b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"], 202, b""),
        (
            [
                b"HTTP/1.1 103 Early Hints\r\nRetry-After: 9\r\n\r\n",
                b"HTTP/1.1 202 OK\r\nContent-Length: 2\r\n\r\nok",
            ],
            202,
            b"ok",
        ),
        # No length: the answer ends with the connection.
        ([b'HTTP/1.1 400 Bad Request\r\n\r\n{"err":"invalid_request"}'], 400, b'{"err":"invalid_request"}'),
    ],
    ids=["interim-one-write", "interim-two-writes", "until-close"],
)
def test_raw_answers_are_read_to_their_end(chunks: list[bytes], status: int, body: bytes) -> None:
    got = asyncio.run(_post_to_raw_server(chunks))
    assert (got.status, got.body, got.retry_after) == (status, body, None)


def test_a_malformed_answer_is_a_transport_error() -> None:
    with pytest.raises(PushTransportError):
        asyncio.run(_post_to_raw_server([b"HTTP/1.1 abc\r\n\r\n"], linger=0.2))
