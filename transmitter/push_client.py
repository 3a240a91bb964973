"""A small HTTP/1.1 client for push delivery: one POST, its status, a bounded answer.

Push sends one SET per POST, one at a time per stream, up to thousands a second, and needs
little of a general client: no redirects (a 3xx is a failure: SSRF), no cookies, no
compression, no streaming upload. aiohttp spent about 220-240 us of CPU per POST on this
project's machine (3,000 sequential POSTs to the bench's loopback sink, uvloop); this client,
an ``asyncio.Protocol`` over ``httptools``' parser (the one uvicorn uses), about 80 us. With
one SET in flight per stream, that cost is the stream's throughput. What it keeps:

- a total timeout per request (connect included);
- at most ``max_answer`` bytes of an answer are kept; a longer one is cut and its connection
  closed, not reused (a receiver cannot make us hold more, or wait for it);
- ``Retry-After`` is handed back with the status;
- https with the system's trust store (``ssl.create_default_context``: certificate and host
  name checked);
- connections are reused (keep-alive), idle ones closed after ``keepalive`` seconds;
- the SSRF guard runs on the addresses actually dialled (a :class:`GuardedResolver`), except
  for an IP literal, which the URL check before each push already judged.

Transport failures raise :class:`PushTransportError` (or ``TimeoutError`` / ``OSError``).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

import httptools

from transmitter.ssrf import GuardedResolver

__all__ = ["MAX_ANSWER_HEAD", "Answer", "PushClient", "PushTransportError"]

#: Most bytes before an answer's body (its head and any interim 1xx answers before it):
#: httptools sets no limit, and a header value is held whole until it ends.
MAX_ANSWER_HEAD = 64 * 1024


class PushTransportError(Exception):
    """The request did not get a complete answer (connection closed, malformed answer...)."""


@dataclass(slots=True)
class Answer:
    status: int
    retry_after: str | None
    body: bytes


class _Target(NamedTuple):
    tls: bool
    host: str  # without brackets
    port: int
    head: bytes  # request line and Host header
    literal: bool  # the host is an IP address: nothing to resolve


_PRINTABLE = "".join(chr(c) for c in range(33, 127))


@functools.lru_cache(maxsize=1024)
def _target(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PushTransportError(f"not an http(s) URL: {url[:200]}")
    tls = parts.scheme == "https"
    host = parts.hostname
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise PushTransportError(f"bad host name in {url[:200]}") from exc
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError as exc:
        raise PushTransportError(f"bad port in {url[:200]}") from exc
    try:
        ipaddress.ip_address(host)
        literal = True
    except ValueError:
        literal = False
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    path = quote(path, safe=_PRINTABLE)  # only what HTTP cannot carry as is (as aiohttp does)
    authority = f"[{host}]" if ":" in host else host
    if parts.port is not None and parts.port != (443 if tls else 80):
        authority += f":{parts.port}"
    if any(c in path or c in authority for c in " \t\r\n\0"):
        raise PushTransportError("control characters in the URL")
    head = f"POST {path} HTTP/1.1\r\nHost: {authority}\r\n"
    return _Target(tls, host, port, head.encode("ascii", "strict"), literal)


class _Conn(asyncio.Protocol):
    """One connection; at most one request on it at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser: Any = None
        self._done: asyncio.Future[None] | None = None
        self._limit = 0
        self._body: list[bytes] = []
        self._size = 0
        self._status = 0
        self._retry_after: str | None = None
        self._complete = False
        self._reusable = False
        self._headed = False  # the final answer's head is read
        self._head_bytes = 0
        self._framed = False  # the answer declares its end (Content-Length or chunked)
        self.got_bytes = False

    # --- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._done is None or self._done.done():
            self.close()  # nothing asked for this: the connection is out of step
            return
        self.got_bytes = True
        if not self._headed:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._finish(PushTransportError(f"malformed answer: {exc}"))
            return
        if not self._headed and self._head_bytes > MAX_ANSWER_HEAD:
            self._finish(PushTransportError(f"answer head exceeds {MAX_ANSWER_HEAD} bytes"))
            self.close()

    def eof_received(self) -> bool | None:
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._done is not None and not self._done.done():
            if self._status and not self._framed and self._parser is not None:
                # An answer without a length ends with the connection.
                self._reusable = False
                self._finish(None)
            else:
                self._finish(PushTransportError(f"connection closed before the answer ({exc or 'EOF'})"))

    # --- httptools callbacks -----------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"retry-after":
            self._retry_after = value.decode("latin-1")
        elif name == b"content-length" or name == b"transfer-encoding":
            self._framed = True

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._headed = self._status >= 200

    def on_body(self, body: bytes) -> None:
        room = self._limit - self._size
        if len(body) >= room:  # enough: keep what fits and stop reading
            self._body.append(body[:room])
            self._size = self._limit
            if len(body) > room:
                self._reusable = False
                self._finish(None)
            return
        self._body.append(body)
        self._size += len(body)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:  # an interim answer: the same parser reads the real one
            self._status, self._retry_after, self._framed = 0, None, False
            return
        self._complete = True
        self._reusable = bool(self._parser.should_keep_alive())
        self._finish(None)

    # --- use ---------------------------------------------------------------------------
    def _finish(self, exc: Exception | None) -> None:
        if self._done is not None and not self._done.done():
            if exc is None:
                self._done.set_result(None)
            else:
                self._done.set_exception(exc)

    async def request(self, data: bytes, limit: int) -> tuple[Answer, bool]:
        """Send ``data`` and read the answer: ``(answer, reusable)``."""
        assert self.transport is not None
        self._parser = httptools.HttpResponseParser(self)
        self._done = asyncio.get_running_loop().create_future()
        self._limit, self._body, self._size = limit, [], 0
        self._status, self._retry_after, self._complete, self._reusable = 0, None, False, False
        self._headed, self._head_bytes, self._framed = False, 0, False
        self.got_bytes = False
        self.transport.write(data)
        await self._done
        answer = Answer(self._status, self._retry_after, b"".join(self._body))
        return answer, self._reusable and not self.closed

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class PushClient:
    def __init__(
        self,
        resolver: GuardedResolver,
        *,
        timeout: float,
        max_idle_per_host: int = 64,
        keepalive: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``ssl_context``: for https (default: the system's trust store, names checked)."""
        self._resolver = resolver
        self._timeout = timeout
        self._max_idle = max_idle_per_host
        self._keepalive = keepalive
        self._idle: dict[tuple[bool, str, int], list[_Conn]] = {}
        self._ssl = ssl_context
        self._swept = time.monotonic()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], max_answer: int) -> Answer:
        """POST ``body`` to ``url``; the answer's status, ``Retry-After`` and at most
        ``max_answer`` bytes of its body."""
        target = _target(url)
        lines = [target.head]
        for name, value in headers.items():
            if any(c in value for c in "\r\n\0") or any(c in name for c in "\r\n\0: "):
                raise PushTransportError(f"invalid characters in the {name} header")
            try:
                lines.append(f"{name}: {value}\r\n".encode("latin-1"))
            except UnicodeEncodeError:
                raise PushTransportError(f"the {name} header holds characters HTTP cannot carry") from None
        lines.append(b"Content-Length: %d\r\n\r\n" % len(body))
        lines.append(body)
        data = b"".join(lines)
        key = (target.tls, target.host, target.port)
        async with asyncio.timeout(self._timeout):
            conn = self._take(key)
            if conn is not None:
                try:
                    return await self._exchange(key, conn, data, max_answer)
                except PushTransportError:
                    if conn.got_bytes:
                        raise
                    # A kept connection the receiver had closed meanwhile: once more on a new one.
            conn = await self._connect(target)
            return await self._exchange(key, conn, data, max_answer)

    async def _exchange(self, key: tuple[bool, str, int], conn: _Conn, data: bytes, limit: int) -> Answer:
        try:
            answer, reusable = await conn.request(data, limit)
        except BaseException:
            conn.close()
            raise
        if reusable:
            self._put(key, conn)
        else:
            conn.close()
        return answer

    def _take(self, key: tuple[bool, str, int]) -> _Conn | None:
        idle = self._idle.get(key)
        cutoff = time.monotonic() - self._keepalive
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.idle_since > cutoff:
                return conn
            conn.close()
        return None

    def _put(self, key: tuple[bool, str, int], conn: _Conn) -> None:
        now = conn.idle_since = time.monotonic()
        idle = self._idle.setdefault(key, [])
        if len(idle) >= self._max_idle:
            conn.close()
        else:
            idle.append(conn)
        if now - self._swept > self._keepalive:  # close what no stream came back for
            self._swept = now
            for k, conns in list(self._idle.items()):
                keep = [c for c in conns if not c.closed and c.idle_since > now - self._keepalive]
                for c in conns:
                    if c not in keep:
                        c.close()
                if keep:
                    self._idle[k] = keep
                else:
                    del self._idle[k]

    async def _connect(self, target: _Target) -> _Conn:
        loop = asyncio.get_running_loop()
        if target.literal:
            addrs = [(target.host, target.port)]
        else:
            found = await self._resolver.resolve(target.host, target.port, socket.AF_UNSPEC)
            addrs = [(str(r["host"]), int(r["port"])) for r in found]
        ctx = None
        if target.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            ctx = self._ssl
        last: Exception | None = None
        for host, port in addrs:
            try:
                _, conn = await loop.create_connection(
                    _Conn, host, port, ssl=ctx, server_hostname=target.host if ctx else None
                )
                return conn
            except OSError as exc:
                last = exc
        raise last or PushTransportError(f"no address for {target.host}")

    async def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        await self._resolver.close()
