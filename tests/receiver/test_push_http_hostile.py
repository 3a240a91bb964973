"""receiver.push_http against hostile clients on loopback: smuggling and desync attempts are
refused or handed to uvicorn whole, and slow or endless requests do not hold a connection."""

from __future__ import annotations

import socket
import time

import pytest

from tests.receiver.test_push_http import AUTH, Reader, Server, push, server

__all__ = ["server"]


def _accepted(server: Server) -> int:
    return int(server.receiver.stats["accepted"])


def _answers(sock: socket.socket) -> list[int]:
    """The statuses the server answers until it closes the connection."""
    reader = Reader(sock)
    got = []
    while not reader.closed():
        got.append(reader.next().status)
    return got


@pytest.mark.parametrize(
    "head",
    [
        b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n",
        b"Content-Length: %d\r\nContent-Length: 0\r\n",
        b"Content-Length: 0\r\nContent-Length: %d\r\n",
        b"Content-Length: %d, 0\r\n",
        b"Content-Length: +%d\r\n",
        b"Content-Length:\r\n %d\r\n",  # obs-fold
        b"Content-Length: %d\n",  # bare LF
        b"X-Pad: a\nContent-Length: %d\r\n",
        b"Transfer-Encoding: chunked, identity\r\nContent-Length: %d\r\n",
    ],
)
def test_a_smuggled_push_in_a_body_is_never_applied(server: Server, head: bytes) -> None:
    """The outer body is a whole second push: applied only if a parser split the bytes
    differently from the declared framing (a desync)."""
    inner = push(server.set_())
    outer = (
        b"POST /ssf/push HTTP/1.1\r\nHost: rx\r\nContent-Type: application/secevent+jwt\r\n"
        b"Authorization: %s\r\n" % AUTH + head % len(inner) + b"\r\n" + inner
    )
    before = _accepted(server)
    with server.connect() as sock:
        sock.sendall(outer)
        sock.shutdown(socket.SHUT_WR)
        statuses = _answers(sock)
    assert statuses and all(s == 400 for s in statuses), statuses
    assert _accepted(server) == before


