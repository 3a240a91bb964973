"""The receiver plan's session: serve the emulated transmitter, let the receiver act, drive
the scripted deliveries (unsolicited verification, solicited verification, one example of
every delivered event type, the bad-SET corpus), then hand the record to the modules."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from conformance.rx.emulator import Emulator, Exchange, Op
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
    #: The same as Python callables (tests); each gets the issuer URL.
    start_hook: Hook | None = None
    finish_hook: Hook | None = None
    announce: Callable[[str], None] | None = None


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
        self.em.on_verify.append(self._verification)
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

    async def _run_cmd(self, template: str | None, hook: Hook | None) -> None:
        values = {"issuer": self.em.issuer, "stream_id": self.created_id or ""}
        if hook is not None:
            await hook(self.em.issuer)
        if template:
            cmd = template.format(**{k: shlex.quote(v) for k, v in values.items()})
            proc = await asyncio.create_subprocess_shell(cmd)
            await proc.wait()

    async def session(self) -> None:
        """Let the receiver create, verify and delete its stream while the kit delivers."""
        if self.opts.announce:
            self.opts.announce(self.em.issuer)
        started = time.monotonic()
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
        if self.opts.corpus and (created or self.opts.push_url):
            from conformance.rx.corpus import run_corpus

            self.corpus = await run_corpus(self)
        if created:
            await self._run_cmd(self.opts.finish_cmd, self.opts.finish_hook)
            await self._quiet(lambda: bool(self.succeeded("delete")), max(self.opts.idle, 0.1))
        self.notes.append(f"session took {time.monotonic() - started:.1f}s")

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
