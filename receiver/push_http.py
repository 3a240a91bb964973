"""``POST /ssf/push`` served straight off the socket; every other request goes to uvicorn.

Under uvicorn a push pays ~60 µs of CPU in the HTTP layer alone (ASGI scope, task, events,
two writes), as much as an RS256 verify. :func:`push_protocol` makes an asyncio protocol for
``uvicorn.Config(http=...)`` that answers the push endpoint itself, with the same checks and
answers (:class:`~receiver.push.PushEndpoint`), in ~15 µs.

It serves only what it fully understands: ``POST <push path> HTTP/1.1`` with one
``Content-Length`` within the size limit and no ``Transfer-Encoding``, ``Expect``,
``Upgrade`` or ``X-Forwarded-For``. httptools (llhttp, uvicorn's own parser) validates each
request head; this module only finds where requests begin and end. At the first request it
does not serve (another path or method, a chunked body, a malformed head, HTTP/1.0, ...) the
connection is handed, from that request's first byte on, to uvicorn's own HTTP protocol, which
serves it and everything after it exactly as it would have without this module (the push
path there is the same endpoint, through ASGI), except that a request head there must stay
under 64 KiB and be whole within the keep-alive timeout (:class:`_HeadGuard`: uvicorn's
httptools protocol bounds neither). Requests on a connection are answered one at
a time, in order (pipelining is safe); keep-alive, ``Connection: close``, the keep-alive
timeout, graceful shutdown and uvicorn's default headers (``date``, ``server``) are kept.
"""

from __future__ import annotations

import asyncio
import http
import logging
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.protocols.utils import get_remote_addr
from uvicorn.server import ServerState

from receiver.push import ACCEPTED, RECHECK, Answer, PushEndpoint

__all__ = ["MAX_HEAD_BYTES", "PushProtocol", "push_protocol"]

log = logging.getLogger("receiver.push")

#: Most bytes of a push request's head (request line and headers); past it: 431 and close.
MAX_HEAD_BYTES = 16 * 1024
#: Most bytes of a request head on a handed-over connection (uvicorn's httptools protocol sets
#: no limit and holds a header value whole): past it, plus at most one read, the connection closes.
MAX_HANDED_HEAD_BYTES = 64 * 1024
#: Headers that send a request to uvicorn: what only its ASGI path implements (chunked bodies,
#: 100-continue, upgrades, the client address behind a trusted proxy).
_HANDED_OVER = frozenset((b"transfer-encoding", b"expect", b"upgrade", b"x-forwarded-for"))
_STATUS = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in http.HTTPStatus}
_HEAD_TOO_LARGE = Answer.error(
    431, {"err": "invalid_request", "description": f"request head exceeds {MAX_HEAD_BYTES} bytes"}
)
#: What uvicorn answers when an ASGI app raises (the endpoint never should).
_FAILED = Answer(
    500,
    ((b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"21")),
    b"Internal Server Error",
)


