"""The push endpoint served off the socket (receiver.push_http), over raw loopback sockets:
keep-alive, pipelining, hand-over to uvicorn for every other request, and malformed HTTP
(hypothesis) answered cleanly or closed, never a crash."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from receiver.app import create_app
from receiver.core import Receiver
from receiver.push_http import MAX_HEAD_BYTES
from receiver.settings import ReceiverSettings
from receiver.store import MemoryStore, WriteBatch
from ssf.events import SessionRevoked
from ssf.keys import KeySet, PublicKeys, generate_signing_key
from ssf.set import SecurityEventToken, sign_set
from ssf.subjects import Subject
from tests.support.services import serve

ISS = "https://tx.push-http.example"
AUD = "https://rx.push-http.example"
AUTH = b"Bearer push-http-secret"
KEY = generate_signing_key("ES256", kid="ph")


@dataclass
class Server:
    port: int
    receiver: Receiver
    count: int = 0

    def set_(self) -> bytes:
        """A fresh valid SET (a new session revoked)."""
        self.count += 1
        token = SecurityEventToken.create(
            iss=ISS,
            aud=AUD,
            sub_id=Subject.opaque(f"ph-{self.count}-{time.time_ns()}"),
            event=SessionRevoked(),
        )
        return sign_set(token, KEY).encode()

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.settimeout(10)
        return sock


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    settings_ = ReceiverSettings(database_url="memory", push_authorization=AUTH.decode(), max_set_bytes=4096)
    rcv = Receiver(settings_, store=MemoryStore())
    rcv.configure(ISS, PublicKeys.from_key_set(KeySet([KEY])), audience=AUD)
    app = create_app(settings_, receiver=rcv, protected_demo=False)
    with serve(app, timeout_keep_alive=2) as url:
        yield Server(int(url.rsplit(":", 1)[1]), rcv)


def push(
    body: bytes, *, auth: bytes = AUTH, ctype: bytes = b"application/secevent+jwt", extra: bytes = b""
) -> bytes:
    return (
        b"POST /ssf/push HTTP/1.1\r\nHost: rx\r\nContent-Type: %s\r\nAuthorization: %s\r\n%s"
        b"Content-Length: %d\r\n\r\n%s" % (ctype, auth, extra, len(body), body)
    )


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


class Reader:
    """HTTP/1.1 responses off a socket (bodies by content-length, as every answer here has)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def next(self) -> Response:
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), f"closed before a whole answer: {self.buf!r}"
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0].startswith(b"HTTP/1.1 "), lines[0]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        while len(self.buf) < length:
            assert self._fill(), "closed inside a body"
        body, self.buf = self.buf[:length], self.buf[length:]
        return Response(int(lines[0][9:12]), headers, body)

    def closed(self) -> bool:
        """True when the server closes the connection (nothing more comes)."""
        try:
            return not self._fill() and not self.buf
        except ConnectionResetError:
            return True


def test_keep_alive_many_pushes_on_one_connection(server: Server) -> None:
    before = server.receiver.stats["accepted"]
    with server.connect() as sock:
        reader = Reader(sock)
        for _ in range(5):
            sock.sendall(push(server.set_()))
            r = reader.next()
            assert (r.status, r.body, r.headers[b"content-length"]) == (202, b"", b"0")
            assert b"date" in r.headers and b"connection" not in r.headers
    assert server.receiver.stats["accepted"] == before + 5