def test_requests_after_a_refused_push_and_http_1_0_keep_alive(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(push(b"x", auth=b"Bearer wrong") + push(b"not a SET") + push(server.set_()))
        reader = Reader(sock)
        assert [reader.next().status for _ in range(3)] == [401, 400, 202]
    one_oh = push(server.set_(), extra=b"Connection: keep-alive\r\n").replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    with server.connect() as sock:
        sock.sendall(one_oh + push(server.set_()))
        sock.shutdown(socket.SHUT_WR)
        assert _answers(sock) in ([202], [202, 202])  # uvicorn's, which may close after the first


def _trickle(sock: socket.socket, wire: bytes, every: float, seconds: float) -> float:
    """Send ``wire`` a byte every ``every`` s until the server closes: how long it took."""
    start = time.monotonic()
    for i in range(len(wire)):
        try:
            sock.sendall(wire[i : i + 1])
        except OSError:
            break
        if time.monotonic() - start > seconds:
            break
        time.sleep(every)
    sock.settimeout(max(0.1, seconds - (time.monotonic() - start)))
    try:
        while sock.recv(65536):
            pass
    except (TimeoutError, ConnectionResetError):
        pass
    return time.monotonic() - start


@pytest.mark.parametrize("part", ["head", "body"])
def test_a_request_trickled_byte_by_byte_is_closed_after_the_keep_alive_timeout(
    server: Server, part: str
) -> None:
    """The fixture's keep-alive timeout is 2 s: bytes 0.5 s apart do not keep a push that never
    completes alive (slowloris)."""
    wire = push(server.set_())
    head = wire.index(b"\r\n\r\n") + 4
    with server.connect() as sock:
        if part == "body":
            sock.sendall(wire[:head])
            wire = wire[head:]
        took = _trickle(sock, wire, 0.5, 8)
    assert took < 4.5, took


def test_a_body_past_the_limit_sent_slowly_is_refused_at_once(server: Server) -> None:
    """Declared past max_set_bytes + 1 KiB: refused on its head (the endpoint's 400, as for a
    SET too large), then the connection is closed rather than the body read."""
    wire = push(b"a" * 10_000_000)
    head = wire.index(b"\r\n\r\n") + 4
    with server.connect() as sock:
        sock.settimeout(3)
        sock.sendall(wire[:head] + b"a" * 100)
        reader = Reader(sock)
        r = reader.next()
        assert r.status == 400 and b"exceeds" in r.body
        assert reader.closed()


def test_idle_connections_that_never_send_are_closed(server: Server) -> None:
    socks = [server.connect() for _ in range(50)]
    try:
        start = time.monotonic()
        for sock in socks:
            sock.settimeout(max(0.1, 4 - (time.monotonic() - start)))
            assert Reader(sock).closed()
        assert time.monotonic() - start < 4
    finally:
        for sock in socks:
            sock.close()


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def test_a_client_that_never_reads_its_answers_is_not_read_either(server: Server) -> None:
    """Pipelined refused pushes, answers never read: the server stops reading, its buffers
    (and this process, the server's) bounded, whatever the kernel's socket buffers take in."""
    wire = push(b"not a SET") * 1000
    before = _rss()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.settimeout(1)
        sent = 0
        try:
            while sent < 64 * 1024 * 1024:
                sock.sendall(wire)
                sent += len(wire)
        except TimeoutError:
            pass
        grown = _rss() - before
    assert grown < 32 * 1024 * 1024, (sent, grown)  # was 50+ MiB: the whole 64 MiB read in


@pytest.mark.parametrize(
    ("first", "rest", "status"),
    [
        (b"POST /ssf/pu", b"shx HTTP/1.1\r\nHost: rx\r\nContent-Length: 0\r\n\r\n", 404),
        (
            b"POST /ssf/push HTTP/1.",
            b"0\r\nHost: rx\r\nContent-Length: 3\r\n\r\nabc",
            401,
        ),  # no Authorization
        (
            b"POST /ssf/push HTTP/1.1\r\nHost: rx\r\nContent-Le",
            b"ngth: 3\r\nContent-Length: 3\r\n\r\nabc",
            400,
        ),
    ],
    ids=["other-path", "http-1.0", "duplicate-length"],
)
def test_a_head_split_where_it_turns_out_not_to_be_a_push(
    server: Server, first: bytes, rest: bytes, status: int
) -> None:
    """The first part looks like a push: the whole head still reaches uvicorn, and a push
    pipelined after it is answered in order."""
    with server.connect() as sock:
        sock.sendall(push(server.set_()) + first)
        time.sleep(0.05)
        sock.sendall(rest + push(server.set_()))
        sock.shutdown(socket.SHUT_WR)
        got = _answers(sock)
    assert got[:2] == [202, status], got
    assert got[2:] in ([], [202]), got  # uvicorn may close after a refused request


def test_an_endless_head_of_a_handed_over_request_is_cut(server: Server) -> None:
    """uvicorn's own protocol sets no head limit: the connection closes soon after 64 KiB of
    one head, instead of taking in (and holding) all of it."""
    with server.connect() as sock:
        sock.sendall(push(server.set_()) + b"GET /health HTTP/1.1\r\nHost: rx\r\nX-Pad: ")
        sent, start = 0, time.monotonic()
        with pytest.raises(OSError):
            while sent < 256 * 1024 * 1024 and time.monotonic() - start < 10:
                sock.sendall(b"p" * 65536)
                sent += 65536
        assert sent < 64 * 1024 * 1024
    with server.connect() as sock:  # a big head under the limit is still served
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: rx\r\nX-Pad: %s\r\n\r\n" % (b"p" * 40000))
        assert Reader(sock).next().status == 200


@pytest.mark.parametrize("start", [b"G", b"GET /health HTTP/1.1\r\nHost: rx\r\n"])
def test_a_handed_over_head_trickled_or_left_unfinished_is_closed(server: Server, start: bytes) -> None:
    """uvicorn times only idle connections after an answer; the fixture's keep-alive timeout
    is 2 s: a head unfinished after it is closed, trickled (a byte per 0.5 s) or not."""
    with server.connect() as sock:
        sock.sendall(start)
        assert _trickle(sock, b"X-Slow: " + b"s" * 100, 0.5, 8) < 4.5
    with server.connect() as sock:
        sock.sendall(start)
        sock.settimeout(8)
        began = time.monotonic()
        assert Reader(sock).closed()
        assert time.monotonic() - began < 4.5
