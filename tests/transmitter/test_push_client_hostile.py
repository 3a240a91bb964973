"""The push client against hostile loopback receivers: every answer it cannot use ends in a
failure, soon and with bounded memory, never a hang (the client's total timeout here is 3 s)."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import Awaitable, Callable

import pytest

from transmitter.push_client import Answer, PushClient, PushTransportError
from transmitter.settings import TransmitterSettings
from transmitter.ssrf import GuardedResolver, SSRFGuard

HEADERS = {"Content-Type": "application/secevent+jwt"}
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _post(handler: Handler, max_answer: int = 16384) -> tuple[Answer | Exception, float, int, int]:
    """POST to a server running ``handler``: (answer or error, seconds, requests seen, peak bytes)."""
    seen = 0

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal seen
        try:
            await reader.readuntil(b"a.b.c")
            seen += 1
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(run, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = PushClient(GuardedResolver(SSRFGuard(TransmitterSettings(dev_mode=True))), timeout=3)
    tracemalloc.start()
    start = time.monotonic()
    try:
        got: Answer | Exception = await client.post(
            f"http://127.0.0.1:{port}/push", b"a.b.c", HEADERS, max_answer
        )
    except (PushTransportError, TimeoutError, OSError) as exc:
        got = exc
    finally:
        elapsed = time.monotonic() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        await client.close()
        server.close()
        await server.wait_closed()
    return got, elapsed, seen, peak


def _endless(first: bytes, chunk: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(first)
        while True:
            writer.write(chunk)
            await writer.drain()

    return handler


@pytest.mark.parametrize(
    ("first", "chunk"),
    [
        (b"HTTP/1.1 202 Accepted\r\nX-Long: ", b"v" * 65536),  # one endless header value
        (b"HTTP/1.1 202 Accepted\r\n", b"X-Many: v\r\n" * 4096),  # endless headers
        (b"", b"HTTP/1.1 100 Continue\r\n\r\n" * 2048),  # an endless flood of interim answers
    ],
    ids=["endless-value", "endless-headers", "1xx-flood"],
)
def test_an_endless_answer_head_fails_at_once_with_bounded_memory(first: bytes, chunk: bytes) -> None:
    got, elapsed, _, peak = asyncio.run(_post(_endless(first, chunk)))
    assert isinstance(got, PushTransportError), got
    assert elapsed < 2  # not the 3 s timeout
    assert peak < 4 * 1024 * 1024


def test_an_endless_body_is_cut_at_max_answer() -> None:
    got, elapsed, _, peak = asyncio.run(
        _post(
            _endless(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 999999999999\r\n\r\n", b"x" * 65536), 1000
        )
    )
    assert isinstance(got, Answer) and (got.status, len(got.body)) == (400, 1000)
    assert elapsed < 2 and peak < 4 * 1024 * 1024


def _then_close(answer: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer)
        await writer.drain()

    return handler


@pytest.mark.parametrize(
    "answer",
    [
        b"",
        b"HTTP/1.1 202 Acc",
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 10\r\n",
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 10\r\n\r\nabc",  # its declared length not met
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",  # cut inside a chunk
    ],
    ids=["nothing", "mid-status", "mid-head", "short-body", "mid-chunk"],
)
def test_a_connection_closed_mid_answer_is_a_transport_error(answer: bytes) -> None:
    got, elapsed, _, _ = asyncio.run(_post(_then_close(answer)))
    assert isinstance(got, PushTransportError), got
    assert elapsed < 2


def test_an_answer_before_the_request_is_read_is_taken_and_a_redirect_is_not_followed() -> None:
    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/elsewhere\r\nContent-Length: 0\r\n\r\n"
        )
        await writer.drain()
        await asyncio.sleep(0.2)

    got, _, seen, _ = asyncio.run(_post(early))
    assert isinstance(got, Answer) and got.status == 302  # the caller records a 3xx as a failure
    assert seen == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: upgrade\r\n\r\nraw bytes",
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nX-Bad: a\r\n b\r\n\r\n",  # obs-fold
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\nContent-Length: 0\r\n\r\nok",
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
    ids=["upgrade", "obs-fold", "two-lengths", "length-and-chunked"],
)
def test_an_ambiguous_or_upgrading_answer_is_not_taken_as_accepted(answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(0.5)

    got, elapsed, _, _ = asyncio.run(_post(handler))
    assert isinstance(got, PushTransportError), got
    assert elapsed < 2
