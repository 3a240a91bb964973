"""The kit playing the transmitter (digest 11.4): metadata, JWKS, a token endpoint, the
stream management API, a poll endpoint, and pushes; everything the receiver asks for and
answers is recorded for the receiver modules to judge.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ssf import uris
from ssf.events import CAEP_EVENTS, RISC_EVENTS, SSF_EVENTS
from ssf.keys import KeySet, SigningKey, generate_signing_key
from ssf.stream import TRANSMITTER_SUPPLIED
from ssf.subjects import parse_subject

__all__ = ["Emulator", "Exchange", "Op"]

INTEROP = (
    uris.CAEP_BASE + "session-revoked",
    uris.CAEP_BASE + "credential-change",
    uris.CAEP_BASE + "device-compliance-change",
)


@dataclass(slots=True)
class Op:
    """One management call the receiver made."""

    kind: str  # discovery, token, create, read, read-all, update, replace, delete, status-read, ...
    method: str
    path: str
    query: dict[str, str]
    body: Any
    raw: bytes
    headers: dict[str, str]
    status: int = 0
    stream_id: str | None = None
    problems: list[str] = field(default_factory=list)
    at: float = field(default_factory=time.time)


@dataclass(slots=True)
class Exchange:
    """One SET the kit sent and what became of it."""

    jti: str
    kind: str  # unsolicited, verification, event, corpus, corpus-probe
    compact: str
    via: str
    status: int | None = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    acked: bool = False
    set_err: dict[str, Any] | None = None
    event_type: str = ""
    state: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def resolve(self) -> None:
        self.done.set()

    @property
    def err(self) -> str | None:
        if self.set_err is not None:
            e = self.set_err.get("err")
            return e if isinstance(e, str) else None
        try:
            data = json.loads(self.body)
        except ValueError:
            return None
        e = data.get("err") if isinstance(data, dict) else None
        return e if isinstance(e, str) else None

    @property
    def accepted(self) -> bool:
        return self.status == 202 if self.via == "push" else self.acked


class Emulator:
    """An SSF transmitter that records what a receiver does (one stream per receiver)."""

    def __init__(
        self,
        *,
        path: str = "/kit",
        profile: str = "default",
        audience: str = "https://receiver.example.com",
        client_id: str = "kit-receiver",
        client_secret: str = "kit-receiver-secret",
        static_token: str | None = None,
        subject: dict[str, Any] | None = None,
        long_poll: float = 10.0,
        push_delay: float = 0.2,
        critical_subject_members: list[str] | None = None,
        stream_iss: str | None = None,
    ) -> None:
        self.path = "/" + path.strip("/")
        self.profile = profile
        self.audience = audience
        self.client_id, self.client_secret = client_id, client_secret
        self.static_token = static_token
        self.subject = subject or {"format": "email", "email": "conformance-user@example.com"}
        self.long_poll = long_poll
        self.push_delay = push_delay
        self.critical = critical_subject_members
        #: Answer stream configurations with this ``iss`` instead of the issuer (a probe).
        self.stream_iss = stream_iss
        self.base_url = ""
        self.rsa, self.ec = _keys()
        self.keys = KeySet([self.ec, self.rsa])
        self.tokens: dict[str, set[str]] = {}
        if static_token:
            self.tokens[static_token] = {"ssf.read", "ssf.manage"}
        self.ops: list[Op] = []
        self.exchanges: list[Exchange] = []
        self.stream: dict[str, Any] | None = None
        self.status = "enabled"
        self.deleted: set[str] = set()
        self.queue: dict[str, Exchange] = {}
        self.polls: list[dict[str, Any]] = []
        self.states: list[str] = []
        self.changed = asyncio.Event()
        self._cond: asyncio.Condition | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.http: httpx.AsyncClient | None = None
        self.on_created: list[Callable[[], Any]] = []
        self.on_verify: list[Callable[[str | None], Any]] = []
        self.on_removed: list[Callable[[dict[str, Any]], Any]] = []
        #: Work a DELETE waits for (SETs sent after a subject removal must land first).
        self.before_delete: set[asyncio.Task[Any]] = set()
        p = self.path
        self.app = Starlette(
            routes=[
                Route(
                    f"/.well-known/ssf-configuration{p}",
                    self.metadata,
                    methods=["GET", "POST", "PUT", "DELETE"],
                ),
                Route(f"/.well-known/oauth-authorization-server{p}", self.as_metadata, methods=["GET"]),
                Route(f"{p}/token", self.token, methods=["POST"]),
                Route(f"{p}/jwks", self.jwks, methods=["GET"]),
                Route(f"{p}/streams", self.streams, methods=["GET", "POST", "PATCH", "PUT", "DELETE"]),
                Route(f"{p}/status", self.status_ep, methods=["GET", "POST"]),
                Route(f"{p}/subjects:add", self.subjects, methods=["POST"]),
                Route(f"{p}/subjects:remove", self.subjects, methods=["POST"]),
                Route(f"{p}/verify", self.verify, methods=["POST"]),
                Route(f"{p}/events", self.poll, methods=["POST"]),
            ]
        )

    # ---- plumbing ---------------------------------------------------------------------
    @property
    def issuer(self) -> str:
        return self.base_url + self.path

    @property
    def cond(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        tasks = [*self._tasks, *self.before_delete]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t

    def touch(self) -> None:
        self.changed.set()

    async def record(self, request: Request, kind: str) -> Op:
        raw = await request.body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = ValueError
        op = Op(
            kind,
            request.method,
            request.url.path,
            dict(request.query_params),
            body,
            raw,
            {k.lower(): v for k, v in request.headers.items()},
        )
        self.ops.append(op)
        self.touch()
        return op

    def answer(self, op: Op, status: int, body: Any = None) -> Response:
        op.status = status
        if body is None:
            return Response(status_code=status)
        return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})

    def authorized(self, op: Op, scope: str) -> Response | None:
        auth = op.headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else None
        if token is None or token not in self.tokens:
            op.problems.append("no valid bearer token")
            return self.answer(
                op, 401, {"err": "unauthorized", "description": "a valid bearer token is required"}
            )
        wanted = {"ssf.manage"} if scope == "manage" else {"ssf.read", "ssf.manage"}
        if not self.tokens[token] & wanted:
            op.problems.append("insufficient scope")
            return self.answer(op, 403, {"err": "insufficient_scope", "description": scope})
        return None

    # ---- discovery, token, keys ---------------------------------------------------------
    def metadata_doc(self) -> dict[str, Any]:
        i = self.issuer
        md: dict[str, Any] = {
            "spec_version": uris.SPEC_VERSION,
            "issuer": i,
            "jwks_uri": i + "/jwks",
            "delivery_methods_supported": [uris.PUSH, uris.POLL],
            "configuration_endpoint": i + "/streams",
            "status_endpoint": i + "/status",
            "verification_endpoint": i + "/verify",
            "authorization_schemes": [{"spec_urn": uris.OAUTH_SCHEME}],
            "default_subjects": "ALL",
        }
        if self.profile == "default":
            md["add_subject_endpoint"] = i + "/subjects:add"
            md["remove_subject_endpoint"] = i + "/subjects:remove"
        if self.critical:
            md["critical_subject_members"] = list(self.critical)
        return md

    async def metadata(self, request: Request) -> Response:
        op = await self.record(request, "discovery")
        if request.method != "GET":
            op.problems.append(f"metadata requested with {request.method}")
            return self.answer(op, 405, {"err": "invalid_request", "description": "GET only"})
        return self.answer(op, 200, self.metadata_doc())

    async def as_metadata(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.issuer,
                "token_endpoint": self.issuer + "/token",
                "grant_types_supported": ["client_credentials"],
                "scopes_supported": ["ssf.read", "ssf.manage"],
            }
        )

    async def token(self, request: Request) -> Response:
        op = await self.record(request, "token")
        form = {k: v[0] for k, v in parse_qs(op.raw.decode("utf-8", "replace")).items()}
        op.body = form
        cid, secret = form.get("client_id"), form.get("client_secret")
        auth = op.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                cid, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                cid = None
        if form.get("grant_type") != "client_credentials":
            return self.answer(op, 400, {"error": "unsupported_grant_type"})
        if cid != self.client_id or secret != self.client_secret:
            return self.answer(op, 401, {"error": "invalid_client"})
        scopes = form.get("scope", "").split()
        if not scopes or any(s not in ("ssf.read", "ssf.manage") for s in scopes):
            op.problems.append(f"scope {form.get('scope')!r}")
            return self.answer(op, 400, {"error": "invalid_scope"})
        token = secrets.token_urlsafe(24)
        self.tokens[token] = set(scopes)
        return self.answer(op, 200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600})

    async def jwks(self, request: Request) -> Response:
        return JSONResponse(self.keys.jwks())

    # ---- streams -------------------------------------------------------------------------
    def supported(self) -> list[str]:
        if self.profile == "caep-interop":
            return [*sorted(SSF_EVENTS), *INTEROP]
        return sorted(SSF_EVENTS | CAEP_EVENTS | (RISC_EVENTS - {uris.RISC_BASE + "sessions-revoked"}))

    def build_config(self, sid: str, body: dict[str, Any]) -> dict[str, Any]:
        delivery = body.get("delivery") or {"method": uris.POLL}
        delivery = dict(delivery) if isinstance(delivery, dict) else {"method": uris.POLL}
        delivery["method"] = uris.normalize_delivery_method(str(delivery.get("method")))
        if delivery["method"] == uris.POLL:
            delivery["endpoint_url"] = f"{self.issuer}/events?stream_id={sid}"
        requested = [u for u in body.get("events_requested") or [] if isinstance(u, str)]
        cfg: dict[str, Any] = {
            "stream_id": sid,
            "iss": self.stream_iss or self.issuer,
            "aud": self.audience,
            "events_supported": self.supported(),
            "events_requested": requested,
            "events_delivered": [u for u in requested if u in self.supported()],
            "delivery": delivery,
        }
        if isinstance(body.get("description"), str):
            cfg["description"] = body["description"]
        return cfg

    def public_config(self) -> dict[str, Any]:
        assert self.stream is not None
        cfg: dict[str, Any] = json.loads(json.dumps(self.stream))
        d = cfg.get("delivery", {})
        if "authorization_header" in d:
            d["authorization_header"] = "<redacted>"
        return cfg

    def check_body(self, op: Op, *, update: bool) -> dict[str, Any] | Response:
        if op.body is ValueError or not isinstance(op.body, dict):
            op.problems.append("body is not a JSON object")
            return self.answer(op, 400, {"err": "invalid_request", "description": "JSON object required"})
        body: dict[str, Any] = op.body
        supplied = [k for k in TRANSMITTER_SUPPLIED if k in body and not (update and k == "stream_id")]
        if supplied:
            op.problems.append(f"transmitter-supplied properties sent: {', '.join(sorted(supplied))}")
            return self.answer(op, 400, {"err": "invalid_request", "description": "transmitter-supplied"})
        d = body.get("delivery")
        if isinstance(d, dict) and uris.normalize_delivery_method(str(d.get("method"))) == uris.PUSH:
            if not isinstance(d.get("endpoint_url"), str):
                op.problems.append("push delivery without endpoint_url")
                return self.answer(op, 400, {"err": "invalid_request", "description": "endpoint_url"})
        return body

    async def streams(self, request: Request) -> Response:
        kinds = {"POST": "create", "PATCH": "update", "PUT": "replace", "DELETE": "delete", "GET": "read"}
        op = await self.record(request, kinds[request.method])
        if request.method == "GET" and "stream_id" not in op.query:
            op.kind = "read-all"
        if request.method == "DELETE" and isinstance(op.body, dict) and "stream_id" in op.body:
            op.problems.append("stream_id sent in the DELETE body")
        op.stream_id = op.query.get("stream_id") or (
            op.body.get("stream_id") if isinstance(op.body, dict) else None
        )
        denied = self.authorized(op, "read" if request.method == "GET" else "manage")
        if denied:
            return denied
        if request.method == "GET":
            if op.kind == "read-all":
                return self.answer(op, 200, [self.public_config()] if self.stream else [])
            if self.stream is None or self.stream["stream_id"] != op.stream_id:
                return self.answer(op, 404, {"err": "not_found", "description": "no such stream"})
            return self.answer(op, 200, self.public_config())
        if request.method == "DELETE":
            if self.before_delete:
                await asyncio.wait(set(self.before_delete), timeout=30)
            sid = op.query.get("stream_id")
            if sid is None:
                op.problems.append("DELETE without ?stream_id=")
                return self.answer(
                    op, 400, {"err": "invalid_request", "description": "stream_id query required"}
                )
            if self.stream is None or self.stream["stream_id"] != sid:
                return self.answer(op, 404, {"err": "not_found", "description": "no such stream"})
            self.deleted.add(sid)
            self.stream = None
            return self.answer(op, 204)
        if self.profile == "caep-interop" and request.method in ("PATCH", "PUT"):
            return self.answer(op, 405, {"err": "invalid_request", "description": "not in the CAEP profile"})
        checked = self.check_body(op, update=request.method != "POST")
        if isinstance(checked, Response):
            return checked
        if request.method == "POST":
            if self.stream is not None:
                return self.answer(op, 409, {"err": "conflict", "description": "one stream per receiver"})
            sid = f"stream_{uuid.uuid4().hex}"
            op.stream_id = sid
            self.stream = self.build_config(sid, checked)
            self.status = "enabled"
            for hook in self.on_created:
                self.spawn(_call(hook))
            return self.answer(op, 201, self.public_config())
        sid = checked.get("stream_id")
        if not isinstance(sid, str):
            op.problems.append(f"{request.method} without stream_id")
            return self.answer(op, 400, {"err": "invalid_request", "description": "stream_id required"})
        if self.stream is None or self.stream["stream_id"] != sid:
            return self.answer(op, 404, {"err": "not_found", "description": "no such stream"})
        names: tuple[str, ...] = ("events_requested", "delivery", "description")
        merged: dict[str, Any] = {}
        if request.method == "PATCH":
            merged.update({k: self.stream[k] for k in names if k in self.stream})
        merged.update({k: checked[k] for k in names if k in checked})
        self.stream = self.build_config(sid, merged)
        return self.answer(op, 200, self.public_config())

    async def status_ep(self, request: Request) -> Response:
        op = await self.record(request, "status-read" if request.method == "GET" else "status-update")
        denied = self.authorized(op, "read" if request.method == "GET" else "manage")
        if denied:
            return denied
        if request.method == "GET":
            sid = op.query.get("stream_id")
            op.stream_id = sid
            if sid is None:
                op.problems.append("status GET without ?stream_id=")
                return self.answer(
                    op, 400, {"err": "invalid_request", "description": "stream_id query required"}
                )
            if self.stream is None or self.stream["stream_id"] != sid:
                return self.answer(op, 404, {"err": "not_found", "description": "no such stream"})
            return self.answer(op, 200, {"stream_id": sid, "status": self.status})
        body = op.body if isinstance(op.body, dict) else {}
        sid = body.get("stream_id")
        op.stream_id = sid if isinstance(sid, str) else None
        if self.profile == "caep-interop":
            return self.answer(op, 405, {"err": "invalid_request", "description": "not in the CAEP profile"})
        if body.get("status") not in ("enabled", "paused", "disabled"):
            op.problems.append("status update without a valid status")
            return self.answer(op, 400, {"err": "invalid_request", "description": "status"})
        if self.stream is None or self.stream["stream_id"] != sid:
            return self.answer(op, 404, {"err": "not_found", "description": "no such stream"})
        if self.status == "disabled" and body["status"] != "disabled":
            return self.answer(
                op, 400, {"err": "invalid_request", "description": "disabled is terminal here"}
            )
        self.status = body["status"]
        out = {"stream_id": sid, "status": self.status}
        if isinstance(body.get("reason"), str):
            out["reason"] = body["reason"]
        return self.answer(op, 200, out)

    async def subjects(self, request: Request) -> Response:
        add = request.url.path.endswith("subjects:add")
        op = await self.record(request, "subject-add" if add else "subject-remove")
        denied = self.authorized(op, "manage")
        if denied:
            return denied
        body = op.body if isinstance(op.body, dict) else {}
        op.stream_id = body.get("stream_id") if isinstance(body.get("stream_id"), str) else None
        try:
            parse_subject(body.get("subject"))
        except Exception:
            op.problems.append("malformed subject")
            return self.answer(op, 400, {"err": "invalid_request", "description": "subject"})
        if self.stream is None or self.stream["stream_id"] != op.stream_id:
            return self.answer(op, 404, {"err": "not_found", "description": "no such stream"})
        if not add:
            for hook in self.on_removed:
                task = asyncio.get_running_loop().create_task(_call(hook, body["subject"]))
                self.before_delete.add(task)
                task.add_done_callback(self.before_delete.discard)
        return self.answer(op, 200 if add else 204)

    async def verify(self, request: Request) -> Response:
        op = await self.record(request, "verify")
        denied = self.authorized(op, "manage")
        if denied:
            return denied
        body = op.body if isinstance(op.body, dict) else {}
        sid = body.get("stream_id")
        op.stream_id = sid if isinstance(sid, str) else None
        if self.stream is None or self.stream["stream_id"] != sid:
            return self.answer(op, 404, {"err": "not_found", "description": "no such stream"})
        state = body.get("state") if isinstance(body.get("state"), str) else None
        if state is not None:
            self.states.append(state)
        for hook in self.on_verify:
            self.spawn(_call(hook, state))
        return self.answer(op, 204)

    # ---- SETs ---------------------------------------------------------------------------
    def sign(
        self, claims: dict[str, Any], key: SigningKey | None = None, header: dict[str, Any] | None = None
    ) -> str:
        from joserfc import jws

        key = key or self.rsa
        h = {"alg": key.alg, "typ": uris.SET_TYP, "kid": key.kid, **(header or {})}
        return jws.serialize_compact(h, json.dumps(claims).encode(), key.key, algorithms=[h["alg"]])

    def access_token(self, claims: dict[str, Any]) -> str:
        """An RFC 9068 access token (``typ`` at+jwt) signed with a key of the kit's JWKS."""
        from joserfc import jws

        now = int(time.time())
        body = {"iss": self.issuer, "iat": now - 5, "exp": now + 600, "jti": uuid.uuid4().hex, **claims}
        h = {"alg": self.rsa.alg, "typ": "at+jwt", "kid": self.rsa.kid}
        return jws.serialize_compact(h, json.dumps(body).encode(), self.rsa.key, algorithms=[h["alg"]])

    def claims(
        self, event_type: str, payload: dict[str, Any], subject: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        sid = self.stream["stream_id"] if self.stream else ""
        sub = subject or ({"format": "opaque", "id": sid} if event_type in SSF_EVENTS else self.subject)
        return {
            "iss": self.issuer,
            "jti": uuid.uuid4().hex,
            "iat": int(time.time()),
            "aud": self.audience,
            "sub_id": sub,
            "events": {event_type: payload},
        }

    def make(
        self,
        event_type: str,
        payload: dict[str, Any],
        kind: str,
        key: SigningKey | None = None,
        subject: dict[str, Any] | None = None,
    ) -> Exchange:
        c = self.claims(event_type, payload, subject)
        ex = Exchange(c["jti"], kind, self.sign(c, key), self.method, event_type=event_type)
        ex.state = payload.get("state") if isinstance(payload.get("state"), str) else None
        return ex

    @property
    def method(self) -> str:
        d = (self.stream or {}).get("delivery") or {}
        return "push" if d.get("method") == uris.PUSH else "poll"

    async def send(
        self,
        ex: Exchange,
        *,
        url: str | None = None,
        authorization: str | bool | None = True,
        content_type: str = uris.SET_MEDIA_TYPE,
        body: bytes | None = None,
        timeout: float = 10.0,
    ) -> Exchange:
        """Deliver one SET (push: POST now; poll: queue, then wait for ack / setErrs)."""
        self.exchanges.append(ex)
        if ex.via == "poll":
            self.queue[ex.jti] = ex
            async with self.cond:
                self.cond.notify_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ex.done.wait(), timeout)
            return ex
        d = (self.stream or {}).get("delivery") or {}
        target = url or d.get("endpoint_url")
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        if authorization is True:
            authorization = d.get("authorization_header")
        if isinstance(authorization, str):
            headers["Authorization"] = authorization
        assert self.http is not None
        try:
            r = await self.http.post(
                str(target),
                content=body if body is not None else ex.compact.encode(),
                headers=headers,
                timeout=timeout,
            )
            ex.status, ex.body = r.status_code, r.content
            ex.headers = {k.lower(): v for k, v in r.headers.items()}
        except httpx.HTTPError as exc:
            ex.status, ex.body = None, str(exc).encode()
        ex.resolve()
        self.touch()
        return ex

    async def poll(self, request: Request) -> Response:
        op = await self.record(request, "poll")
        op.stream_id = op.query.get("stream_id")
        denied = self.authorized(op, "read")
        if denied:
            return denied
        body = op.body if isinstance(op.body, dict) else None
        if body is None and op.raw:
            return self.answer(op, 400, {"err": "invalid_request", "description": "JSON object required"})
        body = body or {}
        if self.stream is None or op.stream_id != self.stream["stream_id"]:
            if op.stream_id not in self.deleted:  # a poll racing its stream's deletion is no fault
                op.problems.append("poll without the endpoint_url's ?stream_id=")
            return self.answer(op, 404, {"err": "not_found", "description": "unknown stream"})
        self.polls.append(body)
        for jti in body.get("ack") or []:
            ex = self.queue.pop(str(jti), None)
            if ex is not None:
                ex.acked = True
                ex.resolve()
        errs = body.get("setErrs") or {}
        if isinstance(errs, dict):
            for jti, err in errs.items():
                ex = self.queue.pop(str(jti), None)
                if ex is not None:
                    ex.set_err = err if isinstance(err, dict) else {"err": str(err)}
                    ex.resolve()
        max_events = body.get("maxEvents", 16)
        max_events = max_events if isinstance(max_events, int) and max_events >= 0 else 16
        if max_events == 0:
            return self.answer(op, 200, {"sets": {}})
        if self.status != "enabled":
            return self.answer(op, 200, {"sets": {}})
        if not self.queue and not body.get("returnImmediately"):
            async with self.cond:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.cond.wait_for(lambda: bool(self.queue)), self.long_poll)
        items = list(self.queue.items())[:max_events]
        out: dict[str, Any] = {"sets": {jti: ex.compact for jti, ex in items}}
        if len(self.queue) > max_events:
            out["moreAvailable"] = True
        return self.answer(op, 200, out)


@functools.cache
def _keys() -> tuple[SigningKey, SigningKey]:
    """The emulator's RS256 and ES256 keys (like the suite's), made once per process."""
    return (
        generate_signing_key("RS256", kid=f"kit-rs-{uuid.uuid4().hex[:6]}"),
        generate_signing_key("ES256", kid=f"kit-ec-{uuid.uuid4().hex[:6]}"),
    )


async def _call(hook: Callable[..., Any], *args: Any) -> None:
    result = hook(*args)
    if asyncio.iscoroutine(result):
        await result
