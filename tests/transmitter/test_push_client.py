"""The push HTTP client against real loopback servers: TLS checks, reuse, answers, limits."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conformance.rx.tlsfront import Pair, make_certificates
from tests.support.services import serve
from transmitter.push_client import Answer, PushClient, PushTransportError
from transmitter.settings import TransmitterSettings
from transmitter.ssrf import GuardedResolver, SSRFGuard

HEADERS = {"Content-Type": "application/secevent+jwt", "Accept": "application/json"}


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
    certs = make_certificates("127.0.0.1")  # the conformance kit's throwaway CA and leaves
    (tmp_path / "ca.pem").write_bytes(certs.ca)
    trusting = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))

    async def run(url: str, ctx: ssl.SSLContext | None) -> int:
        client = _client(ssl_context=ctx)
        try:
            return (await client.post(url + "/push", b"a.b.c", HEADERS, 16384)).status
        finally:
            await client.close()

    def files(name: str, pair: Pair) -> dict[str, Any]:
        (tmp_path / f"{name}.crt").write_bytes(pair.cert)
        (tmp_path / f"{name}.key").write_bytes(pair.key)
        return {"ssl_certfile": str(tmp_path / f"{name}.crt"), "ssl_keyfile": str(tmp_path / f"{name}.key")}

    with serve(APP, **files("trusted", certs.trusted)) as url:
        url = url.replace("http://", "https://")
        assert asyncio.run(run(url, trusting)) == 202
        with pytest.raises(ssl.SSLCertVerificationError):  # its CA is not in the system's store
            asyncio.run(run(url, None))
    with serve(APP, **files("wrong", certs.wrong_host)) as url:
        url = url.replace("http://", "https://")
        with pytest.raises(ssl.SSLCertVerificationError):  # trusted, but for another name
            asyncio.run(run(url, trusting))


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
