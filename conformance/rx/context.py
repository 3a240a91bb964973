"""The receiver plan's session: serve the emulated transmitter, let the receiver act, drive
the scripted deliveries (unsolicited verification, solicited verification, one example of
every delivered event type, the bad-SET corpus), then hand the record to the modules."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from conformance.rx.emulator import Emulator, Exchange, Op
from conformance.rx.tlsfront import Certificates, Pair, TLSFront, make_certificates, tls_front
from conformance.tx.sink import serve_app
from conformance.tx.suite_verification import event_payload
from ssf import uris
from ssf.events import SSF_EVENTS

__all__ = ["ReceiverKit", "ReceiverOptions"]

Hook = Callable[[str], Awaitable[None]]


@dataclass(slots=True)
class ReceiverOptions:
    #: Push the bad-SET corpus straight at this URL (no stream needs to be created).
    push_url: str | None = None
    push_auth: str | None = None
    audience: str = "https://receiver.example.com"
    delivery: str = "push"
    profile: str = "default"
    host: str = "127.0.0.1"
    port: int = 0
    path: str = "/kit"
    client_id: str = "kit-receiver"
    client_secret: str = "kit-receiver-secret"
    static_token: str | None = None
    #: Upper bound on the whole session (waiting for the receiver to act).
    wait: float = 60.0
    #: Quiet time that ends a phase (no new request from the receiver).
    idle: float = 5.0
    push_delay: float = 0.2
    long_poll: float = 10.0
    event_timeout: float = 10.0
    corpus: bool = True
    corpus_event: str = uris.CAEP_BASE + "session-revoked"
    subject: dict[str, Any] = field(
        default_factory=lambda: {"format": "email", "email": "conformance-user@example.com"}
    )
    #: Shell commands run at phases; ``{issuer}`` and ``{stream_id}`` are filled in.
    start_cmd: str | None = None
    finish_cmd: str | None = None
    #: Stops the receiver after a session; with a start command it lets the kit run probe
    #: sessions (the receiver started again at another issuer: wrong ``iss``, bad TLS).
    stop_cmd: str | None = None
    #: The same as Python callables (tests); each gets the issuer URL.
    start_hook: Hook | None = None
    finish_hook: Hook | None = None
    stop_hook: Hook | None = None
    announce: Callable[[str], None] | None = None
    #: A resource the receiver protects: the kit GETs it with access tokens it mints (RFC 9068,
    #: ``iss`` = the kit's issuer, keys in its JWKS, ``aud`` = ``probe_audience``) to see what
    #: the receiver enforces.
    probe_url: str | None = None
    probe_audience: str = "https://resource.example.com"
    #: Where the kit writes its throwaway CA certificate (PEM) for the receiver to trust
    #: (``{ca_file}`` in commands); a temporary file when unset.
    ca_file: str | None = None
    #: Seconds a probe session is watched after the receiver's first contact.
    probe_window: float = 3.0


#: A complex-subject member the kit declares critical and no receiver can process.
CRITICAL_MEMBER = "kit_unprocessable_member"
#: The ``iss`` the kit puts in stream configurations in the wrong-iss probe session.
IMPOSTOR_ISS = "https://impostor.example.com/kit"


@dataclass(slots=True)
class ProbeSession:
    """The receiver started again at a second issuer of the kit, and what it did there."""

    issuer: str
    ops: list[Op]
    contacted: bool
    front: TLSFront | None = None

    def requests(self) -> list[str]:
        return [f"{o.method} {o.path}" for o in self.ops]


@dataclass(slots=True)
class CriticalProbe:
    """A SET naming an unprocessable critical member, then the same without it (control)."""

    user: str
    baseline: int | None = None
    critical: Exchange | None = None
    after_critical: int | None = None
    control: Exchange | None = None
    after_control: int | None = None


class ReceiverKit:
    """State shared by the receiver modules: the emulator and what the session recorded."""

    def __init__(self, opts: ReceiverOptions, http: httpx.AsyncClient) -> None:
        self.opts = opts
        self.http = http
        self.em = Emulator(
            path=opts.path,
            profile=opts.profile,
            audience=opts.audience,
            client_id=opts.client_id,
            client_secret=opts.client_secret,
            static_token=opts.static_token,
            subject=opts.subject,
            long_poll=opts.long_poll,
            push_delay=opts.push_delay,
        )
        self.em.http = http
        self.em.critical = [CRITICAL_MEMBER]
        self.em.on_verify.append(self._verification)
        self.em.on_removed.append(self._after_removal)
        #: Names of the modules that will judge the session (None: all).
        self.wanted: set[str] | None = None
        self.critical: CriticalProbe | None = None
        self.removed: list[Exchange] = []
        self.iss_probe: ProbeSession | None = None
        self.tls_probes: dict[str, ProbeSession] = {}
        self.ca_file = opts.ca_file
        self.certs: Certificates | None = None
        self.corpus: list[Any] = []
        self.created_id: str | None = None
        self.notes: list[str] = []
        self.events_sent = False

    @property
    def profile(self) -> str:
        return self.opts.profile

    # ---- recorded facts ---------------------------------------------------------------------
    def ops(self, kind: str, stream_id: str | None = None) -> list[Op]:
        return [o for o in self.em.ops if o.kind == kind and (stream_id is None or o.stream_id == stream_id)]

    def succeeded(self, kind: str, stream_id: str | None = None) -> list[Op]:
        return [o for o in self.ops(kind, stream_id) if 200 <= o.status < 300]

    def exchanges(self, kind: str) -> list[Exchange]:
        return [e for e in self.em.exchanges if e.kind == kind]

    # ---- the session -------------------------------------------------------------------------
    async def _verification(self, state: str | None) -> None:
        await asyncio.sleep(self.opts.push_delay)
        ex = self.em.make(uris.VERIFICATION, {"state": state} if state else {}, "verification")
        await self.em.send(ex, timeout=self.opts.event_timeout)

    async def _quiet(self, until: Callable[[], bool], limit: float) -> bool:
        """Wait until ``until()`` holds, or the receiver has been quiet for ``idle`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while not until():
            left = deadline - loop.time()
            if left <= 0:
                return False
            self.em.changed.clear()
            try:
                await asyncio.wait_for(self.em.changed.wait(), min(left, self.opts.idle))
            except TimeoutError:
                return until()
        return True

    def wants(self, module_name: str) -> bool:
        return self.wanted is None or module_name in self.wanted

    @property
    def can_restart(self) -> bool:
        o = self.opts
        return bool(o.start_cmd or o.start_hook) and bool(o.stop_cmd or o.stop_hook)

    async def _run_cmd(self, template: str | None, hook: Hook | None, issuer: str | None = None) -> None:
        issuer = issuer or self.em.issuer
        values = {"issuer": issuer, "stream_id": self.created_id or "", "ca_file": self.ca_file or ""}
        if hook is not None:
            await hook(issuer)
        if template:
            cmd = template.format(**{k: shlex.quote(v) for k, v in values.items()})
            proc = await asyncio.create_subprocess_shell(cmd)
            await proc.wait()

    async def session(self) -> None:
        """Let the receiver create, verify and delete its stream while the kit delivers."""
        if self.opts.announce:
            self.opts.announce(self.em.issuer)
        started = time.monotonic()
        made_ca = False
        if self.can_restart and self.wants("kit-receiver-tls"):
            # made before the first start, so a start command can point at {ca_file}
            self.certs = make_certificates(self.opts.host)
            if self.ca_file is None:
                fd, path = tempfile.mkstemp(prefix="ssf-kit-ca-", suffix=".pem")
                os.close(fd)
                self.ca_file, made_ca = path, True
            Path(self.ca_file).write_bytes(self.certs.ca)
        try:
            await self._main_session()
        finally:
            if made_ca and self.ca_file:
                with contextlib.suppress(OSError):
                    os.unlink(self.ca_file)
        self.notes.append(f"session took {time.monotonic() - started:.1f}s")

    async def _main_session(self) -> None:
        await self._run_cmd(self.opts.start_cmd, self.opts.start_hook)
        created = await self._await_create()
        if created:
            self.created_id = self.succeeded("create")[0].stream_id
            await asyncio.sleep(self.opts.push_delay)
            await self.em.send(
                self.em.make(uris.VERIFICATION, {}, "unsolicited"), timeout=self.opts.event_timeout
            )
            # the receiver verifies (any time after create); the verification hook answers it
            verified = await self._quiet(
                lambda: any(e.accepted and e.state for e in self.exchanges("verification")), self.opts.wait
            )
            if verified:
                await self._events()
                if self.opts.probe_url and self.wants("kit-receiver-critical-subject-members"):
                    self.critical = await self._critical()
        if self.opts.corpus and (created or self.opts.push_url):
            from conformance.rx.corpus import run_corpus

            self.corpus = await run_corpus(self)
        if created:
            await self._run_cmd(self.opts.finish_cmd, self.opts.finish_hook)
            await self._quiet(lambda: bool(self.succeeded("delete")), max(self.opts.idle, 0.1))
        await self._run_cmd(self.opts.stop_cmd, self.opts.stop_hook)
        if self.can_restart:
            await self._probe_sessions()

    async def _await_create(self) -> bool:
        """Up to ``wait`` for a first contact; once the receiver talks, until it goes quiet."""
        deadline = time.monotonic() + self.opts.wait
        while not self.succeeded("create"):
            if not self.em.ops:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.em.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.em.changed.wait(), left)
                continue
            if not await self._quiet(lambda: bool(self.succeeded("create")), self.opts.wait):
                return False
        return True

    async def _events(self) -> None:
        """One example SET for every delivered type (the suite's supported-events test)."""
        stream = self.em.stream
        if stream is None:
            return
        delivered = [
            u for u in stream.get("events_delivered") or [] if isinstance(u, str) and u not in SSF_EVENTS
        ]
        self.events_sent = True
        sends = []
        for uri in delivered:
            ex = self.em.make(uri, event_payload(uri), "event")
            sends.append(self.em.send(ex, timeout=self.opts.event_timeout))
            if self.em.method == "push":
                await sends.pop()
        if sends:
            await asyncio.gather(*sends)

    # ---- what the receiver enforces: critical subject members (SSF 3.6) ----------------------
    async def _probe_status(self, token: str) -> int | None:
        assert self.opts.probe_url is not None
        try:
            r = await self.http.get(self.opts.probe_url, headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError:
            return None
        return r.status_code

    async def _critical(self) -> CriticalProbe:
        """Baseline GET, a SET naming the critical member, GET, the same SET without it, GET."""
        tag = uuid.uuid4().hex[:10]
        probe = CriticalProbe(f"kit-critical-{tag}@example.com")
        token = self.em.access_token(
            {
                "sub": f"kit-user-{tag}",
                "email": probe.user,
                "aud": self.opts.probe_audience,
                "client_id": self.opts.client_id,
            }
        )
        probe.baseline = await self._probe_status(token)
        if probe.baseline is None or not 200 <= probe.baseline < 300:
            return probe
        user = {"format": "email", "email": probe.user}
        event = uris.CAEP_BASE + "session-revoked"
        subject = {"format": "complex", "user": user, CRITICAL_MEMBER: {"format": "opaque", "id": tag}}
        probe.critical = self.em.make(event, event_payload(event), "critical", subject=subject)
        await self.em.send(probe.critical, timeout=self.opts.event_timeout)
        await asyncio.sleep(self.opts.push_delay)
        probe.after_critical = await self._probe_status(token)
        if probe.after_critical is None or not 200 <= probe.after_critical < 300:
            return probe
        control = {"format": "complex", "user": user}
        probe.control = self.em.make(event, event_payload(event), "critical-control", subject=control)
        await self.em.send(probe.control, timeout=self.opts.event_timeout)
        await asyncio.sleep(self.opts.push_delay)
        probe.after_control = await self._probe_status(token)
        return probe

    # ---- events for a subject the receiver removed (SSF 9.3) ----------------------------------
    async def _after_removal(self, subject: dict[str, Any]) -> None:
        """A transmitter MAY keep sending events for a removed subject for a while: send one."""
        await asyncio.sleep(self.opts.push_delay)
        event = self.opts.corpus_event
        ex = self.em.make(event, event_payload(event), "removed-subject", subject=subject)
        self.removed.append(ex)
        await self.em.send(ex, timeout=self.opts.event_timeout)

    # ---- probe sessions: the receiver started again at another issuer --------------------------
    async def _probe_sessions(self) -> None:
        if self.wants("kit-receiver-stream-iss"):
            self.iss_probe = await self._probe(stream_iss=IMPOSTOR_ISS)
        if not self.wants("kit-receiver-tls"):
            return
        certs = self.certs
        assert certs is not None
        self.tls_probes["self-signed"] = await self._probe(tls=certs.self_signed)
        self.tls_probes["trusted"] = await self._probe(tls=certs.trusted)
        if self.tls_probes["trusted"].ops:  # the receiver trusts the kit's CA: host names are judged
            self.tls_probes["wrong-host"] = await self._probe(tls=certs.wrong_host)

    async def _probe(self, *, stream_iss: str | None = None, tls: Pair | None = None) -> ProbeSession:
        o = self.opts
        em = Emulator(
            path=o.path,
            profile=o.profile,
            audience=o.audience,
            client_id=o.client_id,
            client_secret=o.client_secret,
            static_token=o.static_token,
            subject=o.subject,
            long_poll=o.long_poll,
            push_delay=o.push_delay,
            critical_subject_members=[CRITICAL_MEMBER],
            stream_iss=stream_iss,
        )
        em.http = self.http
        front: TLSFront | None = None
        async with contextlib.AsyncExitStack() as stack:
            base = await stack.enter_async_context(serve_app(em.app, o.host, 0))
            em.base_url = base
            if tls is not None:
                front = await stack.enter_async_context(tls_front(tls, base.removeprefix("http://"), o.host))
                em.base_url = front.url
            await self._run_cmd(o.start_cmd, o.start_hook, em.issuer)
            try:
                if stream_iss is not None:  # the wrong iss is in the create answer
                    contacted = await _until(
                        lambda: any(p.kind == "create" and p.status for p in em.ops), o.wait
                    )
                else:
                    contacted = await _until(
                        lambda: bool(em.ops) or bool(front and front.connections), o.wait
                    )
                if contacted:
                    await asyncio.sleep(o.probe_window)
            finally:
                await self._run_cmd(o.stop_cmd, o.stop_hook, em.issuer)
                await em.close()
        return ProbeSession(em.issuer, list(em.ops), contacted, front)


async def _until(cond: Callable[[], bool], limit: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not cond():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True
