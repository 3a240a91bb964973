"""HTTP routes: discovery, JWKS, OAuth token endpoint, stream management, poll, publishing.

Every management handler authenticates first, then parses the body, then looks up the stream
(401 before 400 before 404, as the conformance suite expects).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from ssf import uris
from ssf.errors import ModelError
from ssf.metadata import AuthorizationScheme, TransmitterMetadata
from ssf.models import load_json, parse_model
from ssf.poll import PollRequest
from ssf.stream import (
    AddSubjectRequest,
    RemoveSubjectRequest,
    StreamRequest,
    StreamStatus,
    VerificationRequest,
)
from transmitter.auth import MANAGE, PUBLISH, READ, AuthError, NeedsIO, Principal
from transmitter.errors import PayloadTooLarge, TooManyRequests
from transmitter.group_publish import GroupPublisher
from transmitter.limits import RateLimiter, check_json
from transmitter.offload import Offload
from transmitter.service import Transmitter

__all__ = ["build_router", "hot_routes"]

M = TypeVar("M", bound=BaseModel)
JSON_HEADERS = {"Cache-Control": "no-store"}


def _issuer_path(issuer: str) -> str:
    return urlsplit(issuer).path.rstrip("/")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(f"the request body exceeds {limit} bytes")
        except ValueError:
            raise ModelError("invalid Content-Length") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _strict(model: type[M], data: object) -> M:
    """Parse a management/poll body; members the model does not know are refused."""
    obj = parse_model(model, data)
    extra = obj.model_extra or {}
    if extra:
        raise ModelError(f"unknown member(s): {', '.join(sorted(extra))}")
    return obj


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers=JSON_HEADERS)


def build_router(tx: Transmitter) -> APIRouter:
    s = tx.settings
    limit = s.max_body_bytes
    base = tx.issuer
    router = APIRouter()
    ipath = _issuer_path(base)

    def metadata() -> dict[str, Any]:
        return TransmitterMetadata(
            spec_version=uris.SPEC_VERSION,
            issuer=base,
            jwks_uri=f"{base}/jwks.json",
            delivery_methods_supported=[uris.PUSH, uris.POLL],
            configuration_endpoint=f"{base}/ssf/streams",
            status_endpoint=f"{base}/ssf/status",
            add_subject_endpoint=f"{base}/ssf/subjects:add",
            remove_subject_endpoint=f"{base}/ssf/subjects:remove",
            verification_endpoint=f"{base}/ssf/verify",
            authorization_schemes=[AuthorizationScheme(spec_urn=uris.OAUTH_SCHEME)],
            default_subjects=s.default_subjects,
        ).to_json()

    def oauth_metadata() -> dict[str, Any]:
        return {
            "issuer": base,
            "token_endpoint": f"{base}/oauth/token",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": [READ, MANAGE, PUBLISH],
            "response_types_supported": ["token"],
        }

    @router.get("/.well-known/ssf-configuration" + ipath, include_in_schema=False)
    async def discovery() -> JSONResponse:
        return JSONResponse(metadata())

    @router.get("/.well-known/oauth-authorization-server" + ipath, include_in_schema=False)
    async def oauth_discovery() -> JSONResponse:
        return JSONResponse(oauth_metadata())

    if ipath:
        # A host-level copy for clients that do not insert the path (harmless, same document).
        @router.get(ipath + "/.well-known/ssf-configuration", include_in_schema=False)
        async def discovery_suffix() -> JSONResponse:
            return JSONResponse(metadata())

    @router.get(ipath + "/jwks.json")
    async def jwks() -> JSONResponse:
        keys = await run_in_threadpool(tx.keys.current_jwks)
        return JSONResponse(keys, headers={"Cache-Control": "max-age=60"})

    @router.post(ipath + "/oauth/token")
    async def token(request: Request) -> JSONResponse:
        try:
            body = await read_body(request, limit)
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            return _oauth_error(AuthError(400, "invalid_request", "the body must be form-encoded"))
        client_id, secret = form.get("client_id"), form.get("client_secret")
        header = request.headers.get("authorization")
        if header and header.lower().startswith("basic "):
            try:
                raw = base64.b64decode(header[6:].strip(), validate=True).decode()
                cid, _, sec = raw.partition(":")
                client_id, secret = unquote(cid), unquote(sec)
            except (binascii.Error, UnicodeDecodeError):
                return _oauth_error(AuthError(401, "invalid_client", "malformed Basic credentials"))
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(
                AuthError(400, "unsupported_grant_type", "only client_credentials is supported")
            )
        if not client_id or not secret:
            return _oauth_error(AuthError(401, "invalid_client", "client authentication is required"))
        try:
            client = await run_in_threadpool(tx.auth.authenticate_client, client_id, secret)
            return _json(tx.auth.issue_token(client, form.get("scope")))
        except AuthError as exc:
            return _oauth_error(exc)

    management = RateLimiter(s.management_rate, s.management_burst)

    async def auth(request: Request, scope: str) -> Principal:
        return await authenticate(tx, request, scope, run_in_threadpool)

    async def manage_auth(request: Request, scope: str) -> Principal:
        """The management API: authenticated, then rate-limited per client (429)."""
        principal = await auth(request, scope)
        management.check(principal.owner, "management requests")
        return principal

    async def body_json(request: Request) -> Any:
        return await read_json(request, limit, s.max_json_depth)

    def stream_id_param(request: Request) -> str:
        sid = request.query_params.get("stream_id")
        if not sid:
            raise ModelError("the stream_id query parameter is required")
        return sid

    streams = ipath + "/ssf/streams"

    @router.post(streams)
    async def create_stream(request: Request) -> JSONResponse:
        principal = await manage_auth(request, MANAGE)
        req = parse_model(StreamRequest, await body_json(request))
        return _json(await run_in_threadpool(tx.create_stream, principal, req), 201)

    @router.get(streams)
    async def read_stream(request: Request) -> JSONResponse:
        principal = await manage_auth(request, READ)
        sid = request.query_params.get("stream_id")
        return _json(await run_in_threadpool(tx.read_streams, principal, sid or None))

    @router.patch(streams)
    async def patch_stream(request: Request) -> JSONResponse:
        principal = await manage_auth(request, MANAGE)
        req = parse_model(StreamRequest, await body_json(request))
        return _json(await run_in_threadpool(lambda: tx.update_stream(principal, req, replace=False)))

    @router.put(streams)
    async def put_stream(request: Request) -> JSONResponse:
        principal = await manage_auth(request, MANAGE)
        req = parse_model(StreamRequest, await body_json(request))
        return _json(await run_in_threadpool(lambda: tx.update_stream(principal, req, replace=True)))

    @router.delete(streams)
    async def delete_stream(request: Request) -> Response:
        principal = await manage_auth(request, MANAGE)
        sid = stream_id_param(request)
        await run_in_threadpool(tx.delete_stream, principal, sid)
        return Response(status_code=204, headers=JSON_HEADERS)

    @router.get(ipath + "/ssf/status")
    async def get_status(request: Request) -> JSONResponse:
        principal = await manage_auth(request, READ)
        sid = stream_id_param(request)
        return _json(await run_in_threadpool(tx.get_status, principal, sid))

    @router.post(ipath + "/ssf/status")
    async def post_status(request: Request) -> JSONResponse:
        principal = await manage_auth(request, MANAGE)
        data = await body_json(request)
        qsid = request.query_params.get("stream_id")
        if isinstance(data, dict) and qsid:
            if "stream_id" not in data:
                data["stream_id"] = qsid
            elif data["stream_id"] != qsid:
                raise ModelError("stream_id in the query and the body differ")
        req = _strict(StreamStatus, data)
        return _json(
            await run_in_threadpool(tx.receiver_set_status, principal, req.stream_id, req.status, req.reason)
        )

    @router.post(ipath + "/ssf/subjects:add")
    async def add_subject(request: Request) -> Response:
        principal = await manage_auth(request, MANAGE)
        req = _strict(AddSubjectRequest, await body_json(request))
        await run_in_threadpool(tx.add_subject, principal, req)
        return Response(status_code=200, headers=JSON_HEADERS)

    @router.post(ipath + "/ssf/subjects:remove")
    async def remove_subject(request: Request) -> Response:
        principal = await manage_auth(request, MANAGE)
        req = _strict(RemoveSubjectRequest, await body_json(request))
        await run_in_threadpool(tx.remove_subject, principal, req)
        return Response(status_code=204, headers=JSON_HEADERS)

    @router.post(ipath + "/ssf/verify")
    async def verify(request: Request) -> Response:
        principal = await manage_auth(request, MANAGE)
        req = _strict(VerificationRequest, await body_json(request))
        await run_in_threadpool(tx.request_verification, principal, req.stream_id, req.state)
        return Response(status_code=204, headers=JSON_HEADERS)

    return router


async def authenticate(
    tx: Transmitter, request: Request, scope: str, offload: Callable[..., Awaitable[Principal]]
) -> Principal:
    """Cached tokens are checked on the loop; anything needing the database goes to a thread."""
    header = request.headers.get("authorization")
    try:
        return tx.auth.verify(header, scope, io=False)
    except NeedsIO:
        return await offload(tx.auth.verify, header, scope)


async def read_json(request: Request, limit: int, max_depth: int) -> Any:
    data = load_json(await read_body(request, limit))
    check_json(data, max_depth)
    return data


def hot_routes(tx: Transmitter, offload: Offload) -> list[Route]:
    """Publishing and polling as plain Starlette routes, matched ahead of the FastAPI routers.

    perf-anchors (b): FastAPI's endpoint wrapper (dependency solving) and its included-router
    matching cost more than the rest of the request on these paths. The handlers keep the
    management API's order (authentication, then the body, then the stream) and raise the same
    errors, answered by the application's exception handlers.
    """
    s = tx.settings
    limit = s.max_body_bytes
    ipath = _issuer_path(tx.issuer)
    publisher = GroupPublisher(tx, offload)

    async def auth(request: Request, scope: str) -> Principal:
        return await authenticate(tx, request, scope, offload)

    async def poll(request: Request) -> Response:
        principal = await auth(request, READ)
        stream_id: str = request.path_params["stream_id"]
        raw = await read_body(request, limit)
        data = load_json(raw) if raw.strip() else {}
        check_json(data, s.max_json_depth)
        req = _strict(PollRequest, data)
        sets, more = await long_poll(principal, stream_id, req)
        body: dict[str, Any] = {"sets": sets}
        if more:
            body["moreAvailable"] = True
        return _json(body)

    async def long_poll(
        principal: Principal, stream_id: str, req: PollRequest
    ) -> tuple[dict[str, str], bool]:
        holds = not req.return_immediately and req.max_events != 0
        if holds and tx.notifier.waiting(stream_id) >= s.max_poll_connections_per_stream:
            # checked and registered with no await between: the count cannot race
            raise TooManyRequests("too many long polls are open on this stream", 1)
        waiter = tx.notifier.register(stream_id)
        try:
            # ``tx.poll_once`` is looked up on each call: the ops layer instruments it.
            sets, more = await offload(tx.poll_once, principal, stream_id, req)
            if sets or req.return_immediately or req.max_events == 0:
                return sets, more
            again = PollRequest(maxEvents=req.max_events, returnImmediately=True)
            deadline = time.monotonic() + s.long_poll_timeout
            while not tx.notifier.closing and (left := deadline - time.monotonic()) > 0:
                try:
                    await asyncio.wait_for(waiter.wait(), min(left, s.worker_poll_interval))
                except TimeoutError:
                    pass
                waiter.clear()
                sets, more = await offload(tx.poll_once, principal, stream_id, again)
                if sets:
                    break
            return sets, more
        finally:
            tx.notifier.unregister(stream_id, waiter)

    async def publish(request: Request) -> Response:
        await auth(request, PUBLISH)
        data = await read_json(request, limit, s.max_json_depth)
        if not isinstance(data, dict):
            raise ModelError("the request body must be a JSON object")
        unknown = set(data) - {"subject", "events", "txn"}
        if unknown:
            raise ModelError(f"unknown member(s): {', '.join(sorted(unknown))}")
        if "subject" not in data or "events" not in data:
            raise ModelError("'subject' and 'events' are required")
        jtis = await publisher.publish(data["subject"], data["events"], data.get("txn"))
        return _json({"jti": jtis}, 202)

    return [
        Route(ipath + "/events", publish, methods=["POST"], include_in_schema=False),
        Route(ipath + "/ssf/poll/{stream_id}", poll, methods=["POST"], include_in_schema=False),
    ]


def _oauth_error(exc: AuthError) -> JSONResponse:
    headers = dict(JSON_HEADERS)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="ssf"'
    return JSONResponse(
        {"error": exc.error, "error_description": exc.description}, exc.status, headers=headers
    )
