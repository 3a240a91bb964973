"""A small, correct SSF receiver for the kit's own tests, with switchable faults.

It discovers the kit's issuer, gets a token, creates a push (or poll) stream, reads,
updates, replaces it, updates its status, requests verification, validates every SET
with the ``ssf`` core, and deletes the stream when told to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ssf import uris
from ssf.errors import InvalidRequest, InvalidState, SETError
from ssf.keys import PublicKeys
from ssf.metadata import well_known_url
from ssf.set import SETVerifier, UnknownKeyID, decode_unverified

PUSH_SECRET = "Bearer fixture-receiver-push-secret"
EVENTS = [
    uris.CAEP_BASE + "session-revoked",
    uris.CAEP_BASE + "credential-change",
    uris.CAEP_BASE + "device-compliance-change",
    uris.RISC_BASE + "account-disabled",
    uris.RISC_BASE + "identifier-changed",
]
#: The subject the fixture removes from its stream once verified (SSF 8.1.3.3).
REMOVED = {"format": "email", "email": "removed-user@example.com"}
#: Complex-subject members the fixture can process (SSF 3.6).
UNDERSTOOD = {"user", "session", "device", "tenant"}


class FixtureReceiver:
    def __init__(self) -> None:
        self.app = Starlette(
            routes=[
                Route("/push", self.push, methods=["POST"]),
                Route("/protected", self.protected, methods=["GET"]),
            ]
        )
        self.base_url = ""
        #: The CA the fixture trusts for https issuers (the kit's throwaway CA).
        self.ca_file: str | None = None
        self.lock = threading.Lock()
        self.reset()

    def reset(
        self, faults: Iterable[str] = (), *, delivery: str = "push", events: list[str] | None = None
    ) -> None:
        self.faults = set(faults)
        self.delivery = delivery
        self.events = list(events or EVENTS)
        self.issuer = ""
        self.stream: dict[str, Any] = {}
        self.verifier: SETVerifier | None = None
        self.jwks_uri = ""
        self.seen: dict[str, str] = {}
        self.states: set[str] = set()
        self.token = ""
        self.errors: list[str] = []
        self.task: asyncio.Task[None] | None = None
        self.poller: asyncio.Task[None] | None = None
        self.verified = asyncio.Event()
        self.pending_acks: list[str] = []
        self.pending_errs: dict[str, dict[str, str]] = {}
        self.md: dict[str, Any] = {}
        self.removed: list[dict[str, Any]] = []
        #: email -> time of the latest session-revoked applied for it
        self.revoked: dict[str, float] = {}

    def has(self, fault: str) -> bool:
        return fault in self.faults

    def verify(self) -> ssl.SSLContext | bool:
        """What the fixture trusts on https: the kit's CA, checked as the faults allow."""
        if self.has("tls-no-verify"):
            return False
        ca = self.ca_file if self.ca_file and os.path.exists(self.ca_file) else None
        ctx = ssl.create_default_context(cafile=ca)
        if self.has("tls-no-hostname-check"):
            ctx.check_hostname = False
        return ctx

    def client(self, timeout: float = 10) -> httpx.AsyncClient:
        return httpx.AsyncClient(trust_env=False, timeout=timeout, verify=self.verify())

    # ---- the client side: runs in the kit's event loop -------------------------------------
    async def start(self, issuer: str) -> None:
        self.reset(self.faults, delivery=self.delivery, events=self.events)
        self.issuer = issuer
        self.task = asyncio.get_running_loop().create_task(self._flow())

    async def stop(self, issuer: str) -> None:
        """Stop everything the fixture runs (the kit starts it again at another issuer)."""
        for task in (self.task, self.poller):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self.task = self.poller = None

    async def finish(self, issuer: str) -> None:
        if self.task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, 10)
        if self.poller is not None:
            self.poller.cancel()
            with contextlib.suppress(BaseException):
                await self.poller
        if not self.stream or self.has("no-delete"):
            return
        async with self.client() as c:
            url = self.md["configuration_endpoint"]
            if self.has("delete-in-body"):
                await c.request(
                    "DELETE", url, json={"stream_id": self.stream["stream_id"]}, headers=self.auth()
                )
            else:
                await c.delete(url, params={"stream_id": self.stream["stream_id"]}, headers=self.auth())

    async def configure_out_of_band(self, issuer: str, audience: str) -> None:
        """A stream set up by an operator: trust ``issuer``'s keys for ``audience``."""
        self.issuer = issuer
        async with self.client() as c:
            md = (await c.get(well_known_url(issuer))).json()
            self.jwks_uri = md["jwks_uri"]
            keys = PublicKeys.from_jwks((await c.get(self.jwks_uri)).json())
        self.verifier = SETVerifier(issuer=issuer, keys=keys, audience=audience)

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def _flow(self) -> None:
        try:
            async with self.client() as c:
                await self._run(c)
        except Exception as exc:  # the test inspects what the kit recorded
            self.errors.append(f"{type(exc).__name__}: {exc}")

    async def _run(self, c: httpx.AsyncClient) -> None:
        url = well_known_url(self.issuer)
        if self.has("discovery-post"):
            r = await c.post(url)
        elif self.has("no-path-insertion"):
            base = self.issuer.split("/kit")[0]
            r = await c.get(base + "/.well-known/ssf-configuration")
        else:
            r = await c.get(url)
        if r.status_code != 200:
            raise RuntimeError(f"discovery: {r.status_code}")
        self.md = md = r.json()
        keys = PublicKeys.from_jwks((await c.get(md["jwks_uri"])).json())
        self.jwks_uri = md["jwks_uri"]
        form = {"grant_type": "client_credentials"}
        if not self.has("no-scope"):
            form["scope"] = "ssf.read ssf.manage"
        r = await c.post(self.issuer + "/token", data=form, auth=("kit-receiver", "kit-receiver-secret"))
        if r.status_code != 200:
            raise RuntimeError(f"token: {r.status_code}")
        self.token = r.json()["access_token"]
        cfg_url = md["configuration_endpoint"]
        events = [u for u in self.events if "/caep/" not in u] if self.has("caep-no-interop") else self.events
        body: dict[str, Any] = {"description": "fixture receiver", "events_requested": events}
        if self.delivery == "push":
            body["delivery"] = {
                "method": uris.PUSH,
                "endpoint_url": self.base_url + "/push",
                "authorization_header": PUSH_SECRET,
            }
        else:
            body["delivery"] = {"method": uris.POLL}
        if self.has("transmitter-supplied"):
            body["iss"] = self.issuer
        # SETs may arrive before the create response is read: trust the issuer's keys now
        self.verifier = SETVerifier(issuer=self.issuer, keys=keys)
        r = await c.post(cfg_url, json=body, headers=self.auth())
        if r.status_code != 201:
            raise RuntimeError(f"create: {r.status_code}")
        self.stream = r.json()
        sid = self.stream["stream_id"]
        if self.stream["iss"] != self.issuer and not self.has("ignore-stream-iss"):
            raise RuntimeError("iss mismatch")
        self.verifier = SETVerifier(issuer=self.issuer, keys=keys, audience=self.stream["aud"])
        if self.delivery == "poll":
            self.poller = asyncio.get_running_loop().create_task(self._poll_loop())
        if not self.has("no-read"):
            headers = {} if self.has("no-bearer-on-read") else self.auth()
            await c.get(cfg_url, params={"stream_id": sid}, headers=headers)
        if not self.has("no-update"):
            patch: dict[str, Any] = {"stream_id": sid, "description": "patched"}
            if self.has("patch-with-iss"):
                patch["iss"] = self.issuer
            await c.patch(cfg_url, json=patch, headers=self.auth())
        if not self.has("no-replace"):
            put = {k: v for k, v in body.items() if k != "iss"}
            put["stream_id"] = sid
            await c.put(cfg_url, json=put, headers=self.auth())
        if not self.has("no-status-read"):
            await c.get(md["status_endpoint"], params={"stream_id": sid}, headers=self.auth())
        if not self.has("no-status"):
            await c.post(
                md["status_endpoint"], json={"stream_id": sid, "status": "enabled"}, headers=self.auth()
            )
        if not self.has("no-verify"):
            state = uuid.uuid4().hex
            self.states.add(state)
            await c.post(
                md["verification_endpoint"], json={"stream_id": sid, "state": state}, headers=self.auth()
            )
        if md.get("remove_subject_endpoint"):
            self.removed.append(REMOVED)
            await c.post(
                md["remove_subject_endpoint"],
                json={"stream_id": sid, "subject": REMOVED},
                headers=self.auth(),
            )

    async def _poll_loop(self) -> None:
        url = self.stream["delivery"]["endpoint_url"]
        if self.has("poll-drop-query"):
            url = url.split("?")[0]
        async with self.client(30) as c:
            while True:
                body: dict[str, Any] = {"maxEvents": 50}
                if self.pending_acks and not self.has("poll-no-ack"):
                    body["ack"], self.pending_acks = self.pending_acks, []
                if self.pending_errs:
                    body["setErrs"], self.pending_errs = self.pending_errs, {}
                try:
                    r = await c.post(url, json=body, headers=self.auth())
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
                    continue
                if r.status_code != 200:
                    await asyncio.sleep(0.1)
                    continue
                for jti, compact in r.json().get("sets", {}).items():
                    status, err = await asyncio.get_running_loop().run_in_executor(
                        None, self.judge, compact.encode(), uris.SET_MEDIA_TYPE
                    )
                    if status == 202:
                        self.pending_acks.append(jti)
                    else:
                        self.pending_errs[jti] = err or {"err": "invalid_request", "description": "?"}

    # ---- the push endpoint (RFC 8935) -----------------------------------------------------------
    async def push(self, request: Request) -> Response:
        lax = self.has("no-auth-check") or self.has("accept-all")
        if request.headers.get("authorization") != PUSH_SECRET and not lax:
            return JSONResponse(
                {"err": "authentication_failed", "description": "bad credential"}, status_code=401
            )
        body = await request.body()
        status, err = self.judge(body, request.headers.get("content-type", ""))
        if status == 202:
            if self.has("push-200"):
                return Response(status_code=200)
            if self.has("push-body"):
                return JSONResponse({"ok": True}, status_code=202)
            return Response(status_code=202)
        assert err is not None
        if self.has("error-text-plain"):
            return Response(err["err"], status_code=status, media_type="text/plain")
        return JSONResponse(err, status_code=status)

    def judge(self, body: bytes, content_type: str) -> tuple[int, dict[str, str] | None]:
        """Validate one SET: (202, None) or (4xx, RFC 8935 error object)."""
        if self.has("accept-all"):
            return 202, None
        if self.has("reject-all"):
            return 400, {"err": "invalid_request", "description": "everything is refused"}
        try:
            return self._judge(body, content_type)
        except SETError as exc:
            err = exc.to_body()
            if self.has("err-always-invalid-request"):
                err["err"] = "invalid_request"
            return 400, err

    def _judge(self, body: bytes, content_type: str) -> tuple[int, dict[str, str] | None]:
        if content_type.split(";")[0].strip() != uris.SET_MEDIA_TYPE:
            raise InvalidRequest("Content-Type must be application/secevent+jwt")
        if len(body) > 65536:
            return 413, {"err": "invalid_request", "description": "too large"}
        _, claims = decode_unverified(body)
        jti = claims.get("jti")
        text = body.decode()
        with self.lock:
            if isinstance(jti, str) and jti in self.seen:
                if self.seen[jti] == text:
                    if self.has("resend-refused"):
                        raise InvalidRequest("already received")
                    return 202, None
                if self.seen[jti] != text and not self.has("replay-accepted"):
                    raise InvalidRequest("a different SET reuses a seen jti")
            if self.has("record-before-validate") and isinstance(jti, str):
                self.seen[jti] = text
        if self.verifier is None:
            raise InvalidRequest("no stream is configured")
        try:
            token = self.verifier.verify(body)
        except UnknownKeyID:
            with httpx.Client(trust_env=False, timeout=5, verify=self.verify()) as c:
                self.verifier.keys = PublicKeys.from_jwks(c.get(self.jwks_uri).json())
            token = self.verifier.verify(body)
        if token.event_type == uris.VERIFICATION:
            state = token.event.payload().get("state")
            if state is None and self.has("reject-unsolicited"):
                raise InvalidRequest("unsolicited verification refused")
            if state is not None and state not in self.states and not self.has("no-state-check"):
                raise InvalidState("unknown verification state")
        if token.event_type.startswith(uris.RISC_BASE) and self.has("reject-risc"):
            raise InvalidRequest("RISC events are not handled")
        sub_id = claims.get("sub_id")
        if sub_id in self.removed and self.has("refuse-removed"):
            raise InvalidRequest("events for a removed subject are refused")
        with self.lock:
            self.seen[token.jti] = text
        if token.event_type == uris.CAEP_BASE + "session-revoked" and isinstance(sub_id, dict):
            self._revoke(sub_id, token.event.payload().get("event_timestamp"))
        return 202, None

    def _revoke(self, sub_id: dict[str, Any], at: object) -> None:
        """Apply a session-revoked on a user (simple email, or complex with an email user)."""
        critical = set(self.md.get("critical_subject_members") or [])
        if sub_id.get("format") == "complex" and (set(sub_id) & critical) - UNDERSTOOD:
            if not self.has("act-on-critical"):
                return  # SSF 3.6: an unprocessable critical member: discard the event
        user = sub_id.get("user") if sub_id.get("format") == "complex" else sub_id
        if isinstance(user, dict) and user.get("format") == "email" and isinstance(user.get("email"), str):
            when = float(at) if isinstance(at, int | float) else time.time()
            self.revoked[user["email"]] = max(when, self.revoked.get(user["email"], 0.0))

    # ---- a protected resource: what the fixture enforces ------------------------------------------
    async def protected(self, request: Request) -> Response:
        """RFC 9068 access tokens from the issuer's JWKS; refused once their user is revoked."""
        from joserfc import jws
        from joserfc.errors import JoseError

        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        keys = self.verifier.keys if self.verifier is not None else None
        try:
            obj = jws.extract_compact(token.encode())
            header = obj.protected
            key = keys.find(header.get("kid"), str(header.get("alg"))) if keys is not None else None
            if key is None or header.get("typ") != "at+jwt":
                raise ValueError("unknown key or typ")
            claims = json.loads(jws.deserialize_compact(token, key, algorithms=[header["alg"]]).payload)
        except (ValueError, JoseError):
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        if claims.get("iss") != self.issuer or claims.get("exp", 0) < time.time():
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        cutoff = self.revoked.get(claims.get("email"))
        if cutoff is not None and claims.get("iat", 0) <= cutoff:
            return JSONResponse({"error": "invalid_token", "error_description": "revoked"}, status_code=401)
        return JSONResponse({"sub": claims.get("sub")})