def push_protocol(endpoint: PushEndpoint, path: str = "/ssf/push") -> type[PushProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` serving ``endpoint`` at ``path``."""

    class BoundPushProtocol(PushProtocol):
        pass

    BoundPushProtocol.endpoint = endpoint
    BoundPushProtocol.path = path
    return BoundPushProtocol


class PushProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection (see the module docstring); made by uvicorn per connection."""

    endpoint: PushEndpoint
    path: str = "/ssf/push"
    #: (uvicorn's default headers, the 202 rendered with them); see :meth:`_accepted`.
    _accepted_cache: tuple[list[tuple[bytes, bytes]], bytes] | None = None

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.loop = _loop or asyncio.get_event_loop()
        self.access_log = logging.getLogger("uvicorn.access")
        self.log_access = self.access_log.hasHandlers()  # as uvicorn decides it, per connection
        #: Requests that may be served here start with this (None: hand every connection over).
        self.prefix: bytes | None = None if config.root_path else b"POST %s HTTP/1.1\r\n" % self.path.encode()
        self.read_limit = self.endpoint.read_limit
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self.client = "?"
        self.peer: tuple[str, int] | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.buf = b""
        #: The request whose body is still arriving: (head bytes, total bytes, keep-alive).
        self.waiting: tuple[int, int, bool] | None = None
        self.busy = False  # a request is being applied; its answer is not written yet
        self.close_after = False  # close once the current answer is written (shutdown)
        self.eof = False
        self.read_paused = False
        self.write_paused = False
        self.keep_alive_timeout = float(config.timeout_keep_alive)
        self.limit_concurrency = config.limit_concurrency
        #: One timer per connection, re-armed from ``idle_since`` when it fires (not one per
        #: request): when the connection went idle (connected, or its last answer written),
        #: None while a push runs. Bytes of a request still incomplete do not restart it: a
        #: request trickled a byte at a time must still be whole within the timeout.
        self.timer: asyncio.TimerHandle | None = None
        self.idle_since: float | None = None
        # The current head's headers (set by the parser's callbacks).
        self.h_auth = b""
        self.h_ctype = b""
        self.h_length: bytes | None = None
        self.h_odd = False

    # --- asyncio protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.server_state.connections.add(self)  # type: ignore[arg-type]
        self.peer = get_remote_addr(transport)  # type: ignore[arg-type]
        self.client = self.peer[0] if self.peer else "?"
        self._idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        self._disarm()
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
        if self.busy:
            if len(self.buf) > self.read_limit + MAX_HEAD_BYTES and not self.read_paused:
                self.read_paused = True  # a client far ahead of its answers: wait for it
                self.transport.pause_reading()
            return
        self._next()

    def eof_received(self) -> bool | None:
        self.eof = True
        # Busy: keep the transport open for the answers owed, then close. Else the buffer holds
        # at most part of a request, which can no longer complete: close now.
        return True if self.busy else None

    def pause_writing(self) -> None:
        self.write_paused = True
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.read_paused and not self.busy:
            self.read_paused = False
            self.transport.resume_reading()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close now, or once the current answer is written."""
        if self.busy:
            self.close_after = True
        else:
            self.transport.close()

    # --- httptools callbacks (the head only) ----------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"authorization":
            self.h_auth = value
        elif name == b"content-type":
            self.h_ctype = value
        elif name == b"content-length":
            self.h_odd = self.h_odd or self.h_length is not None
            self.h_length = value
        elif name in _HANDED_OVER:
            self.h_odd = True

    # --- requests ---------------------------------------------------------------------------
    def _next(self) -> None:
        """Start the next request in the buffer, wait for more bytes, or hand over."""
        buf = self.buf
        if self.waiting is None:
            if not buf:
                self._idle()
                return
            prefix = self.prefix
            if prefix is None or not buf.startswith(prefix):
                if prefix is not None and len(buf) < len(prefix) and prefix.startswith(buf):
                    self._idle()
                    return
                self._hand_over()
                return
            limit = self.limit_concurrency
            if limit is not None and (
                len(self.server_state.connections) >= limit or len(self.server_state.tasks) >= limit
            ):
                self._hand_over()  # uvicorn answers 503
                return
            end = buf.find(b"\r\n\r\n", len(prefix) - 2)
            if end < 0 or end + 4 > MAX_HEAD_BYTES:
                if len(buf) > MAX_HEAD_BYTES:
                    self._answer_and_close(_HEAD_TOO_LARGE)
                else:
                    self._idle()
                return
            head = end + 4
            self.h_auth = self.h_ctype = b""
            self.h_length = None
            self.h_odd = False
            try:
                self.parser.feed_data(memoryview(buf)[:head])
            except httptools.HttpParserError:
                self._hand_over()  # uvicorn answers the malformed request (400) and closes
                return
            length = self.h_length
            if self.h_odd or length is None or not length.isdigit() or int(length) > self.read_limit:
                self._hand_over()
                return
            self.waiting = (head, head + int(length), self.parser.should_keep_alive())
        head, total, keep_alive = self.waiting
        if len(buf) < total:
            self._idle()
            return
        self.waiting = None
        body = buf[head:total]
        if body:
            self.parser.feed_data(body)  # back to the start of the next message
        self.buf = buf[total:]
        self.busy = True
        self.idle_since = None
        task = self.loop.create_task(self._serve(self.h_auth, self.h_ctype, self.h_length, body, keep_alive))
        tasks = self.server_state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _serve(
        self, auth: bytes, ctype: bytes, length: bytes | None, body: bytes, keep_alive: bool
    ) -> None:
        endpoint = self.endpoint
        try:
            answer = endpoint.screen_now(self.client, auth, ctype, length)
            if answer is RECHECK:
                answer = await endpoint.screen(self.client, auth, ctype, length)
            if answer is None:
                answer = await endpoint.apply(body)
        except Exception:
            log.exception("the push endpoint failed")
            answer, self.close_after = _FAILED, True
        except BaseException:  # cancelled (a shutdown past its grace period)
            self.transport.close()
            raise
        transport = self.transport
        self.server_state.total_requests += 1
        if transport.is_closing():
            return  # the client went away; the SET was applied all the same
        keep_alive = keep_alive and not self.close_after
        if answer is ACCEPTED and keep_alive:
            transport.write(self._accepted())
        else:
            transport.write(self._render(answer, keep_alive))
        if self.log_access:
            self._log_access(answer.status)
        self.busy = False
        if not keep_alive:
            transport.close()
            return
        if self.read_paused and not self.write_paused and len(self.buf) <= self.read_limit + MAX_HEAD_BYTES:
            # Not while the buffer is still past the mark: a pipelining client that never reads
            # would add a read (up to 256 KiB) per request served (one), without bound.
            self.read_paused = False
            transport.resume_reading()
        self._next()

    def _render(self, answer: Answer, keep_alive: bool) -> bytes:
        parts = [_STATUS[answer.status]]
        for name, value in self.server_state.default_headers:
            parts += (name, b": ", value, b"\r\n")
        for name, value in answer.headers:
            parts += (name, b": ", value, b"\r\n")
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", answer.body)
        return b"".join(parts)

    def _accepted(self) -> bytes:
        """The 202 of a kept-alive connection: rendered once per value of uvicorn's default
        headers (it replaces them, with a new ``date``, once a second)."""
        cls = type(self)
        headers = self.server_state.default_headers
        cached = cls._accepted_cache
        if cached is None or cached[0] is not headers:
            cached = cls._accepted_cache = (headers, self._render(ACCEPTED, True))
        return cached[1]

    def _log_access(self, status: int) -> None:
        client = f"{self.peer[0]}:{self.peer[1]}" if self.peer else ""
        self.access_log.info('%s - "%s %s HTTP/%s" %d', client, "POST", self.path, "1.1", status)

    def _answer_and_close(self, answer: Answer) -> None:
        self.buf = b""
        self.transport.write(self._render(answer, False))
        self.transport.close()

    def _idle(self) -> None:
        """Waiting for bytes: close at EOF, else after uvicorn's keep-alive timeout."""
        if self.eof:
            self.transport.close()
            return
        if self.idle_since is None:
            self.idle_since = self.loop.time()
        if self.timer is None:
            self.timer = self.loop.call_later(self.keep_alive_timeout, self._timeout)

    def _disarm(self) -> None:
        self.idle_since = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timeout(self) -> None:
        self.timer = None
        if self.transport.is_closing():
            return
        since = self.idle_since
        left = (
            self.keep_alive_timeout if since is None else since + self.keep_alive_timeout - self.loop.time()
        )
        if left > 0:  # busy, or a request served since the timer was set: look again then
            self.timer = self.loop.call_later(left, self._timeout)
        else:
            self.transport.close()

    def _hand_over(self) -> None:
        """From the first byte of the buffer on, the connection is uvicorn's."""
        self._disarm()
        self.server_state.connections.discard(self)
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        proto: Any = AutoHTTPProtocol(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.app_state, _loop=self.loop
        )
        buf, self.buf = self.buf, b""
        guard = _HeadGuard(proto, self.transport, self.loop, self.keep_alive_timeout)
        self.transport.set_protocol(guard)
        proto.connection_made(self.transport)
        if buf:
            guard.data_received(buf)
        if self.eof and not proto.eof_received():
            self.transport.close()  # as uvicorn does at once when the client stops sending


class _HeadGuard(asyncio.Protocol):
    """In front of uvicorn's protocol on a handed-over connection: closes it when a request
    head grows past :data:`MAX_HANDED_HEAD_BYTES` (an endless header otherwise grows memory
    without bound), or is not whole within the keep-alive timeout of its first byte (uvicorn
    times only idle connections after an answer: a head trickled or left unfinished held the
    connection for ever). A second parser, without header callbacks, only finds the heads."""

    def __init__(self, inner: Any, transport: Any, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.inner = inner
        self.transport = transport
        self.loop = loop
        self.timeout = timeout
        #: Armed from a head's first byte (the hand-over is one) until the head is whole.
        self.timer: asyncio.TimerHandle | None = loop.call_later(timeout, transport.close)
        self.parser: Any = httptools.HttpRequestParser(self)
        self.live = True  # parsing; stops at a malformed request or an upgrade (uvicorn's then)
        self.in_head = False
        self.began = False  # a head began in the current read (not counted: one read at most)
        self.head_bytes = 0

    def on_message_begin(self) -> None:
        self.in_head = self.began = True
        self.head_bytes = 0
        if self.timer is None:
            self.timer = self.loop.call_later(self.timeout, self.transport.close)

    def on_headers_complete(self) -> None:
        self.in_head = False
        self._disarm()

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def data_received(self, data: bytes) -> None:
        if self.live:
            self.began = False
            try:
                self.parser.feed_data(data)
            except Exception:  # malformed or upgraded: uvicorn answers it
                self.live = False
                self._disarm()
            else:
                if self.in_head and not self.began:
                    self.head_bytes += len(data)
                    if self.head_bytes > MAX_HANDED_HEAD_BYTES:
                        self.transport.close()
                        return
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self.inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()
