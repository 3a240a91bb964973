"""A small, correct SSF transmitter for the kit's own tests, with switchable faults.

Each fault breaks exactly one requirement so a test can show that the check aimed at it
fails. With no faults it passes every module of the transmitter plan.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx
from joserfc import jws
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ssf import uris
from ssf.errors import SSFError
from ssf.events import CAEP_EVENTS, RISC_EVENTS, SSF_EVENTS
from ssf.keys import KeySet, SigningKey, generate_signing_key
from ssf.subjects import Subject, parse_subject, subject_matches

CLIENT_ID, CLIENT_SECRET = "kit-client", "kit-secret"
STATIC_TOKEN = "static-manage-token"
PUBLISH_TOKEN = "static-publish-token"
SUPPORTED = sorted((CAEP_EVENTS | RISC_EVENTS) - {uris.RISC_BASE + "sessions-revoked"})


@functools.cache
def _first_key(alg: str) -> SigningKey:
    """Key generation is slow (RSA): fixtures share their first key."""
    return generate_signing_key(alg, kid="key-1")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class StreamState:
    config: dict[str, Any]
    status: str = "enabled"
    subjects: list[Subject] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    pending: OrderedDict[str, str] = field(default_factory=OrderedDict)
    queue: asyncio.Queue[str] | None = None
    worker: asyncio.Task[None] | None = None
    last_activity: float = field(default_factory=time.monotonic)
    last_verification: float = 0.0
    authorization: str | None = None

    @property
    def id(self) -> str:
        return str(self.config["stream_id"])

    @property
    def push(self) -> bool:
        return self.config["delivery"]["method"] == uris.PUSH


class FixtureTransmitter:
    def __init__(self, issuer: str, faults: Iterable[str] = (), **options: Any) -> None:
        self.issuer = issuer.rstrip("/")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cond: asyncio.Condition | None = None
        self._http: httpx.AsyncClient | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.streams: dict[str, StreamState] = {}
        self.pushes = 0
        self.reset(faults, **options)
        p = "/" + self.issuer.split("/", 3)[3] if self.issuer.count("/") >= 3 else ""
        self.path = p
        routes = [
            Route(f"/.well-known/ssf-configuration{p}", self.metadata, methods=["GET"]),
            Route(f"/.well-known/oauth-authorization-server{p}", self.as_metadata, methods=["GET"]),
            Route(f"{p}/token", self.token, methods=["POST"]),
            Route(f"{p}/jwks", self.jwks, methods=["GET"]),
            Route(f"{p}/streams", self.streams_ep, methods=["GET", "POST", "PATCH", "PUT", "DELETE"]),
            Route(f"{p}/status", self.status_ep, methods=["GET", "POST"]),
            Route(f"{p}/subjects:add", self.add_subject, methods=["POST"]),
            Route(f"{p}/subjects:remove", self.remove_subject, methods=["POST"]),
            Route(f"{p}/verify", self.verify, methods=["POST"]),
            Route(p + "/poll/{stream_id}", self.poll, methods=["POST"]),
            Route(f"{p}/events", self.publish, methods=["POST"]),
            Route(f"{p}/admin/status", self.admin_status, methods=["POST"]),
            Route(f"{p}/admin/rotate", self.admin_rotate, methods=["POST"]),
        ]
        self.app = Starlette(routes=routes, lifespan=self._lifespan)

    def reset(
        self,
        faults: Iterable[str] = (),
        *,
        default_subjects: str = "NONE",
        inactivity_timeout: int | None = None,
        min_verification_interval: int | None = None,
        critical_subject_members: list[str] | None = None,
        long_poll_timeout: float = 1.5,
        alg: str = "RS256",
    ) -> None:
        """Start over with new faults and options (the server keeps running between tests)."""
        self._stop_tasks()
        self.faults = set(faults)
        self.default_subjects = default_subjects
        self.inactivity_timeout = inactivity_timeout
        self.min_verification_interval = min_verification_interval
        self.critical = critical_subject_members
        self.long_poll_timeout = long_poll_timeout
        self.keys = KeySet([_first_key(alg)])
        self.retired: list[SigningKey] = []
        self.streams = {}
        self.tokens: dict[str, set[str]] = {
            STATIC_TOKEN: {"ssf.read", "ssf.manage"},
            PUBLISH_TOKEN: {"ssf.publish"},
        }
        self._last_jti: str | None = None

    def _stop_tasks(self) -> None:
        tasks = [s.worker for s in self.streams.values() if s.worker] + (
            [self._ticker] if self._ticker else []
        )
        self._ticker = None
        if self._loop is not None and not self._loop.is_closed():
            for t in tasks:
                self._loop.call_soon_threadsafe(t.cancel)

    def has(self, fault: str) -> bool:
        return fault in self.faults

    # ---- plumbing --------------------------------------------------------------------
    @property
    def cond(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=5, trust_env=False, verify=False)
        return self._http

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        yield
        await self._shutdown()

    async def _shutdown(self) -> None:
        for s in self.streams.values():
            if s.worker:
                s.worker.cancel()
        if self._ticker:
            self._ticker.cancel()
        if self._http:
            await self._http.aclose()

    def _ensure_ticker(self) -> None:
        if self.inactivity_timeout and self._ticker is None and not self.has("inactivity-never"):
            self._loop = asyncio.get_running_loop()
            self._ticker = self._loop.create_task(self._inactivity_loop())

    async def _inactivity_loop(self) -> None:
        assert self.inactivity_timeout
        while self._ticker is asyncio.current_task():
            await asyncio.sleep(0.1)
            for s in list(self.streams.values()):
                if s.status == "enabled" and time.monotonic() - s.last_activity > self.inactivity_timeout:
                    await self.change_status(
                        s, "paused", "inactivity", notify=not self.has("inactivity-no-event")
                    )

    def error(self, status: int, err: str, description: str, **headers: str) -> JSONResponse:
        h = {"Cache-Control": "no-store", **headers}
        return JSONResponse({"err": err, "description": description}, status_code=status, headers=h)

    def ok(self, body: Any, status: int = 200) -> Response:
        if status == 204 or body is None:
            return Response(status_code=status)
        headers = {} if self.has("no-cache-control") else {"Cache-Control": "no-store"}
        return JSONResponse(body, status_code=status, headers=headers)

    def auth(self, request: Request, scope: str) -> Response | None:
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else None
        if token is None and self.has("query-token"):
            token = request.query_params.get("access_token")
        challenge = (
            {} if self.has("no-www-authenticate") else {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )
        if token is None:
            if self.has("anonymous-ok"):
                return None
            return self.error(401, "invalid_token", "a bearer token is required", **challenge)
        scopes = self.tokens.get(token)
        if scopes is None:
            if self.has("invalid-token-accepted"):
                return None
            return self.error(401, "invalid_token", "unknown token", **challenge)
        wanted = {"ssf.manage"} if scope == "manage" else {"ssf.read", "ssf.manage"}
        if self.has("read-scope-refused") and scope == "read":
            wanted = {"ssf.manage"}
        if not scopes & wanted and not self.has("scope-ignored"):
            return self.error(
                403, "insufficient_scope", "scope", WWW_Authenticate='Bearer error="insufficient_scope"'
            )
        return None

    async def body(self, request: Request) -> Any:
        raw = await request.body()
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def lookup(self, sid: Any) -> StreamState | None:
        s = self.streams.get(sid) if isinstance(sid, str) else None
        if s is not None:
            s.last_activity = (
                time.monotonic() if not self.has("inactivity-ignores-activity") else s.last_activity
            )
        return s

    # ---- metadata, token, keys ----------------------------------------------------------
    async def metadata(self, request: Request) -> Response:
        i = self.issuer
        md: dict[str, Any] = {
            "spec_version": "1_0",
            "issuer": i + "/other" if self.has("metadata-issuer-mismatch") else i,
            "jwks_uri": i + "/jwks",
            "delivery_methods_supported": [uris.PUSH, uris.POLL],
            "configuration_endpoint": i + "/streams",
            "status_endpoint": i + "/status",
            "add_subject_endpoint": i + "/subjects:add",
            "remove_subject_endpoint": i + "/subjects:remove",
            "verification_endpoint": i + "/verify",
            "authorization_schemes": [
                {"spec_urn": "oauth" if self.has("auth-scheme-bad") else uris.OAUTH_SCHEME}
            ],
            "default_subjects": "SOME" if self.has("default-subjects-bad") else self.default_subjects,
        }
        if self.critical is not None:
            md["critical_subject_members"] = self.critical
        if self.has("metadata-empty-array"):
            md["critical_subject_members"] = []
        if self.has("metadata-no-jwks"):
            del md["jwks_uri"]
        if self.has("no-spec-version"):
            del md["spec_version"]
        if self.has("metadata-push-only"):
            md["delivery_methods_supported"] = [uris.PUSH]
        if self.has("metadata-no-delivery-methods"):
            del md["delivery_methods_supported"]
        if self.has("metadata-no-issuer"):
            del md["issuer"]
        if self.has("spec-version-dots"):
            md["spec_version"] = "1.0"
        if self.has("critical-bad"):
            md["critical_subject_members"] = [1]
        if self.has("metadata-content-type"):
            return Response(json.dumps(md), media_type="text/plain")
        return JSONResponse(md)

    async def as_metadata(self, request: Request) -> Response:
        return JSONResponse({"issuer": self.issuer, "token_endpoint": self.issuer + "/token"})

    async def token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        cid, secret = form.get("client_id"), form.get("client_secret")
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            cid, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        if cid != CLIENT_ID or secret != CLIENT_SECRET or form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        scopes = set(str(form.get("scope") or "ssf.read ssf.manage").split())
        token = secrets.token_urlsafe(16)
        self.tokens[token] = scopes
        lifetime = 7200 if self.has("token-lifetime") else 600
        return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": lifetime})

    async def jwks(self, request: Request) -> Response:
        doc = self.keys.jwks()
        if self.has("jwks-private"):
            doc = {"keys": [{**k.private_jwk(), "use": "sig"} for k in self.keys.keys]}
            for k in doc["keys"]:
                k.pop("created_at", None)
        return JSONResponse(doc)

    async def admin_rotate(self, request: Request) -> Response:
        new = generate_signing_key(self.keys.active.alg, kid=f"key-{len(self.keys.keys) + 1}")
        self.keys.rotate(new, now=int(time.time()))
        if self.has("rotation-drops-old"):
            self.keys.keys = [new]
        if self.has("rotation-unpublished"):
            self.keys.keys = [k for k in self.keys.keys if k.kid != new.kid]
            self.retired.append(new)
        return Response(status_code=204)

    @property
    def signing_key(self) -> SigningKey:
        return self.retired[-1] if self.retired else self.keys.active

    # ---- SETs --------------------------------------------------------------------------
    def make_set(
        self, s: StreamState, uri: str, payload: dict[str, Any], subject: Any, txn: str | None
    ) -> tuple[str, str]:
        jti = secrets.token_urlsafe(12)
        if self.has("set-jti-reuse") and self._last_jti:
            jti = self._last_jti
        self._last_jti = jti
        claims: dict[str, Any] = {
            "iss": self.issuer + "/x" if self.has("set-iss") else self.issuer,
            "jti": jti,
            "iat": int(time.time()) + (3600 if self.has("set-iat-future") else 0),
            "aud": 42 if self.has("set-aud") else s.config["aud"],
        }
        if self.has("set-aud-other"):
            claims["aud"] = "https://someone-else.example.com"
        if self.has("emit-sessions-revoked") and uri == uris.CAEP_BASE + "session-revoked":
            uri = uris.RISC_BASE + "sessions-revoked"
        if self.has("credential-type-custom") and uri == uris.CAEP_BASE + "credential-change":
            payload = {**payload, "credential_type": "retina-scan"}
        if self.has("event-invalid") and uri == uris.VERIFICATION:
            payload = {**payload, "state": 12345}
        if isinstance(subject, dict):
            if self.has("subject-type-legacy"):
                subject = {"subject_type": subject.get("format"), **subject}
            if self.has("risc-subject-opaque") and uri.startswith(uris.RISC_BASE + "identifier-"):
                subject = {"format": "opaque", "id": "someone"}
            if self.has("stream-updated-sub-id") and uri == uris.STREAM_UPDATED:
                subject = {"format": "email", "email": "stream@example.com"}
        if txn is None and uri in SSF_EVENTS:
            txn = secrets.token_urlsafe(8)
        if txn is not None and not self.has("set-no-txn"):
            claims["txn"] = txn
        if not self.has("set-no-sub-id"):
            claims["sub_id"] = subject
        events = {uri: payload}
        if self.has("set-two-events"):
            events[uris.CAEP_BASE + "session-presented"] = {}
        claims["events"] = events
        if self.has("set-sub"):
            claims["sub"] = "someone"
        if self.has("set-exp"):
            claims["exp"] = int(time.time()) + 600
        key = self.signing_key
        header = {"alg": key.alg, "typ": "JWT" if self.has("set-typ") else uris.SET_TYP, "kid": key.kid}
        body = json.dumps(claims).encode()
        if self.has("set-unsigned"):
            compact = f"{_b64(json.dumps({'alg': 'none', 'typ': uris.SET_TYP}).encode())}.{_b64(body)}."
        else:
            compact = jws.serialize_compact(header, body, key.key, algorithms=[key.alg])
        return jti, compact

    async def emit(
        self, s: StreamState, uri: str, payload: dict[str, Any], subject: Any, txn: str | None = None
    ) -> str | None:
        jti, compact = self.make_set(s, uri, payload, subject, txn)
        await self.route_set(s, jti, compact)
        return jti

    async def route_set(self, s: StreamState, jti: str, compact: str) -> None:
        if s.status == "disabled" and not self.has("disabled-keeps") and not self.has("disabled-delivers"):
            return
        if s.status == "disabled" and self.has("disabled-keeps"):
            s.held.append(compact)
            return
        if s.status == "paused" and not self.has("paused-delivers"):
            s.held.append(compact)
            return
        await self.deliver(s, jti, compact)

    async def deliver(self, s: StreamState, jti: str, compact: str) -> None:
        if s.push:
            if s.queue is None:
                s.queue = asyncio.Queue()
                self._loop = asyncio.get_running_loop()
                s.worker = self._loop.create_task(self._push_worker(s))
            s.queue.put_nowait(compact)
        else:
            s.pending[jti] = compact
            async with self.cond:
                self.cond.notify_all()

    async def _push_worker(self, s: StreamState) -> None:
        assert s.queue is not None
        while True:
            compact = await s.queue.get()
            headers = {"Content-Type": uris.SET_MEDIA_TYPE, "Accept": "application/json"}
            if self.has("push-content-type"):
                headers["Content-Type"] = "application/jwt"
            if self.has("push-no-accept"):
                del headers["Accept"]
            if s.authorization and not self.has("push-no-auth"):
                headers["Authorization"] = s.authorization
            if self.has("push-auth-always") and not s.authorization:
                headers["Authorization"] = "Bearer fixture"
            content = (
                json.dumps({"set": compact}).encode() if self.has("push-json-body") else compact.encode()
            )
            for _ in range(3):
                with contextlib.suppress(httpx.HTTPError):
                    r = await self.http.post(
                        s.config["delivery"]["endpoint_url"], content=content, headers=headers
                    )
                    self.pushes += 1
                    if r.status_code < 500:
                        break
                await asyncio.sleep(0.1)

    async def change_status(self, s: StreamState, status: str, reason: str | None, *, notify: bool) -> None:
        """Transmitter-initiated change: stream-updated before stopping, and on re-enable."""
        sub = {"format": "opaque", "id": s.id}
        ev: dict[str, Any] = {"status": "enabled" if self.has("stream-updated-wrong-status") else status}
        if reason:
            ev["reason"] = reason
        if status != "enabled":
            if notify:
                jti, compact = self.make_set(s, uris.STREAM_UPDATED, ev, sub, None)
                await self.deliver(s, jti, compact)
            s.status = status
            if status == "disabled":
                s.held.clear()
        else:
            await self.set_status(s, "enabled")
            if notify:
                jti, compact = self.make_set(s, uris.STREAM_UPDATED, ev, sub, None)
                await self.deliver(s, jti, compact)

    async def set_status(self, s: StreamState, status: str) -> None:
        s.status = status
        if status == "disabled" and not self.has("disabled-keeps"):
            s.held.clear()
        if status == "enabled" and self.has("paused-drops"):
            s.held.clear()
        if status == "enabled" and s.held:
            held = list(reversed(s.held)) if self.has("paused-reverse") else list(s.held)
            s.held.clear()
            for compact in held:
                await self.deliver(s, _jti_of(compact), compact)

    # ---- management API -----------------------------------------------------------------
    def events_delivered(self, requested: list[str]) -> list[str]:
        if self.has("delivered-all"):
            return list(SUPPORTED)
        return [u for u in requested if u in SUPPORTED]

    def new_config(self, body: dict[str, Any], sid: str) -> dict[str, Any] | Response:
        delivery = body.get("delivery")
        if delivery is None:
            if self.has("no-delivery-400"):
                return self.error(400, "invalid_request", "delivery required")
            delivery = {"method": uris.POLL}
        if not isinstance(delivery, dict) or delivery.get("method") not in (uris.PUSH, uris.POLL):
            return self.error(400, "invalid_request", "bad delivery")
        delivery = dict(delivery)
        if delivery["method"] == uris.POLL:
            delivery["endpoint_url"] = (
                self.issuer + "/poll/" + ("shared" if self.has("poll-url-shared") else sid)
            )
            delivery.pop("authorization_header", None)
        elif not isinstance(delivery.get("endpoint_url"), str):
            return self.error(400, "invalid_request", "push needs endpoint_url")
        requested = body.get("events_requested") or []
        if self.has("unknown-events-400") and any(u not in SUPPORTED for u in requested):
            return self.error(400, "invalid_request", "unknown event")
        cfg: dict[str, Any] = {
            "stream_id": sid,
            "iss": self.issuer,
            "aud": "https://receiver.example.com/kit",
            "events_supported": list(SUPPORTED),
            "events_requested": list(requested),
            "events_delivered": self.events_delivered(requested),
            "delivery": delivery,
        }
        if self.has("no-events-supported"):
            del cfg["events_supported"]
        if self.has("supported-no-interop"):
            cfg["events_supported"] = [u for u in SUPPORTED if "/caep/" not in u]
        if self.has("supported-nonstandard"):
            cfg["events_supported"] = [*SUPPORTED, "https://example.com/custom-event"]
        if self.has("delivered-none"):
            cfg["events_delivered"] = []
        if self.has("create-iss-wrong"):
            cfg["iss"] = "https://elsewhere.example.com"
        if self.has("create-no-aud"):
            del cfg["aud"]
        if self.has("create-method-odd"):
            cfg["delivery"] = {**delivery, "method": "urn:example:carrier-pigeon"}
        if self.has("create-no-events-delivered"):
            del cfg["events_delivered"]
        if "description" in body:
            cfg["description"] = body["description"]
        if self.min_verification_interval is not None:
            cfg["min_verification_interval"] = self.min_verification_interval
        if self.inactivity_timeout is not None:
            cfg["inactivity_timeout"] = self.inactivity_timeout
        return cfg

    def public(self, s: StreamState) -> dict[str, Any]:
        return json.loads(json.dumps(s.config))

    async def streams_ep(self, request: Request) -> Response:
        scope = "read" if request.method == "GET" else "manage"
        if self.has("auth-after-lookup") and request.method == "DELETE":
            if self.streams.get(request.query_params.get("stream_id", "")) is None:
                return self.error(404, "not_found", "no such stream")
        denied = self.auth(request, scope)
        if denied:
            return denied
        self._ensure_ticker()
        if request.method == "GET":
            sid = request.query_params.get("stream_id")
            if sid is None:
                if self.has("list-500"):
                    return self.error(500, "server_error", "boom")
                items = [self.public(s) for s in self.streams.values()]
                return self.ok({"streams": items} if self.has("list-object") else items)
            s = self.lookup(sid)
            if s is None:
                if self.has("unknown-stream-200"):
                    return self.ok({"stream_id": sid, "iss": self.issuer})
                return self.error(404, "not_found", "no such stream")
            out = self.public(s)
            if self.has("read-no-iss"):
                out.pop("iss", None)
            return self.ok(out)
        if request.method == "DELETE":
            sid = request.query_params.get("stream_id")
            if sid is None:
                if self.has("delete-no-id-204"):
                    return self.ok(None, 204)
                return self.error(400, "invalid_request", "stream_id required")
            s = self.streams.pop(sid, None)
            if s is None:
                if self.has("unknown-stream-200"):
                    return self.ok(None, 204)
                return self.error(404, "not_found", "no such stream")
            if s.worker:
                s.worker.cancel()
            return self.ok(None, 200 if self.has("delete-200") else 204)
        if (request.method, self.has("patch-400"), self.has("put-400")) in (
            ("PATCH", True, False),
            ("PUT", False, True),
        ):
            return self.error(400, "invalid_request", "refused")
        if request.method == "PATCH" and self.has("body-parse-after-lookup"):
            return self.error(404, "not_found", "no such stream")
        body = await self.body(request)
        if not isinstance(body, dict):
            if self.has("broken-json-accepted"):
                body = {}
            else:
                return self.error(400, "invalid_request", "body is not a JSON object")
        if request.method == "POST":
            if self.has("create-500"):
                return self.error(500, "server_error", "boom")
            if self.streams and self.has("duplicate-400"):
                return self.error(400, "invalid_request", "exists")
            sid = ("stream id " if self.has("stream-id-chars") else "s-") + secrets.token_hex(6)
            cfg = self.new_config(body, sid)
            if isinstance(cfg, Response):
                return cfg
            s = StreamState(cfg)
            s.authorization = cfg["delivery"].get("authorization_header")
            if self.default_subjects == "ALL":
                pass
            self.streams[sid] = s
            if self.has("unsolicited-with-state"):
                await self.emit(
                    s, uris.VERIFICATION, {"state": "unrequested"}, {"format": "opaque", "id": sid}
                )
            return self.ok(self.public(s), 200 if self.has("create-200") else 201)
        s = self.lookup(body.get("stream_id"))
        if s is None:
            if self.has("unknown-stream-200"):
                return self.ok({"stream_id": body.get("stream_id"), "iss": self.issuer})
            return self.error(404, "not_found", "no such stream")
        for k in ("iss", "aud", "events_supported", "events_delivered"):
            if k in body and body[k] != s.config.get(k) and not self.has("patch-ignores-aud"):
                return self.error(400, "invalid_request", f"{k} cannot change")
        replace = request.method == "PUT"
        if self.has("patch-replaces"):
            replace = True
        if self.has("put-keeps"):
            replace = False
        merged = (
            {}
            if replace
            else {k: s.config[k] for k in ("events_requested", "delivery", "description") if k in s.config}
        )
        for k in ("events_requested", "delivery", "description"):
            if k in body:
                merged[k] = body[k]
        if replace and "delivery" not in merged:
            merged["delivery"] = {"method": uris.POLL}
        cfg = self.new_config(merged, s.id)
        if isinstance(cfg, Response):
            return cfg
        s.config = cfg
        s.authorization = cfg["delivery"].get("authorization_header")
        return self.ok(self.public(s))

    async def status_ep(self, request: Request) -> Response:
        if self.has("status-no-auth") and request.method == "GET":
            denied = None
        else:
            denied = self.auth(request, "read" if request.method == "GET" else "manage")
        if denied:
            return denied
        if request.method == "GET":
            sid = request.query_params.get("stream_id")
            s = self.lookup(sid)
            if s is None:
                if self.has("status-unknown-200"):
                    return self.ok({"stream_id": sid, "status": "enabled"})
                return self.error(404, "not_found", "no such stream")
            if self.has("status-get-500"):
                return self.error(500, "server_error", "boom")
            return self.ok(
                {"stream_id": s.id, "status": "active" if self.has("status-bad-value") else s.status}
            )
        body = await self.body(request)
        if not isinstance(body, dict) or body.get("status") not in ("enabled", "paused", "disabled"):
            return self.error(400, "invalid_request", "bad status body")
        s = self.lookup(body.get("stream_id"))
        if s is None:
            return self.error(404, "not_found", "no such stream")
        if self.has("status-post-500"):
            return self.error(500, "server_error", "boom")
        await self.set_status(s, body["status"])
        if self.has("status-post-empty"):
            return Response(status_code=200)
        out = {"stream_id": s.id, "status": "enabled" if self.has("status-echo-wrong") else s.status}
        if body.get("reason"):
            out["reason"] = body["reason"]
        return self.ok(out)

    async def admin_status(self, request: Request) -> Response:
        body = await self.body(request)
        s = self.streams.get(body.get("stream_id")) if isinstance(body, dict) else None
        if s is None:
            return self.error(404, "not_found", "no such stream")
        await self.change_status(s, body["status"], "operator", notify=not self.has("no-stream-updated"))
        return Response(status_code=204)

    async def add_subject(self, request: Request) -> Response:
        denied = self.auth(request, "manage")
        if denied:
            return denied
        body = await self.body(request)
        if not isinstance(body, dict):
            return self.error(400, "invalid_request", "bad body")
        try:
            subject = parse_subject(body.get("subject"))
        except SSFError as exc:
            if self.has("subject-lenient"):
                return Response(status_code=200)
            return self.error(400, "invalid_request", exc.description)
        s = self.lookup(body.get("stream_id"))
        if s is None:
            return self.error(404, "not_found", "no such stream")
        s.subjects.append(subject)
        return self.ok(None, 204) if self.has("subject-add-204") else Response(status_code=200)

    async def remove_subject(self, request: Request) -> Response:
        denied = self.auth(request, "manage")
        if denied:
            return denied
        body = await self.body(request)
        if not isinstance(body, dict):
            return self.error(400, "invalid_request", "bad body")
        try:
            subject = parse_subject(body.get("subject"))
        except SSFError as exc:
            return self.error(400, "invalid_request", exc.description)
        s = self.lookup(body.get("stream_id"))
        if s is None:
            return self.error(404, "not_found", "no such stream")
        s.subjects = [x for x in s.subjects if x != subject]
        return Response(status_code=200) if self.has("subject-remove-200") else self.ok(None, 204)

    async def verify(self, request: Request) -> Response:
        denied = self.auth(request, "manage")
        if denied:
            return denied
        body = await self.body(request)
        if not isinstance(body, dict):
            return self.error(400, "invalid_request", "bad body")
        s = self.lookup(body.get("stream_id"))
        if s is None:
            if self.has("verify-unknown-204"):
                return self.ok(None, 204)
            return self.error(404, "not_found", "no such stream")
        now = time.monotonic()
        interval = self.min_verification_interval
        if self.has("rate-limit-500") and s.last_verification:
            return self.error(500, "server_error", "too fast")
        if (
            interval
            and (now - s.last_verification < interval or self.has("rate-limit-forever"))
            and s.last_verification
        ):
            headers = {} if self.has("rate-no-retry-after") else {"Retry-After": str(interval)}
            return self.error(429, "too_many_requests", "slow down", **headers)
        s.last_verification = now
        payload: dict[str, Any] = {}
        state = body.get("state")
        if isinstance(state, str) and not self.has("verification-no-state"):
            payload["state"] = "not-" + state if self.has("verification-wrong-state") else state
        subject: dict[str, Any] = {
            "format": "opaque",
            "id": "wrong" if self.has("verification-wrong-sub-id") else s.id,
        }
        if self.has("verification-event-subject"):
            payload["subject"] = subject
        await self.emit(s, uris.VERIFICATION, payload, subject)
        return self.ok({}, 200) if self.has("verify-200") else self.ok(None, 204)

    async def publish(self, request: Request) -> Response:
        header = request.headers.get("authorization", "")
        if "ssf.publish" not in self.tokens.get(header[7:], set()):
            return self.error(401, "invalid_token", "publish token required")
        body = await self.body(request)
        if not isinstance(body, dict) or not isinstance(body.get("events"), dict) or len(body["events"]) != 1:
            return self.error(400, "invalid_request", "bad publish body")
        try:
            subject = parse_subject(body.get("subject"))
        except SSFError as exc:
            return self.error(400, "invalid_request", exc.description)
        ((uri, payload),) = body["events"].items()
        if self.has("drop-device-compliance") and uri.endswith("device-compliance-change"):
            return JSONResponse({"jti": {}}, status_code=202)
        payload = dict(payload)
        if self.has("caep-no-reason-admin"):
            payload.pop("reason_admin", None)
        out = {}
        for s in list(self.streams.values()):
            if uri not in s.config.get("events_delivered", []) and uri not in SSF_EVENTS:
                continue
            if not self.covers(s, subject):
                continue
            wire = subject.to_dict()
            if self.has("critical-strip") and isinstance(wire, dict):
                wire.pop("tenant", None)
            jti = await self.emit(s, uri, payload, wire, body.get("txn"))
            out[s.id] = jti
        return JSONResponse({"jti": out}, status_code=202)

    def covers(self, s: StreamState, subject: Subject) -> bool:
        if self.default_subjects == "ALL" or self.has("subjects-ignore-matching"):
            return True
        if self.has("matching-exact-only"):
            return subject in s.subjects
        return any(subject_matches(a, subject) for a in s.subjects)

    # ---- poll ---------------------------------------------------------------------------
    async def poll(self, request: Request) -> Response:
        denied = self.auth(request, "read")
        if denied:
            return denied
        body = await self.body(request)
        s = self.lookup(request.path_params["stream_id"])
        if not isinstance(body, dict):
            return self.error(400, "invalid_request", "bad body")
        max_events = body.get("maxEvents")
        bad = max_events is not None and (
            not isinstance(max_events, int) or isinstance(max_events, bool) or max_events < 0
        )
        if bad and not self.has("poll-bad-body-200"):
            return self.error(400, "invalid_request", "maxEvents must be a non-negative integer")
        if bad:
            max_events = None
        if body.get("setErrs") and self.has("poll-set-errs-400"):
            return self.error(400, "invalid_request", "setErrs not supported")
        if s is None:
            return self.error(404, "not_found", "no such stream")
        acks = [*(body.get("ack") or []), *(body.get("setErrs") or {})]
        late = self.has("poll-ack-after-select")
        if not self.has("poll-ignore-ack") and not late:
            for jti in acks:
                s.pending.pop(jti, None)
        if max_events == 0:
            if self.has("poll-ack-only-400"):
                return self.error(400, "invalid_request", "maxEvents 0")
            return self.ok({"sets": {}})
        hold = not body.get("returnImmediately") or self.has("poll-always-long")
        if not s.pending and hold and not self.has("poll-no-long-poll"):
            async with self.cond:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.cond.wait_for(lambda: bool(s.pending)), self.long_poll_timeout
                    )
        items = list(s.pending.items())
        cap = len(items) if max_events is None or self.has("poll-ignore-max-events") else max_events
        chosen = dict(items[:cap])
        if self.has("poll-no-redeliver"):
            for jti in chosen:
                s.pending.pop(jti, None)
        if late:
            for jti in acks:
                s.pending.pop(jti, None)
        out: dict[str, Any] = {"sets": list(chosen.values()) if self.has("poll-sets-array") else chosen}
        if len(items) > cap and not self.has("poll-no-more-available"):
            out["moreAvailable"] = True
        return self.ok(out)


def _jti_of(compact: str) -> str:
    part = compact.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return str(claims.get("jti"))
