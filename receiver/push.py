"""The push endpoint (RFC 8935), as a bare ASGI callable for speed (perf-anchors b).

``POST /ssf/push`` checks the configured ``Authorization`` value in constant time, reads one
SET (bounded), validates, applies and persists it, and only then answers 202 with an empty
body. A refused SET gets 400 ``{"err", "description"}`` with the RFC 8935 §2.4 / SSF code
and ``Content-Language: en``. Nothing here raises to the server: storage failures are 503.

The checks and answers live in :meth:`PushEndpoint.screen` and :meth:`PushEndpoint.apply`,
apart from ASGI, so :mod:`receiver.push_http` serves the same endpoint straight off the
socket with the same answers.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from starlette.routing import Route

from receiver.core import NotReady, Receiver
from ssf.errors import SETError, SETTooLarge

__all__ = ["ACCEPTED", "RECHECK", "Answer", "PushEndpoint", "push_route"]

log = logging.getLogger("receiver.push")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Answer:
    """One response of the push endpoint: status, headers (with the length) and body."""

    status: int
    headers: Headers
    body: bytes = b""

    @classmethod
    def error(cls, status: int, body: dict[str, str], headers: Headers = ()) -> Answer:
        """An RFC 8935 §2.3 error object as JSON, in English."""
        payload = json.dumps(body).encode()
        h = (
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"content-language", b"en"),
            *headers,
        )
        return cls(status, h, payload)


ACCEPTED = Answer(202, ((b"content-length", b"0"),))
#: From :meth:`PushEndpoint.screen_now`: the credential did not match; :meth:`PushEndpoint.screen`
#: decides (it may re-read a credential another instance stored).
RECHECK = Answer(401, ())
_NOT_POST = Answer.error(405, {"err": "invalid_request", "description": "use POST"}, ((b"allow", b"POST"),))
_UNAUTHENTICATED = Answer.error(
    401,
    {"err": "authentication_failed", "description": "the Authorization header is missing or wrong"},
    ((b"www-authenticate", b"Bearer"),),
)
_MEDIA_TYPE = Answer.error(
    400, {"err": "invalid_request", "description": "Content-Type must be application/secevent+jwt"}
)
_STARTING = Answer.error(
    503,
    {"err": "temporarily_unavailable", "description": "the receiver is starting"},
    ((b"retry-after", b"1"),),
)
_NOT_STORED = Answer.error(
    503,
    {"err": "temporarily_unavailable", "description": "the SET could not be stored"},
    ((b"retry-after", b"5"),),
)


class PushEndpoint:
    """An ASGI app answering RFC 8935 pushes for one :class:`Receiver`."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.max_bytes = receiver.settings.max_set_bytes
        # Headroom for whitespace around the compact SET; the verifier enforces the exact limit.
        self.read_limit = self.max_bytes + 1024
        # Failed push authentication per client address: past the limit within the window, 429.
        self.failure_limit = receiver.settings.push_auth_failure_limit
        self.failure_window = receiver.settings.push_auth_failure_window
        self._failures: dict[str, tuple[int, float]] = {}
        self.too_large = Answer.error(
            400, {"err": SETTooLarge.err, "description": f"SET exceeds {self.max_bytes} bytes"}
        )
        self.too_many = Answer.error(
            429,
            {"err": "too_many_requests", "description": "too many failed authentication attempts"},
            ((b"retry-after", str(max(1, int(self.failure_window))).encode()),),
        )

    def _blocked(self, client: str) -> bool:
        hit = self._failures.get(client)
        if hit is None:
            return False
        count, since = hit
        if time.monotonic() - since > self.failure_window:
            del self._failures[client]
            return False
        return count >= self.failure_limit

    def _failed(self, client: str) -> None:
        now = time.monotonic()
        count, since = self._failures.pop(client, (0, now))
        if now - since > self.failure_window:
            count, since = 0, now
        self._failures[client] = (count + 1, since)
        while len(self._failures) > 10_000:  # bounded memory: the oldest entries go first
            del self._failures[next(iter(self._failures))]

    def screen_now(
        self, client: str, authorization: bytes, ctype: bytes, length: bytes | None
    ) -> Answer | None:
        """:meth:`screen` without awaiting: its answer, or :data:`RECHECK` when the credential
        did not match and only :meth:`screen` can tell (it may re-read the stored one)."""
        credential = self.receiver.push_credential
        if credential is not None:
            if self._blocked(client):
                return self.too_many
            if not credential.matches(authorization):
                return RECHECK
        return self._declared(ctype, length)

    async def screen(
        self, client: str, authorization: bytes, ctype: bytes, length: bytes | None
    ) -> Answer | None:
        """The answer to a POST refused before its body matters (rate limit, credential, media
        type, declared size), or None to go on and :meth:`apply` the body."""
        answer = self.screen_now(client, authorization, ctype, length)
        if answer is not RECHECK:
            return answer
        if await self.receiver.recheck_push_credential(authorization):
            return self._declared(ctype, length)
        self._failed(client)
        return _UNAUTHENTICATED

    def _declared(self, ctype: bytes, length: bytes | None) -> Answer | None:
        if not _is_set_media_type(ctype):
            # RFC 8935 §2.1: a pushed SET travels as application/secevent+jwt.
            return _MEDIA_TYPE
        if length is not None and length.isdigit() and int(length) > self.read_limit:
            return self.too_large
        return None

    async def apply(self, body: bytes) -> Answer:
        """Validate, apply and store one pushed SET; 202 only once it is durable."""
        try:
            await self.receiver.receive(body)
        except SETError as exc:
            return Answer.error(400, exc.to_body())
        except NotReady:
            return _STARTING
        except Exception:  # storage down: the transmitter retries; never a traceback on the wire
            log.exception("applying a pushed SET failed")
            return _NOT_STORED
        return ACCEPTED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await _send(send, _NOT_POST)
            return
        got = b""
        length = None
        ctype = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                got = value
            elif name == b"content-length":
                length = value
            elif name == b"content-type":
                ctype = value
        client = (scope.get("client") or ("?", 0))[0]
        refused = await self.screen(client, got, ctype, length)
        if refused is not None:
            await _send(send, refused)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.read_limit:
                await _send(send, self.too_large)
                return
        await _send(send, await self.apply(body))


def _is_set_media_type(value: bytes) -> bool:
    return value.split(b";", 1)[0].strip().lower() == b"application/secevent+jwt"


async def _send(send: Send, answer: Answer) -> None:
    await send({"type": "http.response.start", "status": answer.status, "headers": list(answer.headers)})
    await send({"type": "http.response.body", "body": answer.body})


def push_route(receiver: Receiver, path: str = "/ssf/push") -> Route:
    """A plain Starlette route (no FastAPI wrapper) serving :class:`PushEndpoint`."""
    return Route(path, PushEndpoint(receiver), methods=["POST"], name="ssf_push")
