"""The push endpoint (RFC 8935): a plain Starlette route, for speed (perf-anchors b).

``POST /ssf/push`` checks the configured ``Authorization`` value in constant time, reads one
SET (bounded), validates, applies and persists it, and only then answers 202 with an empty
body. A refused SET gets 400 ``{"err", "description"}`` with the RFC 8935 §2.4 / SSF code.
"""

from __future__ import annotations

import hmac
import json
import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.core import NotReady, Receiver
from ssf.errors import SETError, SETTooLarge

__all__ = ["push_route"]

_JSON = "application/json"
log = logging.getLogger("receiver.push")


def _error(status: int, err: str, description: str, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"err": err, "description": description}).encode()
    h = {"Content-Language": "en"}
    if headers:
        h.update(headers)
    return Response(body, status_code=status, media_type=_JSON, headers=h)


def push_route(receiver: Receiver, path: str = "/ssf/push") -> Route:
    max_bytes = receiver.settings.max_set_bytes
    # Headroom for whitespace around the compact SET; the verifier enforces the exact limit.
    read_limit = max_bytes + 1024

    async def push(request: Request) -> Response:
        expected = receiver._push_auth_bytes
        if expected is not None:
            got = request.headers.get("authorization", "").encode("latin-1", "replace")
            if not hmac.compare_digest(got, expected):
                return _error(
                    401,
                    "authentication_failed",
                    "the Authorization header is missing or wrong",
                    {"WWW-Authenticate": "Bearer"},
                )
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > read_limit:
            return _error(400, SETTooLarge.err, f"SET exceeds {max_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > read_limit:
                return _error(400, SETTooLarge.err, f"SET exceeds {max_bytes} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        try:
            await receiver.receive(body)
        except SETError as exc:
            return _error(400, exc.err, exc.description)
        except NotReady:
            return _error(503, "temporarily_unavailable", "the receiver is starting", {"Retry-After": "1"})
        except Exception:  # storage down: the transmitter retries; never a traceback on the wire
            log.exception("applying a pushed SET failed")
            return _error(503, "temporarily_unavailable", "the SET could not be stored", {"Retry-After": "5"})
        return Response(status_code=202)

    return Route(path, push, methods=["POST"], name="ssf_push")
