"""The kit playing the receiver: options, discovery, tokens, streams, triggers, SET intake.

The shared steps of every transmitter module (digest 11.2) live here: fetch the metadata,
check the delivery method is offered, obtain a token, clean up old streams, create a
stream with the suite's body, receive SETs by push (the kit's own endpoint) or by poll.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from conformance.registry import ModuleRun, Severity, SkipModule, StopModule, check
from conformance.tx.setchecks import Received, SETInspector, check_push_request
from conformance.tx.sink import PushSink
from ssf import uris
from ssf.errors import SSFError
from ssf.keys import PublicKeys
from ssf.metadata import well_known_url

F, W, INFO = Severity.FAILURE, Severity.WARNING, Severity.INFO

METADATA_FETCH = check(
    "metadata.fetch", "SSF 7.2.3", F, "metadata answers GET with 200 and an application/json object"
)
DELIVERY_SUPPORTED = check(
    "metadata.delivery-method-offered",
    "SSF 7.1",
    F,
    "the chosen delivery method is in delivery_methods_supported",
)
TOKEN_OBTAINED = check("auth.token", "RFC 6749 4.4", F, "an access token is obtained (client_credentials)")
TOKEN_LIFETIME = check("auth.token-lifetime", "CAEPIOP 2.7.1", W, "access tokens live at most 3600 s")
CLEANUP_READ = check(
    "cleanup.read", "SSF 8.1.1.2", INFO, "clean-up: GET configuration_endpoint answers 200 or 404"
)
CLEANUP_DELETE = check(
    "cleanup.delete", "SSF 8.1.1.5", INFO, "clean-up: DELETE of an old stream answers 204 or 404"
)
TEARDOWN_DELETE = check("teardown.delete", "SSF 8.1.1.5", INFO, "the module's stream is deleted (204)")
STREAM_CREATE = check("stream.create", "SSF 8.1.1.1", F, "stream creation succeeds (201) with a JSON config")

#: The suite's create body events (digest 11.2 step 7).
SUITE_EVENTS = (
    uris.CAEP_BASE + "session-revoked",
    uris.CAEP_BASE + "credential-change",
    uris.CAEP_BASE + "device-compliance-change",
)
INTEROP_EVENTS = frozenset(SUITE_EVENTS)
DESCRIPTION = "Stream for OIDF Conformance Test-Suite"


@dataclass(slots=True)
class TransmitterOptions:
    issuer: str | None = None
    metadata_url: str | None = None
    token: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    token_endpoint: str | None = None
    scope: str = "ssf.read ssf.manage"
    delivery: str = "push"
    profile: str = "default"
    publish_cmd: str | None = None
    publish_url: str | None = None
    publish_token: str | None = None
    publish_client_id: str | None = None
    publish_client_secret: str | None = None
    status_cmd: str | None = None
    rotate_cmd: str | None = None
    push_host: str = "127.0.0.1"
    push_port: int = 0
    push_base_url: str | None = None
    allow_http_loopback: bool = False
    #: How long to wait for a SET after triggering it (the suite waits about 5 s).
    event_timeout: float = 5.0
    #: Quiet time after which "nothing more arrives" is concluded.
    settle: float = 1.0
    #: Client timeout for long polls (above the transmitter's own long-poll timeout).
    long_poll_timeout: float = 35.0
    #: Upper bound on waits the transmitter's own settings ask for (inactivity, verification interval).
    max_wait: float = 60.0
    http_timeout: float = 10.0
    #: How long a running transmitter may take to publish a key after --rotate-cmd.
    key_rotation_wait: float = 30.0
    subject: dict[str, Any] = field(
        default_factory=lambda: {"format": "email", "email": "conformance-user@example.com"}
    )


@dataclass(slots=True)
class Stream:
    config: dict[str, Any]
    key: str | None = None
    authorization: str | None = None
    acked: set[str] = field(default_factory=set)
    cursor: int = 0
    polled: list[Received] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.config.get("stream_id", ""))

    @property
    def poll_url(self) -> str | None:
        d = self.config.get("delivery")
        url = d.get("endpoint_url") if isinstance(d, dict) else None
        return url if isinstance(url, str) else None


def json_of(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except (ValueError, UnicodeDecodeError):
        return None


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


class TransmitterKit:
    """Shared state of one transmitter-plan run."""

    def __init__(self, opts: TransmitterOptions, http: httpx.AsyncClient, sink: PushSink | None) -> None:
        self.opts = opts
        self.http = http
        self.sink = sink
        self.metadata: dict[str, Any] = {}
        self.metadata_url = opts.metadata_url or (well_known_url(opts.issuer) if opts.issuer else "")
        self.expected_issuer = opts.issuer
        self._token: str | None = opts.token
        self._token_expires_in: Any = None
        self._publish_token: str | None = opts.publish_token
        self.inspector: SETInspector | None = None
        self.jwks_doc: Any = None

    @property
    def profile(self) -> str:
        return self.opts.profile

    @property
    def caep(self) -> bool:
        return self.opts.profile == "caep-interop"

    @property
    def method(self) -> str:
        return uris.PUSH if self.opts.delivery == "push" else uris.POLL

    def endpoint(self, name: str) -> str | None:
        v = self.metadata.get(name)
        return v if isinstance(v, str) and v else None

    def need_endpoint(self, name: str) -> str:
        url = self.endpoint(name)
        if url is None:
            raise SkipModule(f"the metadata has no {name}")
        return url

    # ---- shared steps (digest 11.2) -------------------------------------------------
    async def fetch_metadata(self, run: ModuleRun) -> dict[str, Any]:
        resp = await self.http.get(self.metadata_url, headers={"Accept": "application/json"})
        ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
        body = json_of(resp)
        run.expect(
            METADATA_FETCH,
            resp.status_code == 200 and ctype == "application/json" and isinstance(body, dict),
            f"GET {self.metadata_url}: HTTP {resp.status_code}, Content-Type {ctype!r}",
            "200 application/json",
            stop=True,
        )
        assert isinstance(body, dict)
        self.metadata = body
        if self.expected_issuer is None and isinstance(body.get("issuer"), str):
            self.expected_issuer = body["issuer"]
        return body

    async def setup(self, run: ModuleRun, *, cleanup: bool = True) -> None:
        """Metadata, delivery method, token, clean-up (the suite's preamble)."""
        md = await self.fetch_metadata(run)
        methods = md.get("delivery_methods_supported")
        offered = (
            {uris.normalize_delivery_method(m) for m in methods if isinstance(m, str)}
            if isinstance(methods, list)
            else set()
        )
        run.expect(
            DELIVERY_SUPPORTED,
            self.method in offered,
            f"{self.method} is not in delivery_methods_supported {sorted(offered)}",
            f"{self.method} offered",
            stop=True,
        )
        await self.access_token(run)
        await self.load_keys()
        if cleanup:
            await self.cleanup(run)

    async def load_keys(self) -> None:
        issuer = self.expected_issuer or str(self.metadata.get("issuer", ""))
        if self.inspector is None:
            self.inspector = SETInspector(issuer, self.profile)
        jwks_uri = self.endpoint("jwks_uri")
        if jwks_uri is None:
            self.inspector.keys_error = "the metadata has no jwks_uri"
            return
        try:
            resp = await self.http.get(jwks_uri)
            self.jwks_doc = json_of(resp)
            self.inspector.keys = PublicKeys.from_jwks(self.jwks_doc)
            self.inspector.keys_error = None
        except (httpx.HTTPError, SSFError) as exc:
            self.inspector.keys = None
            self.inspector.keys_error = getattr(exc, "description", None) or str(exc)

    async def _client_credentials(
        self, client_id: str, secret: str, scope: str
    ) -> tuple[httpx.Response | None, str]:
        endpoint = self.opts.token_endpoint or await self._discover_token_endpoint()
        if endpoint is None:
            return None, "no token endpoint (give --token-endpoint)"
        data = {"grant_type": "client_credentials", "scope": scope}
        resp = await self.http.post(endpoint, data=data, auth=(client_id, secret))
        if resp.status_code in (400, 401):
            resp = await self.http.post(
                endpoint, data={**data, "client_id": client_id, "client_secret": secret}
            )
        return resp, endpoint

    async def _discover_token_endpoint(self) -> str | None:
        issuer = self.expected_issuer or str(self.metadata.get("issuer", ""))
        if not issuer:
            return None
        parts = urlsplit(issuer)
        candidates = [
            well_known_url(issuer, "oauth-authorization-server"),
            f"{parts.scheme}://{parts.netloc}/.well-known/oauth-authorization-server",
        ]
        for url in dict.fromkeys(candidates):
            try:
                resp = await self.http.get(url)
            except httpx.HTTPError:
                continue
            body = json_of(resp)
            if (
                resp.status_code == 200
                and isinstance(body, dict)
                and isinstance(body.get("token_endpoint"), str)
            ):
                return str(body["token_endpoint"])
        return None

    async def access_token(self, run: ModuleRun | None = None) -> str:
        if self._token is not None:
            return self._token
        if not (self.opts.client_id and self.opts.client_secret):
            raise StopModule("no access token: give --token or --client-id/--client-secret")
        resp, where = await self._client_credentials(
            self.opts.client_id, self.opts.client_secret, self.opts.scope
        )
        body = json_of(resp) if resp is not None else None
        ok = (
            resp is not None and resp.status_code == 200 and isinstance(body, dict) and "access_token" in body
        )
        if run is not None:
            run.expect(
                TOKEN_OBTAINED,
                ok,
                f"token request to {where}: "
                + (f"HTTP {resp.status_code}" if resp is not None else "unavailable"),
                "token obtained",
                stop=True,
            )
        if not ok:
            raise StopModule("no access token")
        assert isinstance(body, dict)
        self._token = str(body["access_token"])
        self._token_expires_in = body.get("expires_in")
        if run is not None:
            exp = self._token_expires_in
            run.expect(
                TOKEN_LIFETIME,
                isinstance(exp, int | float) and 0 < exp <= 3600,
                f"expires_in is {exp!r}",
                f"expires_in {exp}",
            )
        return self._token

    async def publish_bearer(self) -> str | None:
        if self._publish_token is not None:
            return self._publish_token
        if self.opts.publish_client_id and self.opts.publish_client_secret:
            resp, _ = await self._client_credentials(
                self.opts.publish_client_id, self.opts.publish_client_secret, "ssf.publish"
            )
            body = json_of(resp) if resp is not None else None
            if resp is not None and resp.status_code == 200 and isinstance(body, dict):
                self._publish_token = str(body.get("access_token"))
        return self._publish_token

    def headers(self, token: str | None = None, *, auth: bool = True) -> dict[str, str]:
        h = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            h["Authorization"] = f"Bearer {token if token is not None else self._token}"
        return h

    async def call(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
        token: str | None = None,
        auth: bool = True,
    ) -> httpx.Response:
        """A management call with the suite's headers (JSON content type even on GET/DELETE)."""
        if content is None and body is not None:
            content = json.dumps(body).encode()
        return await self.http.request(
            method, url, content=content, params=params, headers=self.headers(token, auth=auth)
        )

    async def cleanup(self, run: ModuleRun) -> None:
        url = self.endpoint("configuration_endpoint")
        if url is None:
            return
        resp = await self.call("GET", url)
        run.expect_status(CLEANUP_READ, resp.status_code, (200, 404), "GET streams")
        body = json_of(resp)
        if isinstance(body, list):
            for s in body:
                sid = s.get("stream_id") if isinstance(s, dict) else None
                if isinstance(sid, str):
                    d = await self.call("DELETE", url, params={"stream_id": sid})
                    run.expect_status(CLEANUP_DELETE, d.status_code, (204, 404), "DELETE old stream")

    # ---- streams ---------------------------------------------------------------------
    def create_body(self, *, push_auth: bool = True) -> tuple[dict[str, Any], str | None, str | None]:
        """The suite's create body; returns (body, push key, authorization header)."""
        body: dict[str, Any] = {"description": DESCRIPTION, "events_requested": list(SUITE_EVENTS)}
        if self.opts.delivery == "push":
            assert self.sink is not None
            key = uuid.uuid4().hex
            authz = f"Bearer push_token_{uuid.uuid4().hex}" if push_auth else None
            delivery: dict[str, Any] = {"method": uris.PUSH, "endpoint_url": self.push_url(key)}
            if authz is not None:
                delivery["authorization_header"] = authz
            body["delivery"] = delivery
            return body, key, authz
        body["delivery"] = {"method": uris.POLL}
        return body, None, None

    def push_url(self, key: str) -> str:
        assert self.sink is not None
        base = (self.opts.push_base_url or self.sink.base_url).rstrip("/")
        return f"{base}/push/{key}"

    async def create_stream(
        self, run: ModuleRun, *, push_auth: bool = True, stop: bool = True, body: dict[str, Any] | None = None
    ) -> tuple[httpx.Response, Stream | None]:
        url = self.need_endpoint("configuration_endpoint")
        req, key, authz = self.create_body(push_auth=push_auth)
        if body is not None:
            req = body
        resp = await self.call("POST", url, body=req)
        cfg = json_of(resp)
        ok = (
            resp.status_code in (200, 201) and isinstance(cfg, dict) and isinstance(cfg.get("stream_id"), str)
        )
        run.expect(STREAM_CREATE, ok, f"create: HTTP {resp.status_code}", "stream created", stop=stop)
        if not ok:
            return resp, None
        assert isinstance(cfg, dict)
        return resp, Stream(cfg, key, authz)

    async def delete_stream(self, run: ModuleRun | None, stream: Stream | None) -> None:
        url = self.endpoint("configuration_endpoint")
        if stream is None or url is None:
            return
        try:
            resp = await self.call("DELETE", url, params={"stream_id": stream.id})
        except httpx.HTTPError:
            return
        if run is not None:
            run.expect_status(TEARDOWN_DELETE, resp.status_code, (204,), "DELETE stream")

    async def set_status(self, stream: Stream, status: str, reason: str = "conformance") -> httpx.Response:
        url = self.need_endpoint("status_endpoint")
        return await self.call(
            "POST",
            url,
            body={"stream_id": stream.id, "status": status, "reason": reason},
            params={"stream_id": stream.id},
        )

    async def get_status(self, stream: Stream) -> httpx.Response:
        return await self.call("GET", self.need_endpoint("status_endpoint"), params={"stream_id": stream.id})

    async def verify(self, stream: Stream, state: str | None) -> httpx.Response:
        url = self.need_endpoint("verification_endpoint")
        body: dict[str, Any] = {"stream_id": stream.id}
        if state is not None:
            body["state"] = state
        return await self.call("POST", url, body=body)

    async def add_subject(
        self, stream: Stream, subject: dict[str, Any], verified: bool = True
    ) -> httpx.Response:
        url = self.need_endpoint("add_subject_endpoint")
        return await self.call(
            "POST", url, body={"stream_id": stream.id, "subject": subject, "verified": verified}
        )

    async def remove_subject(self, stream: Stream, subject: dict[str, Any]) -> httpx.Response:
        url = self.need_endpoint("remove_subject_endpoint")
        return await self.call("POST", url, body={"stream_id": stream.id, "subject": subject})

    async def ensure_subject(self, stream: Stream, subject: dict[str, Any]) -> None:
        """Make events for ``subject`` flow: add it unless the transmitter includes all subjects."""
        if self.metadata.get("default_subjects") == "ALL" or self.endpoint("add_subject_endpoint") is None:
            return
        await self.add_subject(stream, subject)

    # ---- triggering events -------------------------------------------------------------
    @property
    def can_publish(self) -> bool:
        o = self.opts
        return bool(o.publish_cmd or o.publish_token or (o.publish_client_id and o.publish_client_secret))

    def publish_endpoint(self) -> str:
        if self.opts.publish_url:
            return self.opts.publish_url
        issuer = self.expected_issuer or str(self.metadata.get("issuer", ""))
        return issuer.rstrip("/") + "/events"

    async def publish(
        self,
        stream: Stream | None,
        event_type: str,
        payload: dict[str, Any],
        *,
        subject: dict[str, Any] | None = None,
        txn: str | None = None,
    ) -> bool:
        """Make the transmitter emit one event (command or ``POST /events``)."""
        subject = subject or self.opts.subject
        if self.opts.publish_cmd:
            values = {
                "event_type": event_type,
                "subject": json.dumps(subject),
                "payload": json.dumps(payload),
                "stream_id": stream.id if stream else "",
                "txn": txn or "",
            }
            cmd = self.opts.publish_cmd.format(**{k: shlex.quote(v) for k, v in values.items()})
            env = {**os.environ, **{f"SSF_{k.upper()}": v for k, v in values.items()}}
            proc = await asyncio.create_subprocess_shell(
                cmd, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
            )
            return await proc.wait() == 0
        token = await self.publish_bearer()
        if token is None:
            return False
        body: dict[str, Any] = {"subject": subject, "events": {event_type: payload}}
        if txn is not None:
            body["txn"] = txn
        resp = await self.http.post(
            self.publish_endpoint(), json=body, headers={"Authorization": f"Bearer {token}"}
        )
        return 200 <= resp.status_code < 300

    async def run_cmd(self, template: str | None, **values: str) -> bool:
        if not template:
            return False
        cmd = template.format(**{k: shlex.quote(v) for k, v in values.items()})
        proc = await asyncio.create_subprocess_shell(
            cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        return await proc.wait() == 0

    # ---- receiving SETs ------------------------------------------------------------------
    async def poll(
        self, stream: Stream, body: dict[str, Any], *, timeout: float | None = None
    ) -> httpx.Response:
        url = stream.poll_url
        if url is None:
            raise StopModule("the poll stream has no delivery.endpoint_url")
        return await self.http.post(
            url,
            content=json.dumps(body).encode(),
            headers=self.headers(),
            timeout=timeout or self.opts.http_timeout,
        )

    async def receive(
        self,
        run: ModuleRun,
        stream: Stream,
        until: Callable[[list[Received]], bool],
        *,
        timeout: float | None = None,
        ack: bool = True,
    ) -> list[Received]:
        """SETs that arrive for ``stream`` from now on, until ``until`` holds or the time is up."""
        timeout = self.opts.event_timeout if timeout is None else timeout
        if self.opts.delivery == "push":
            assert self.sink is not None and stream.key is not None
            start = stream.cursor
            recs = await self.sink.wait(stream.key, lambda rs: until(rs[start:]), timeout)
            new = recs[start:]
            stream.cursor = len(recs)
            for rec in new:
                check_push_request(run, rec, stream.authorization)
            return new
        got: list[Received] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pending_ack: list[str] = []
        while True:
            body: dict[str, Any] = {"returnImmediately": True, "maxEvents": 10}
            if ack and pending_ack:
                body["ack"] = pending_ack
            resp = await self.poll(stream, body)
            data = json_of(resp)
            if resp.status_code == 200 and isinstance(data, dict) and isinstance(data.get("sets"), dict):
                if ack:
                    stream.acked.update(pending_ack)
                pending_ack = []
                for jti, compact in data["sets"].items():
                    if not isinstance(compact, str):
                        continue
                    if jti in stream.acked:
                        continue
                    rec = Received(compact=compact, via="poll")
                    rec.decode()
                    got.append(rec)
                    pending_ack.append(str(jti))
            if until(got) or loop.time() >= deadline:
                break
            await asyncio.sleep(0.2)
        if ack and pending_ack:
            resp = await self.poll(stream, {"returnImmediately": True, "maxEvents": 0, "ack": pending_ack})
            if resp.status_code == 200:
                stream.acked.update(pending_ack)
        stream.polled.extend(got)
        return got

    def inspect(self, run: ModuleRun, stream: Stream, recs: list[Received]) -> None:
        assert self.inspector is not None
        for rec in recs:
            self.inspector.inspect(
                run,
                rec,
                stream_id=stream.id,
                stream_aud=stream.config.get("aud"),
                stream_iss=stream.config.get("iss") if isinstance(stream.config.get("iss"), str) else None,
            )


def fresh_state() -> str:
    return str(uuid.uuid4())


def now() -> float:
    return time.time()
