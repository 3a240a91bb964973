"""A small transmitter (and authorization server) that the receiver tests talk to on the wire.

It serves SSF discovery with a path issuer, a JWKS, client-credentials tokens, the stream
management API, verification and a long-poll endpoint, and records what the receiver sent
so tests can check it. It also plays the resource's authorization server: RFC 9068 JWT
access tokens signed by its own key, and RFC 7662 introspection for opaque tokens.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import urllib.parse
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import httpx
from joserfc import jws
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ssf import uris
from ssf.events import Verification, parse_event
from ssf.events.base import Event
from ssf.keys import KeySet, SigningKey, generate_signing_key
from ssf.set import SecurityEventToken, sign_set
from ssf.stream import TRANSMITTER_SUPPLIED
from ssf.subjects import Subject

CLIENT_ID, CLIENT_SECRET = "rcv-client", "rcv-secret"


async def _form(request: Request) -> dict[str, str]:
    """application/x-www-form-urlencoded without python-multipart."""
    parsed = urllib.parse.parse_qs((await request.body()).decode())
    return {k: v[0] for k, v in parsed.items()}


AUDIENCE = "https://rs.example/api"


class FakeTransmitter:
    def __init__(
        self,
        port: int,
        *,
        path: str = "/tenant1",
        alg: str = "ES256",
        legacy_discovery: bool = False,
        issuer_override: str | None = None,
        stream_aud: str = "https://receiver.example",
        poll_hold: float = 0.3,
        critical_subject_members: list[str] | None = None,
        token_lifetime: int = 3600,
        patch_status: int | None = None,
    ) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.issuer = self.base + path
        self.path = path
        self.keys = KeySet([generate_signing_key(alg, kid="t-1")])
        self.idp_key = generate_signing_key("RS256", kid="idp-1")
        self.legacy_discovery = legacy_discovery
        self.issuer_override = issuer_override
        self.stream_aud = stream_aud
        self.poll_hold = poll_hold
        self.critical = critical_subject_members
        self.token_lifetime = token_lifetime
        self.patch_status = patch_status
        self.streams: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.tokens_issued: list[str] = []
        self.token_scopes: list[str] = []
        self.valid_tokens: set[str] = set()
        self.queue: OrderedDict[str, str] = OrderedDict()
        self.acked: list[str] = []
        self.set_errs: dict[str, Any] = {}
        self.poll_bodies: list[Any] = []
        self.poll_urls: list[str] = []
        self.poll_status: list[tuple[int, dict[str, str]]] = []  # canned failures, consumed first
        self.push_results: list[tuple[int, Any]] = []
        self.verifications: list[str | None] = []
        self.jwks_fetches = 0
        self.introspected: dict[str, dict[str, Any]] = {}
        self.introspection_calls = 0
        self._queue_event = asyncio.Event()
        p = path
        routes = [
            Route(f"/.well-known/ssf-configuration{p}", self.metadata_ep),
            Route(f"/.well-known/risc-configuration{p}", self.legacy_metadata_ep),
            Route(f"/.well-known/oauth-authorization-server{p}", self.as_metadata_ep),
            Route(f"{p}/jwks", self.jwks_ep),
            Route(f"{p}/token", self.token_ep, methods=["POST"]),
            Route(f"{p}/streams", self.streams_ep, methods=["GET", "POST", "PATCH", "PUT", "DELETE"]),
            Route(f"{p}/status", self.status_ep, methods=["GET", "POST"]),
            Route(f"{p}/subjects:add", self.add_subject_ep, methods=["POST"]),
            Route(f"{p}/subjects:remove", self.remove_subject_ep, methods=["POST"]),
            Route(f"{p}/verify", self.verify_ep, methods=["POST"]),
            Route(f"{p}/events", self.poll_ep, methods=["POST"]),
            Route("/as/jwks", self.idp_jwks_ep),
            Route("/as/introspect", self.introspect_ep, methods=["POST"]),
        ]
        self.app = Starlette(routes=routes)

    # --- metadata and keys ------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        iss = self.issuer
        meta: dict[str, Any] = {
            "spec_version": "1_0",
            "issuer": self.issuer_override or iss,
            "jwks_uri": f"{iss}/jwks",
            "delivery_methods_supported": [uris.PUSH, uris.POLL],
            "configuration_endpoint": f"{iss}/streams",
            "status_endpoint": f"{iss}/status",
            "add_subject_endpoint": f"{iss}/subjects:add",
            "remove_subject_endpoint": f"{iss}/subjects:remove",
            "verification_endpoint": f"{iss}/verify",
            "authorization_schemes": [{"spec_urn": uris.OAUTH_SCHEME}],
        }
        if self.critical:
            meta["critical_subject_members"] = self.critical
        return meta

    async def metadata_ep(self, request: Request) -> Response:
        if self.legacy_discovery:
            return JSONResponse({"error": "not_found"}, status_code=404)
        return JSONResponse(self.metadata())

    async def legacy_metadata_ep(self, request: Request) -> Response:
        return JSONResponse(self.metadata())

    async def as_metadata_ep(self, request: Request) -> Response:
        return JSONResponse({"issuer": self.issuer, "token_endpoint": f"{self.issuer}/token"})

    async def jwks_ep(self, request: Request) -> Response:
        self.jwks_fetches += 1
        return JSONResponse(self.keys.jwks())

    def rotate(self, alg: str = "RS256", kid: str = "t-2") -> SigningKey:
        new = generate_signing_key(alg, kid=kid)
        self.keys.rotate(new, now=int(time.time()))
        return new

    # --- OAuth ------------------------------------------------------------------------
    async def token_ep(self, request: Request) -> Response:
        form = await _form(request)
        auth = request.headers.get("authorization", "")
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if auth != expected:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        scope = str(form.get("scope") or "")
        if not scope or not set(scope.split()) <= {"ssf.read", "ssf.manage"}:
            return JSONResponse({"error": "invalid_scope"}, status_code=400)
        self.token_scopes.append(scope)
        token = secrets.token_urlsafe(16)
        self.tokens_issued.append(token)
        self.valid_tokens.add(token)
        return JSONResponse(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime}
        )

    def authorized(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.valid_tokens

    def _unauth(self) -> Response:
        return JSONResponse({"err": "unauthorized", "description": "bearer token required"}, status_code=401)

    # --- stream management ------------------------------------------------------------
    async def streams_ep(self, request: Request) -> Response:
        body: Any = None
        if request.method in ("POST", "PATCH", "PUT"):
            body = json.loads(await request.body())
        self.requests.append((request.method, str(request.url), body))
        if not self.authorized(request):
            return self._unauth()
        if isinstance(body, dict):
            bad = set(body) & TRANSMITTER_SUPPLIED - {"stream_id"}
            if bad or (request.method == "POST" and "stream_id" in body):
                return JSONResponse({"err": "invalid_request", "description": f"{bad}"}, status_code=400)
        sid = request.query_params.get("stream_id")
        if request.method == "GET":
            if sid is None:
                return JSONResponse(list(self.streams.values()))
            if sid not in self.streams:
                return JSONResponse({}, status_code=404)
            return JSONResponse(self.streams[sid])
        if request.method == "DELETE":
            if sid not in self.streams:
                return JSONResponse({}, status_code=404)
            del self.streams[sid]
            return Response(status_code=204)
        if request.method == "POST":
            if self.streams:
                return JSONResponse({"err": "conflict"}, status_code=409)
            stream_id = "stream_" + uuid.uuid4().hex
            self.streams[stream_id] = self._config(stream_id, body)
            return JSONResponse(self.streams[stream_id], status_code=201)
        if self.patch_status is not None:
            return JSONResponse({"err": "nope"}, status_code=self.patch_status)
        stream_id = body.get("stream_id")
        if stream_id not in self.streams:
            return JSONResponse({}, status_code=404)
        if request.method == "PATCH":
            merged = {**self.streams[stream_id], **body}
        else:
            merged = {"stream_id": stream_id, **body}
        self.streams[stream_id] = self._config(stream_id, merged)
        return JSONResponse(self.streams[stream_id])

    def _config(self, stream_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        delivery = dict(body.get("delivery") or {"method": uris.POLL})
        if delivery["method"] == uris.POLL:
            delivery["endpoint_url"] = f"{self.issuer}/events?stream_id={stream_id}"
        requested = list(body.get("events_requested") or [])
        return {
            "stream_id": stream_id,
            "iss": self.issuer,
            "aud": self.stream_aud,
            "events_supported": requested,
            "events_requested": requested,
            "events_delivered": requested,
            "delivery": delivery,
            "description": body.get("description"),
        }

    async def status_ep(self, request: Request) -> Response:
        if not self.authorized(request):
            return self._unauth()
        if request.method == "GET":
            sid = request.query_params.get("stream_id")
            if sid not in self.streams:
                return JSONResponse({}, status_code=404)
            return JSONResponse({"stream_id": sid, "status": self.streams[sid].get("_status", "enabled")})
        body = json.loads(await request.body())
        sid = body.get("stream_id")
        if sid not in self.streams:
            return JSONResponse({}, status_code=404)
        self.streams[sid]["_status"] = body["status"]
        return JSONResponse({"stream_id": sid, "status": body["status"]})

    async def add_subject_ep(self, request: Request) -> Response:
        if not self.authorized(request):
            return self._unauth()
        self.requests.append(("ADD", str(request.url), json.loads(await request.body())))
        return Response(status_code=200)

    async def remove_subject_ep(self, request: Request) -> Response:
        if not self.authorized(request):
            return self._unauth()
        self.requests.append(("REMOVE", str(request.url), json.loads(await request.body())))
        return Response(status_code=204)

    async def verify_ep(self, request: Request) -> Response:
        if not self.authorized(request):
            return self._unauth()
        body = json.loads(await request.body())
        sid = body.get("stream_id")
        if sid not in self.streams:
            return JSONResponse({}, status_code=404)
        state = body.get("state")
        self.verifications.append(state)
        token = self.sign(Subject.opaque(sid), Verification(state=state), aud=self.stream_aud)
        delivery = self.streams[sid]["delivery"]
        if delivery["method"] == uris.PUSH:
            asyncio.get_running_loop().create_task(self._push_later(delivery, token))
        else:
            self.enqueue(token)
        return Response(status_code=204)

    async def _push_later(self, delivery: dict[str, Any], token: str) -> None:
        await asyncio.sleep(0.05)
        async with httpx.AsyncClient() as http:
            headers = {"Content-Type": uris.SET_MEDIA_TYPE, "Accept": "application/json"}
            if delivery.get("authorization_header"):
                headers["Authorization"] = delivery["authorization_header"]
            for _ in range(50):
                try:
                    resp = await http.post(delivery["endpoint_url"], content=token, headers=headers)
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
                    continue
                self.push_results.append((resp.status_code, resp.content))
                return

    # --- poll ---------------------------------------------------------------------------
    def enqueue(self, token: str) -> None:
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        self.queue[claims["jti"]] = token
        self._queue_event.set()

    async def poll_ep(self, request: Request) -> Response:
        self.poll_urls.append(str(request.url))
        if not self.authorized(request):
            return self._unauth()
        if self.poll_status:
            status, headers = self.poll_status.pop(0)
            return JSONResponse({"err": "unavailable"}, status_code=status, headers=headers)
        body = json.loads(await request.body() or b"{}")
        self.poll_bodies.append(body)
        for jti in body.get("ack", []):
            self.acked.append(jti)
            self.queue.pop(jti, None)
        for jti, err in body.get("setErrs", {}).items():
            self.set_errs[jti] = err
            self.queue.pop(jti, None)
        max_events = body.get("maxEvents")
        if max_events == 0:
            return JSONResponse({"sets": {}})
        if not self.queue and not body.get("returnImmediately"):
            self._queue_event.clear()
            try:
                await asyncio.wait_for(self._queue_event.wait(), timeout=self.poll_hold)
            except TimeoutError:
                pass
        items = list(self.queue.items())
        limit = max_events if isinstance(max_events, int) else len(items)
        out = dict(items[:limit])
        more = len(items) > limit
        resp: dict[str, Any] = {"sets": out}
        if more:
            resp["moreAvailable"] = True
        return JSONResponse(resp)

    # --- signing ---------------------------------------------------------------------------
    def sign(
        self,
        subject: Subject,
        event: Event,
        *,
        aud: str | None = None,
        jti: str | None = None,
        iat: int | None = None,
        key: SigningKey | None = None,
    ) -> str:
        token = SecurityEventToken.create(
            iss=self.issuer, aud=aud or self.stream_aud, sub_id=subject, event=event, jti=jti, iat=iat
        )
        return sign_set(token, key or self.keys.active)

    def sign_uri(self, subject: Subject, event_type: str, payload: dict[str, Any], **kw: Any) -> str:
        return self.sign(subject, parse_event(event_type, payload), **kw)

    # --- the resource's authorization server -------------------------------------------
    async def idp_jwks_ep(self, request: Request) -> Response:
        return JSONResponse({"keys": [self.idp_key.public_jwk()]})

    def mint(self, sub: str = "alice", *, iat: int | None = None, lifetime: int = 600, **claims: Any) -> str:
        """An RFC 9068 access token for the protected resource."""
        now = int(time.time()) if iat is None else iat
        body = {
            "iss": self.base + "/as",
            "sub": sub,
            "aud": AUDIENCE,
            "client_id": "web-app",
            "iat": now,
            "exp": now + lifetime,
            "jti": secrets.token_urlsafe(8),
            "scope": "read",
            **claims,
        }
        header = {"alg": "RS256", "typ": "at+jwt", "kid": self.idp_key.kid}
        return jws.serialize_compact(
            header, json.dumps(body).encode(), self.idp_key.key, algorithms=["RS256"]
        )

    def opaque_token(self, sub: str = "bob", active: bool = True, **claims: Any) -> str:
        token = secrets.token_urlsafe(24)
        now = int(time.time())
        self.introspected[token] = {
            "active": active,
            "sub": sub,
            "iss": self.base + "/as",
            "iat": now,
            "exp": now + 600,
            "scope": "read",
            **claims,
        }
        return token

    async def introspect_ep(self, request: Request) -> Response:
        self.introspection_calls += 1
        auth = request.headers.get("authorization", "")
        expected = "Basic " + base64.b64encode(b"rs:rs-secret").decode()
        if auth != expected:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        form = await _form(request)
        data = self.introspected.get(str(form.get("token")))
        if data is None or not data.get("active"):
            return JSONResponse({"active": False})
        return JSONResponse(data)