def test_pipelined_requests_are_answered_in_order_across_the_hand_over(server: Server) -> None:
    sets = [server.set_() for _ in range(4)]
    wire = (
        push(sets[0])
        + push(sets[1], auth=b"Bearer wrong")
        + push(sets[1], ctype=b"text/plain")
        + push(sets[1])
        + b"GET /health HTTP/1.1\r\nHost: rx\r\n\r\n"  # uvicorn's from here on
        + push(sets[2])
        + push(b"not a SET")
        + b"GET /ssf/push HTTP/1.1\r\nHost: rx\r\n\r\n"
        + push(sets[3], extra=b"Connection: close\r\n")
    )
    with server.connect() as sock:
        sock.sendall(wire)
        reader = Reader(sock)
        got = [reader.next() for _ in range(9)]
        assert reader.closed()
    assert [r.status for r in got] == [202, 401, 400, 202, 200, 202, 400, 405, 202]
    assert got[1].headers[b"www-authenticate"] == b"Bearer"
    assert got[1].headers[b"content-language"] == b"en"
    assert (
        got[1].body
        == b'{"err": "authentication_failed", "description": "the Authorization header is missing or wrong"}'
    )
    assert (
        got[2].body
        == b'{"err": "invalid_request", "description": "Content-Type must be application/secevent+jwt"}'
    )
    assert b'"ready": true' in got[4].body.replace(b'":', b'": ')
    assert got[6].headers[b"content-type"] == b"application/json"
    assert got[7].headers[b"allow"] == b"POST"
    assert got[8].headers[b"connection"] == b"close"


def test_the_same_answers_off_the_socket_and_through_uvicorn(server: Server) -> None:
    """Each refused push, answered by the fast path and again on a handed-over connection."""
    cases = [
        push(b"x", auth=b"Bearer nope"),
        push(b"x", ctype=b"application/json"),
        push(b"eyJhbGciOiJub25lIn0.eyJqdGkiOiJ4In0."),
        push(b"a" * 5000),  # past max_set_bytes + 1 KiB: refused by its declared length
    ]
    for case in cases:
        answers = []
        for lead in (b"", b"GET /healthz HTTP/1.1\r\nHost: rx\r\n\r\n"):
            with server.connect() as sock:
                sock.sendall(lead + case)
                reader = Reader(sock)
                if lead:
                    assert reader.next().status in (200, 404)
                r = reader.next()
                r.headers.pop(b"date", None)
                answers.append(r)
        assert answers[0] == answers[1]
        assert answers[0].status in (400, 401)


def test_a_chunked_push_and_100_continue_are_served_through_uvicorn(server: Server) -> None:
    set_ = server.set_()
    chunked = (
        b"POST /ssf/push HTTP/1.1\r\nHost: rx\r\nContent-Type: application/secevent+jwt\r\n"
        b"Authorization: %s\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
        % (AUTH, len(set_), set_)
    )
    with server.connect() as sock:
        sock.sendall(chunked)
        assert Reader(sock).next().status == 202
    with server.connect() as sock:
        sock.sendall(push(server.set_(), extra=b"Expect: 100-continue\r\n"))
        reader = Reader(sock)
        first = reader.next()
        assert first.status in (100, 202)
        if first.status == 100:
            assert reader.next().status == 202


def test_a_body_sent_in_pieces_and_a_push_after_it(server: Server) -> None:
    wire = push(server.set_()) + push(server.set_())
    with server.connect() as sock:
        for i in range(0, len(wire), 97):
            sock.sendall(wire[i : i + 97])
            time.sleep(0.001)
        reader = Reader(sock)
        assert [reader.next().status, reader.next().status] == [202, 202]


def test_a_huge_head_is_431_and_closed(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(push(server.set_(), extra=b"X-Pad: %s\r\n" % (b"p" * MAX_HEAD_BYTES)))
        reader = Reader(sock)
        r = reader.next()
        assert r.status == 431 and r.headers[b"connection"] == b"close"
        assert reader.closed()


def test_half_closed_client_still_gets_its_answer(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(push(server.set_()) + push(server.set_()))
        sock.shutdown(socket.SHUT_WR)
        reader = Reader(sock)
        assert [reader.next().status, reader.next().status] == [202, 202]
        assert reader.closed()


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(push(server.set_()))
        reader = Reader(sock)
        assert reader.next().status == 202
        assert reader.closed()  # the fixture's keep-alive timeout is 2 s; the socket's 10 s


def test_a_connection_in_use_outlives_the_keep_alive_timeout(server: Server) -> None:
    """The timeout counts idle time only: pushes 0.5 s apart over 3 s keep one connection."""
    with server.connect() as sock:
        reader = Reader(sock)
        for _ in range(6):
            sock.sendall(push(server.set_()))
            assert reader.next().status == 202
            time.sleep(0.5)
        sock.sendall(push(server.set_()))
        assert reader.next().status == 202


def test_a_malformed_push_head_is_refused_by_uvicorn(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(b"POST /ssf/push HTTP/1.1\r\nBad Header\r\nContent-Length: 1\r\n\r\nx")
        reader = Reader(sock)
        assert reader.next().status == 400
        assert reader.closed()
    with server.connect() as sock:  # duplicate lengths: a smuggling attempt
        sock.sendall(push(b"abc", extra=b"Content-Length: 0\r\n"))
        assert Reader(sock).next().status == 400


_VALID = push(b"eyJhbGciOiJFUzI1NiJ9.e30.c2ln")
_prefixes = st.sampled_from(
    [b"", b"POST /ssf/push HTTP/1.1\r\n", b"POST /ssf/push HTTP/1.1\r\nContent-Length: "]
)
_junk = st.binary(max_size=400) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "replace"))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    wire=st.one_of(
        st.tuples(_prefixes, _junk).map(b"".join),
        st.integers(0, len(_VALID)).map(lambda n: _VALID[:n]),  # truncated requests
        st.tuples(st.just(_VALID), _junk).map(b"".join),  # a push, then junk
        st.tuples(st.integers(0, len(_VALID)), st.binary(min_size=1, max_size=8)).map(
            lambda t: _VALID[: t[0]] + t[1] + _VALID[t[0] :]  # bytes inserted anywhere
        ),
    )
)
def test_arbitrary_bytes_get_clean_answers_or_a_close(server: Server, wire: bytes) -> None:
    with server.connect() as sock:
        sock.sendall(wire)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    for answer in data.split(b"HTTP/1.1 ")[1:]:
        assert answer[:3].isdigit() and not answer.startswith(b"5"), data
    # and the server goes on serving
    with server.connect() as sock:
        sock.sendall(push(server.set_()))
        assert Reader(sock).next().status == 202


class GatedStore(MemoryStore):
    """Holds each commit until the test releases it (from its own thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.gate: asyncio.Event | None = None

    async def commit(self, batch: WriteBatch) -> None:
        self.loop, self.gate = asyncio.get_running_loop(), asyncio.Event()
        self.entered.set()
        await self.gate.wait()
        await super().commit(batch)

    def release(self) -> None:
        assert self.loop is not None and self.gate is not None
        self.loop.call_soon_threadsafe(self.gate.set)


def test_shutdown_waits_for_the_push_in_flight_and_answers_it() -> None:
    store = GatedStore()
    settings_ = ReceiverSettings(database_url="memory", push_authorization=AUTH.decode())
    rcv = Receiver(settings_, store=store)
    rcv.configure(ISS, PublicKeys.from_key_set(KeySet([KEY])), audience=AUD)
    ctx = serve(create_app(settings_, receiver=rcv, protected_demo=False))
    url = ctx.__enter__()
    srv = Server(int(url.rsplit(":", 1)[1]), rcv)
    stopper = threading.Thread(target=ctx.__exit__, args=(None, None, None))
    with srv.connect() as sock:
        sock.sendall(push(srv.set_()))
        assert store.entered.wait(10)
        stopper.start()  # uvicorn asks every connection to shut down
        time.sleep(0.2)
        store.release()
        reader = Reader(sock)
        assert reader.next().status == 202
        assert reader.closed()
    stopper.join(15)
    assert not stopper.is_alive() and rcv.stats["accepted"] == 1
