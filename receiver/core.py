"""The receiver engine: validate SETs, apply them to state, persist, then acknowledge.

One :class:`Receiver` per transmitter. Push (RFC 8935) and poll (RFC 8936) both end in
:meth:`Receiver.receive_batch`: each SET is verified (signature by the transmitter's JWKS,
``typ``, algorithms, ``iss``, ``aud``, no ``sub``/``exp``, ``iat`` skew, size), checked
against the seen ``jti``s (an identical re-send is accepted again and changes nothing; a
different SET reusing a ``jti`` is refused), applied to the in-memory state at once, and
made durable before the caller acknowledges it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import random
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import httpx

from receiver.client import ClientCredentials, StaticToken, TokenProvider, TransmitterClient, TransmitterError
from receiver.credential import KEY_ID, CredentialBox, PushCredential, make_box
from receiver.discovery import DiscoveryError, check_url, discover, discover_token_endpoint
from receiver.effects import mutations_for
from receiver.jwks import JWKSCache, JWKSError
from receiver.reconcile import desired_config, needs_update, reconcile
from receiver.settings import ReceiverSettings
from receiver.state import CUTOFF, Mutation, RevocationState, row_key
from receiver.store import MAX_JTI_CHARS, JtiTracker, MemoryStore, StateStore, WriteBatch, make_store
from receiver.tokens import (
    AccessTokenValidator,
    CompositeValidator,
    IntrospectionValidator,
    JWTAccessTokenValidator,
    TokenCache,
)
from ssf import uris
from ssf.errors import DuplicateJTI, InvalidRequest, InvalidState, SETError
from ssf.events import StreamUpdated, Verification
from ssf.keys import PublicKeys
from ssf.metadata import TransmitterMetadata
from ssf.set import SecurityEventToken, SETVerifier, UnknownKeyID
from ssf.stream import StreamConfiguration

__all__ = ["NotReady", "Receiver", "SetOutcome"]

log = logging.getLogger("receiver")
MAX_PENDING_STATES = 64
_MAX_UNSYNCED = 100_000
#: Our own member in the stored stream record (never sent to the transmitter).
_OWN = "_receiver"
#: Least seconds between two re-reads of the stored push credential caused by a refused push.
CREDENTIAL_REREAD_INTERVAL = 1.0


def _without_header(record: Mapping[str, Any]) -> dict[str, Any]:
    """The stream record to store: never a push ``authorization_header`` a transmitter echoed."""
    out = dict(record)
    delivery = out.get("delivery")
    if isinstance(delivery, dict) and "authorization_header" in delivery:
        out["delivery"] = {k: v for k, v in delivery.items() if k != "authorization_header"}
    return out


def _at_receipt(m: Mutation, now: float, latest: float) -> Mutation:
    """A revoked session (or token) is dated no earlier than its receipt: it refuses tokens of
    any ``iat``, so pruning it by a back-dated ``event_timestamp`` would forget it before the
    tokens issued until we heard of it expire. A finite cutoff keeps its event time: it only
    refuses tokens issued by then, and those are past TOKEN_MAX_LIFETIME when it goes.

    No event is dated after ``latest`` (receipt + CLOCK_SKEW): an ``event_timestamp`` years
    ahead would refuse the user's tokens until then, outrank every later fact about the
    subject, and (past 2**52) read as a revoked session."""
    at, value = m.at, m.value
    if m.field == CUTOFF and value == math.inf:
        at = min(max(at, now), latest)
    else:
        at = min(at, latest)
        if m.field == CUTOFF and isinstance(value, float) and value > latest:
            value = latest
    if at == m.at and value is m.value:
        return m
    return Mutation(m.subject, m.field, value, at)


@dataclass(frozen=True, slots=True)
class SetOutcome:
    """What became of one received SET (see :attr:`Receiver.on_set`)."""

    method: str  # "push" or "poll"
    raw: object  # as received (a refused one may be anything)
    set_: SecurityEventToken | None  # None when it did not verify
    error: SETError | None  # None when accepted
    new: bool  # accepted and not an identical re-send
    seconds: float | None = None  # push: receive to stored
    key: str | None = None  # poll: its key in ``sets``


class NotReady(Exception):
    """The receiver has no verified transmitter keys yet (start-up still running)."""


def payload_digest(token: str | bytes) -> bytes:
    """Digest of the claims segment: one SET, however it was re-signed or re-sent."""
    raw = token.encode("ascii", "replace") if isinstance(token, str) else token
    # The middle of exactly three segments (found, not split: one copy, not three).
    first = raw.find(b".")
    second = raw.find(b".", first + 1) if first >= 0 else -1
    if second < 0 or raw.find(b".", second + 1) >= 0:
        return hashlib.blake2b(raw, digest_size=16).digest()
    return hashlib.blake2b(raw[first + 1 : second], digest_size=16).digest()


class Receiver:
    def __init__(
        self,
        settings: ReceiverSettings | None = None,
        *,
        store: StateStore | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = s = settings or ReceiverSettings()
        self.store: StateStore = store or make_store(
            s.database_url, s.redis_url, s.redis_namespace, s.jti_retention
        )
        self.state = RevocationState()
        self.jtis = JtiTracker(s.jti_retention, s.jti_memory)
        self.tokens = TokenCache(s.token_cache_size)
        self.state.listeners.append(self._evict)
        self._own_http = http is None
        self.http = http
        self.verifier: SETVerifier | None = None
        self.jwks: JWKSCache | None = None
        self.metadata: TransmitterMetadata | None = None
        self.client: TransmitterClient | None = None
        self.stream: StreamConfiguration | None = None
        self.stream_id: str | None = s.stream_id
        self.stream_status: str | None = None
        self.token_validator: AccessTokenValidator | None = None
        configured = s.push_authorization.get_secret_value() if s.push_authorization else None
        #: The receiver makes its own push credential (and keeps it in the stored stream record).
        self.generates_credential = configured is None and s.delivery == "push" and not s.out_of_band
        #: What pushes must carry in ``Authorization``; None: nothing is asked of them.
        self.push_credential: PushCredential | None = (
            PushCredential.of(configured)
            if configured is not None
            else PushCredential.generate()
            if self.generates_credential
            else None
        )
        self._credential_box: CredentialBox | None = None
        self._credential_reread = -math.inf
        self._states: dict[str, float] = {}
        self.verified_states: dict[str, float] = {}
        self.unsolicited_verifications = 0
        self.stats: Counter[str] = Counter()
        self.error: str | None = None
        #: Applied in memory (and enforced) but not yet stored: retried until the store is back.
        self._unsynced: list[Mutation] = []
        #: Pushed jtis whose commit is in flight: a re-send waits for it before its 202.
        self._storing: dict[str, asyncio.Event] = {}
        self.store_error: str | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opened = False
        self.poller: Any = None
        #: Told of each SET received (push, and poll once its batch is stored) with its outcome,
        #: for counters and log lines (``receiver.ops``): from the SET already verified, so
        #: nothing is decoded twice. Must not raise.
        self.on_set: Callable[[SetOutcome], None] | None = None

    @property
    def push_authorization(self) -> str | None:
        """The push credential's value, when this instance knows it (it may hold the digest only)."""
        return self.push_credential.value if self.push_credential is not None else None

    # --- lifecycle ------------------------------------------------------------------
    @asynccontextmanager
    async def lifespan(self, _app: Any = None) -> AsyncIterator[None]:
        """For ``FastAPI(lifespan=receiver.lifespan)`` in a third-party app."""
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def open(self) -> None:
        """Storage and HTTP only (no transmitter): load every persisted revocation."""
        if self._opened:
            return
        s = self.settings
        if self.http is None:
            limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
            self.http = httpx.AsyncClient(timeout=s.http_timeout, limits=limits)
        await self.store.open()
        await self.store.load(self.state, self.jtis)
        self.store.on_remote(self._on_remote)
        self.token_validator = self._make_token_validator()
        self._opened = True

    def interrupt(self) -> None:
        """From a signal handler (any thread): a start-up still retrying the transmitter gives
        up at once, so a stop is not held for up to ``STARTUP_TIMEOUT``."""
        loop, stop = self._loop, self._stop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)

    async def start(self) -> None:
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        await self.open()
        s = self.settings
        self._tasks.append(asyncio.create_task(self._maintenance(), name="ssf-receiver-maintenance"))
        self._tasks.append(asyncio.create_task(self._sync_loop(), name="ssf-receiver-store-sync"))
        if not s.transmitter_issuer:
            log.warning("no transmitter issuer configured: the push endpoint refuses SETs")
            return
        deadline = time.monotonic() + s.startup_timeout
        delay = s.backoff_base
        while True:
            try:
                await self.connect()
                break
            except (DiscoveryError, JWKSError, TransmitterError) as exc:
                self.error = str(exc)
                if time.monotonic() + delay > deadline:
                    if s.require_transmitter:
                        raise
                    # Serve anyway: every persisted revocation is enforced already; pushes get
                    # 503 until the transmitter is reachable again.
                    log.error("transmitter unreachable (%s); serving and retrying in the background", exc)
                    self._tasks.append(
                        asyncio.create_task(self._reconnect(delay), name="ssf-receiver-reconnect")
                    )
                    return
                log.warning("connecting to the transmitter failed (%s); retrying in %.1fs", exc, delay)
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                if self._stop.is_set():
                    return  # stopping while still starting: nothing more to start
                delay = min(delay * 2, s.backoff_max)
        self.error = None
        # Verification and polling run once the server listens (lifespan start-up precedes it).
        self._tasks.append(asyncio.create_task(self._after_start(), name="ssf-receiver-after-start"))

    async def _reconnect(self, delay: float) -> None:
        s = self.settings
        while not self._stop.is_set():
            await asyncio.sleep(random.uniform(delay / 2, delay))
            try:
                await self.connect()
            except (DiscoveryError, JWKSError, TransmitterError) as exc:
                self.error = str(exc)
                delay = min(delay * 2, s.backoff_max)
                continue
            self.error = None
            log.info("connected to the transmitter")
            await self._after_start()
            return

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.poller is not None:
            with suppress(Exception):
                await self.poller.flush_acks()
        await self.store.close()
        if self._own_http and self.http is not None:
            await self.http.aclose()
            self.http = None
        self._opened = False

    def _make_token_validator(self) -> AccessTokenValidator | None:
        s = self.settings
        assert self.http is not None
        jwt_v = None
        if s.token_issuer and s.token_jwks_url:
            jwt_v = JWTAccessTokenValidator(
                issuer=s.token_issuer,
                jwks=JWKSCache(s.token_jwks_url, self.http, min_interval=s.jwks_min_refresh_interval),
                audience=s.token_audience,
                algorithms=s.token_algorithms,
                require_typ=s.token_require_typ,
                leeway=s.token_leeway,
                max_lifetime=s.token_max_lifetime,
            )
        intro = None
        if s.introspection_url:
            intro = IntrospectionValidator(
                url=s.introspection_url,
                http=self.http,
                client_id=s.introspection_client_id,
                client_secret=(
                    s.introspection_client_secret.get_secret_value()
                    if s.introspection_client_secret
                    else None
                ),
                issuer=s.token_issuer,
                audience=s.token_audience,
                ttl=s.introspection_ttl,
                negative_ttl=s.introspection_negative_ttl,
                max_lifetime=s.token_max_lifetime,
            )
        if jwt_v is None and intro is None:
            return None
        return CompositeValidator(jwt_v, intro)

    async def connect(self) -> None:
        """Discovery, JWKS and (unless out of band) stream reconciliation."""
        s = self.settings
        assert self.http is not None and s.transmitter_issuer
        meta = await discover(self.http, s.transmitter_issuer, dev_mode=s.dev_mode)
        if not meta.jwks_uri:
            raise DiscoveryError("the transmitter publishes no jwks_uri; unsigned SETs are refused")
        self.metadata = meta
        self.jwks = JWKSCache(meta.jwks_uri, self.http, min_interval=s.jwks_min_refresh_interval)
        keys = await self.jwks.load()
        saved = await self.store.load_stream(meta.issuer) or {}
        if self.generates_credential:
            if self._credential_box is None:
                self._credential_box = await self._load_credential_box()
            await self._restore_credential(meta.issuer, saved)
        if not s.out_of_band:
            self.client = TransmitterClient(meta, self.http, await self._token_provider(meta))
            known = s.stream_id or saved.get("stream_id")
            if self.generates_credential:
                await self._settle_credential(known if isinstance(known, str) else None)
            desired = desired_config(
                events=s.events,
                delivery=s.delivery,
                push_url=s.push_url,
                push_authorization=self.push_authorization,
                description=s.description,
            )
            self.stream = await reconcile(self.client, desired, stream_id=known)
            self.stream_id = self.stream.stream_id
            record = _without_header(self.stream.to_json())
            if self.generates_credential:
                record[_OWN] = self._own_record(saved.get(_OWN))
            await self.store.save_stream(meta.issuer, record)
        audience = s.audience
        if audience is None and self.stream is not None:
            audience = self.stream.aud if isinstance(self.stream.aud, str) else None
            if audience is None and isinstance(self.stream.aud, list):
                self.configure(meta.issuer, keys, audience=self.stream.aud)
                return
        self.configure(meta.issuer, keys, audience=audience)

    def configure(
        self, issuer: str, keys: PublicKeys, *, audience: str | list[str] | None = None
    ) -> SETVerifier:
        """Set the SET verifier directly (library use without discovery, and tests)."""
        s = self.settings
        self.verifier = SETVerifier(
            issuer=issuer,
            keys=keys,
            audience=audience,
            algorithms=s.set_algorithms,
            max_bytes=s.max_set_bytes,
            iat_skew=s.clock_skew,
        )
        return self.verifier

    async def _token_provider(self, meta: TransmitterMetadata) -> TokenProvider:
        s = self.settings
        assert self.http is not None
        if s.static_token is not None:
            return StaticToken(s.static_token.get_secret_value())
        if s.client_id and s.client_secret is not None:
            endpoint = s.token_endpoint or await discover_token_endpoint(
                self.http, meta.issuer, dev_mode=s.dev_mode
            )
            return ClientCredentials(
                self.http, endpoint, s.client_id, s.client_secret.get_secret_value(), s.scope
            )
        raise TransmitterError("set SSF_RECEIVER_STATIC_TOKEN or SSF_RECEIVER_CLIENT_ID/_SECRET")

    # --- the push credential (secrets at rest: receiver/credential.py) -----------------
    async def _load_credential_box(self) -> CredentialBox:
        if self._credential_box is not None:
            return self._credential_box
        return await asyncio.to_thread(self.prepare_secret)

    def prepare_secret(self) -> CredentialBox:
        """The box for a generated push credential, its secret file read or created now.
        ``ssf receiver serve`` calls it before listening, so a secret that cannot be kept
        stops start-up with one line saying what to set (raises ``SecretUnavailable``)."""
        s = self.settings
        if self._credential_box is None:
            if s.secret_key is None and isinstance(self.store, MemoryStore):
                # Nothing stored outlives the process: a key that does not either is enough.
                self._credential_box = CredentialBox(secrets.token_bytes(32))
            else:
                box = make_box(s, create=True)
                assert box is not None
                self._credential_box = box
        return self._credential_box

    async def _restore_credential(self, issuer: str, saved: dict[str, Any]) -> None:
        """Take the stored credential (a restart, or another instance sharing the store, keeps
        the one the transmitter already sends); rewrite a record that held it in clear."""
        box = self._credential_box
        own = saved.get(_OWN)
        cred, in_clear = PushCredential.from_record(own, box)
        if cred is None:
            return  # first start: keep the one generated
        self.push_credential = cred
        if cred.value is None and isinstance(own, dict):
            log.warning(
                "the stored push credential was encrypted with key %s, this instance's is %s: "
                "instances sharing a store must share SSF_RECEIVER_SECRET_KEY or _SECRET_FILE; "
                "pushes are still checked against its digest",
                own.get(KEY_ID),
                box.key_id if box else None,
            )
        if in_clear and box is not None:
            record = _without_header(saved)
            record[_OWN] = cred.to_record(box)
            await self.store.save_stream(issuer, record)
            log.info("the stored push credential is now encrypted (it was stored in clear)")

    async def _settle_credential(self, stream_id: str | None) -> None:
        """Holding only the digest (another key encrypted the value): keep it unless the
        transmitter must be sent the credential again; then replace it."""
        cred = self.push_credential
        if cred is None or cred.value is not None:
            return
        assert self.client is not None
        s = self.settings
        cfg = await self.client.read(stream_id) if stream_id else None
        if cfg is not None:
            echoed = cfg.delivery.authorization_header
            if echoed is not None and cred.matches(echoed.encode()):
                cred.value = echoed  # the transmitter shows it: nothing to replace
                return
            same = desired_config(
                events=s.events,
                delivery=s.delivery,
                push_url=s.push_url,
                push_authorization=None,
                description=s.description,
            )
            if echoed is None and not needs_update(cfg, same):
                return  # hidden there, and nothing else to change: pushes are checked by digest
        log.warning(
            "replacing the push credential: it must be sent to the transmitter and this instance "
            "cannot decrypt the stored one (set the same SSF_RECEIVER_SECRET_KEY on every instance)"
        )
        self.push_credential = PushCredential.generate()

    def _own_record(self, saved_own: object) -> dict[str, Any]:
        """Our member of the stored record: kept as stored while the credential is unchanged."""
        cred = self.push_credential
        assert cred is not None
        stored, in_clear = PushCredential.from_record(saved_own, None)
        if isinstance(saved_own, dict) and stored is not None and not in_clear:
            if hmac.compare_digest(stored.digest, cred.digest):
                return saved_own
        assert self._credential_box is not None
        return cred.to_record(self._credential_box)

    async def recheck_push_credential(self, got: bytes) -> bool:
        """A push the credential refused: another instance sharing the store may have replaced
        it. Re-read the stored one (at most once per ``CREDENTIAL_REREAD_INTERVAL``, so wrong
        credentials cannot make the receiver hammer its store) and check again."""
        if not self.generates_credential or self.metadata is None or self.push_credential is None:
            return False
        now = time.monotonic()
        if now - self._credential_reread < CREDENTIAL_REREAD_INTERVAL:
            return False
        self._credential_reread = now
        try:
            saved = await self.store.load_stream(self.metadata.issuer)
        except Exception:
            return False
        cred, _ = PushCredential.from_record((saved or {}).get(_OWN), self._credential_box)
        if cred is None or hmac.compare_digest(cred.digest, self.push_credential.digest):
            return False
        self.push_credential = cred
        log.info("took the push credential another instance sharing the store stored")
        return cred.matches(got)

    async def _after_start(self) -> None:
        s = self.settings
        if self.client is not None and self.stream_id and s.verify_on_start:
            await asyncio.sleep(0.05)  # let the server start listening for the verification push
            try:
                await self.request_verification()
            except TransmitterError as exc:
                log.warning("verification request failed: %s", exc)
        if s.delivery == "poll" and self.client is not None and self.stream is not None:
            from receiver.poll import Poller

            url = self.stream.delivery.endpoint_url
            if not url:
                self.error = "the poll stream has no endpoint_url"
                return
            try:  # every poll carries our bearer token: https, as for discovery
                check_url(url, dev_mode=s.dev_mode, what="the poll endpoint_url")
            except DiscoveryError as exc:
                self.error = str(exc)
                log.error("not polling: %s", exc)
                return
            self.poller = Poller(self, self.client, url)
            await self.poller.run(self._stop)

    async def request_verification(self) -> str:
        """SSF §8.1.4.2: ask for a verification event carrying a fresh ``state``."""
        if self.client is None or not self.stream_id:
            raise TransmitterError("no stream to verify")
        state = secrets.token_urlsafe(18)
        self._states[state] = time.time()
        while len(self._states) > MAX_PENDING_STATES:
            self._states.pop(next(iter(self._states)))
        await self.client.verify(self.stream_id, state)
        return state

    async def _maintenance(self) -> None:
        retention = self.settings.effective_state_retention
        interval = min(3600.0, max(1.0, min(self.jtis.retention, retention) / 10))
        while not self._stop.is_set():
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=interval)
            now = time.time()
            self.jtis.prune(now)
            with suppress(Exception):
                await self.store.prune(now - self.jtis.retention)
            if not self.settings.prune_state:
                continue
            try:
                await self.prune_state(now - retention)
            except Exception:
                log.exception("pruning old cutoffs and revoked sessions failed")

    async def prune_state(self, before: float) -> int:
        """Forget cutoffs and revoked sessions made before ``before`` in memory and storage
        (the caller's bound: every token they could refuse has expired); returns how many.
        Account-disabled and device states are facts until undone, never pruned."""
        total = 0
        steps = self.state.prune_chunks(before)
        try:
            for dead, reset in steps:
                # Built and queued before anything else runs: the store sees the deletes in the
                # order memory made them, among the commits around them.
                snapshots: dict[str, list[dict[str, Any]]] = {}
                gone: list[str] = []
                for key in dead:
                    rec = self.state.records.get(key)
                    if rec is None:
                        gone.append(key)
                    else:
                        snapshots[key] = [m.to_json() for m in self.state.export(rec.subject)]
                for subject in reset:
                    facts = [m.to_json() for m in self.state.export(subject)]
                    if facts:
                        snapshots[row_key(subject)] = facts
                    else:
                        gone.append(row_key(subject))  # nothing left: no empty row either
                if gone or snapshots:
                    await self.store.forget(gone, snapshots, before)
                total += len(dead) + len(reset)
                await asyncio.sleep(0)  # the event loop runs between two steps
        finally:
            steps.close()
        return total

    # --- receiving ------------------------------------------------------------------
    async def verify(self, token: str | bytes) -> SecurityEventToken:
        verifier = self.verifier
        if verifier is None:
            raise NotReady("the transmitter's keys are not loaded yet")
        try:
            return verifier.verify(token)
        except UnknownKeyID:
            # Key rotation at the transmitter: refetch the JWKS (rate-limited) and retry once.
            if self.jwks is not None and await self.jwks.refresh():
                verifier.keys = self.jwks.keys
                return verifier.verify(token)
            raise

    def _verify_now(self, token: str | bytes) -> SecurityEventToken | None:
        """:meth:`verify` without a coroutine when it needs nothing awaited: None when the
        keys are not loaded or the ``kid`` is unknown (then :meth:`verify` decides)."""
        verifier = self.verifier
        if verifier is None:
            return None
        try:
            return verifier.verify(token)
        except UnknownKeyID:
            return None

    async def receive(self, token: str | bytes) -> bool:
        """Push: validate, apply, persist. True if new, False for an identical re-send."""
        observe = self.on_set
        started = time.perf_counter() if observe is not None else 0.0
        set_ = None
        try:
            set_ = self._verify_now(token) or await self.verify(token)
            if self.jtis.overflowed:
                await self._recall(set_.jti)
            batch = WriteBatch()
            try:
                new = self._accept(token, set_, batch)
                while not new and (storing := self._storing.get(set_.jti)) is not None:
                    # A re-send while the first copy is still being stored: answered once that
                    # is done (202 means it is ours); if it failed, this one stores the SET.
                    await storing.wait()
                    batch = WriteBatch()
                    new = self._accept(token, set_, batch)
            except SETError as exc:
                self.stats[exc.err] += 1
                raise
            if batch:
                await self._commit_push(set_.jti, batch)
        except SETError as exc:
            if observe is not None:
                observe(SetOutcome("push", token, set_, exc, False, time.perf_counter() - started))
            raise
        if observe is not None:
            observe(SetOutcome("push", token, set_, None, new, time.perf_counter() - started))
        return new

    async def receive_batch(self, sets: Mapping[str, object]) -> tuple[list[str], dict[str, dict[str, str]]]:
        """Poll: every SET of one response; returns (ack, setErrs) for the next request."""
        acks: list[str] = []
        errs: dict[str, dict[str, str]] = {}
        batch = WriteBatch()
        outcomes: list[SetOutcome] | None = [] if self.on_set is not None else None
        for jti, raw in sets.items():
            set_ = None
            try:
                if not isinstance(raw, str):
                    raise InvalidRequest("a 'sets' value must be a SET string")
                set_ = self._verify_now(raw) or await self.verify(raw)
                if set_.jti != jti:
                    raise InvalidRequest("the SET's jti differs from its key in 'sets'")
                if self.jtis.overflowed:
                    await self._recall(jti)
                new = self._accept(raw, set_, batch)
                acks.append(jti)
                if outcomes is not None:
                    outcomes.append(SetOutcome("poll", raw, set_, None, new, None, jti))
            except SETError as exc:
                self.stats[exc.err] += 1
                errs[jti] = exc.to_body()
                if outcomes is not None:
                    outcomes.append(SetOutcome("poll", raw, set_, exc, False, None, jti))
        if batch:
            await self._commit(batch)
        if outcomes and self.on_set is not None:
            for outcome in outcomes:
                self.on_set(outcome)
        return acks, errs

    async def _commit_push(self, jti: str, batch: WriteBatch) -> None:
        """:meth:`_commit` with the jti marked as being stored meanwhile (see :meth:`receive`)."""
        done = self._storing[jti] = asyncio.Event()
        try:
            await self._commit(batch)
        finally:
            del self._storing[jti]
            done.set()

    async def _recall(self, jti: str) -> None:
        """Past the in-memory capacity, bring back a jti memory dropped but the store holds."""
        if self.jtis.overflowed and jti not in self.jtis:
            digest = await self.store.lookup_jti(jti)
            if digest is not None:
                self.jtis.add(jti, digest, time.time())

    async def _commit(self, batch: WriteBatch) -> None:
        """Make a batch durable. On failure its jtis are forgotten, so the transmitter's retry
        (push) or re-delivery (poll, nothing was acked) applies and stores them again; the
        in-memory state already holds them (and keeps enforcing them), and applying twice
        changes nothing. Its mutations are kept and ride along with the next commit (or the
        background sync), because the retry finds them applied already and would not carry
        them to the store (nor, through a shared store, to the other instances)."""
        carried = list(self._unsynced)  # stays counted (health) until stored
        if carried:
            batch.mutations[:0] = carried
            if self.store.wants_snapshots:
                for m in carried:
                    key = row_key(m.subject)
                    if key not in batch.snapshots:
                        batch.snapshots[key] = [x.to_json() for x in self.state.export(m.subject)]
        try:
            await self.store.commit(batch)
        except Exception as exc:
            for jti, _digest, _at in batch.jtis:
                self.jtis.discard(jti)
            self._unsynced.extend(batch.mutations[len(carried) :])
            del self._unsynced[:-_MAX_UNSYNCED]
            self.store_error = f"{type(exc).__name__}: {exc}"[:300]
            self.stats["store_failed"] += 1
            raise
        if carried:
            stored = {id(m) for m in carried}
            self._unsynced = [m for m in self._unsynced if id(m) not in stored]
        self.store_error = None

    async def _sync_loop(self) -> None:
        """While the store is down, retry storing what memory already enforces."""
        while not self._stop.is_set():
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.settings.store_retry_interval)
            if self._unsynced:
                with suppress(Exception):
                    await self._commit(WriteBatch())

    @property
    def store_available(self) -> bool:
        """False while the last write failed or a shared store's connection is down."""
        return self.store_error is None and bool(getattr(self.store, "connected", True))

    def _accept(self, raw: str | bytes, set_: SecurityEventToken, batch: WriteBatch) -> bool:
        jti = set_.jti
        if len(jti) > MAX_JTI_CHARS or "\x00" in jti:
            # Refused alone: in the store it would fail the commit every SET around it shares.
            raise InvalidRequest(f"'jti' must be at most {MAX_JTI_CHARS} characters, without NUL")
        digest = payload_digest(raw)
        seen = self.jtis.get(jti)
        if seen is not None:
            if hmac.compare_digest(seen, digest):
                self.stats["duplicate"] += 1
                return False  # RFC 8935 §2: answer a re-sent SET as the first time; change nothing
            raise DuplicateJTI("this jti names a different SET already received")
        etype = set_.event_type
        if etype == uris.VERIFICATION:
            self._check_verification(set_)
        elif etype == uris.STREAM_UPDATED and isinstance(set_.event, StreamUpdated):
            if self._names_own_stream(set_):  # another stream's: accepted, nothing to do here
                self.stream_status = set_.event.status
        now = time.time()
        latest = now + self.settings.clock_skew
        mutations = [] if self._discard(set_) else [_at_receipt(m, now, latest) for m in mutations_for(set_)]
        for m in mutations:
            if not m.subject.is_complex and "\x00" in row_key(m.subject):
                raise InvalidRequest("a subject identifier must not hold a NUL character")
        self.jtis.add(set_.jti, digest, now)
        batch.jtis.append((set_.jti, digest, now))
        changed = [m for m in mutations if self.state.apply(m)]
        if changed:
            batch.mutations.extend(changed)
            if self.store.wants_snapshots:
                for m in changed:
                    batch.snapshots[row_key(m.subject)] = [x.to_json() for x in self.state.export(m.subject)]
        self.stats["accepted"] += 1
        return True

    def _check_verification(self, set_: SecurityEventToken) -> None:
        """SSF §8.1.4.1: the subject names our stream; a ``state`` must be one we asked for."""
        if not self._names_own_stream(set_):
            raise InvalidRequest("verification event for another stream")
        event = set_.event
        state = event.state if isinstance(event, Verification) else None
        if state is None:
            self.unsolicited_verifications += 1
            return
        if state in self._states or state in self.verified_states:
            self.verified_states[state] = time.time()
            self._states.pop(state, None)
            return
        if self.settings.out_of_band and not self._states:
            self.verified_states[state] = time.time()  # verification triggered out of band
            return
        raise InvalidState("the verification 'state' does not match a request of this receiver")

    def _names_own_stream(self, set_: SecurityEventToken) -> bool:
        """SSF §8.1.4.1, §8.1.5: verification and stream-updated name the stream as an opaque
        subject (any stream while ours is unknown)."""
        sub = set_.sub_id
        return not self.stream_id or (sub.format == "opaque" and sub.get("id") == self.stream_id)

    def _discard(self, set_: SecurityEventToken) -> bool:
        """SSF §3.6: discard an event naming a critical subject member we cannot process."""
        meta = self.metadata
        if meta is None or not meta.critical_subject_members or not set_.sub_id.is_complex:
            return False
        understood = set(self.settings.understood_subject_members)
        names = set(set_.sub_id.members())
        if names & set(meta.critical_subject_members) - understood:
            self.stats["discarded_critical"] += 1
            return True
        return False

    def _evict(self, m: Mutation) -> None:
        self.tokens.evict_subject(m.subject, self.state)

    def _on_remote(self, mutations: list[Mutation], jtis: list[tuple[str, bytes, float]]) -> None:
        """Changes applied by another instance (shared store fan-out)."""
        for jti, digest, at in jtis:
            self.jtis.add(jti, digest, at)
        for m in mutations:
            self.state.apply(m)

    # --- reporting ------------------------------------------------------------------
    def metrics_text(self) -> str:
        """Prometheus text exposition of the counters and state sizes."""
        lines = ["# TYPE ssf_receiver_sets_total counter"]
        requests = ["# TYPE ssf_receiver_requests_total counter"]
        for name, value in sorted(self.stats.items()):
            if name.startswith("request_refused:"):
                requests.append(
                    f'ssf_receiver_requests_total{{outcome="refused",error="{name[16:]}"}} {value}'
                )
            elif name == "request_authorized":
                requests.append(f'ssf_receiver_requests_total{{outcome="authorized"}} {value}')
            else:
                lines.append(f'ssf_receiver_sets_total{{outcome="{name}"}} {value}')
        lines += requests
        lines.append("# TYPE ssf_receiver_state gauge")
        for kind, value in self.state.counts().items():
            lines.append(f'ssf_receiver_state{{kind="{kind}"}} {value}')
        lines += [
            "# TYPE ssf_receiver_jtis gauge",
            f"ssf_receiver_jtis {len(self.jtis)}",
            "# TYPE ssf_receiver_cached_tokens gauge",
            f"ssf_receiver_cached_tokens {len(self.tokens)}",
            "# TYPE ssf_receiver_ready gauge",
            f"ssf_receiver_ready {int(self.verifier is not None)}",
            "# TYPE ssf_receiver_store_up gauge",
            f"ssf_receiver_store_up {int(self.store_available)}",
            "# TYPE ssf_receiver_store_unsynced_mutations gauge",
            f"ssf_receiver_store_unsynced_mutations {len(self._unsynced)}",
        ]
        return "\n".join(lines) + "\n"

    def status(self) -> dict[str, Any]:
        return {
            "issuer": self.metadata.issuer if self.metadata else self.settings.transmitter_issuer,
            "ready": self.verifier is not None,
            "error": self.error,
            "stream_id": self.stream_id,
            "delivery": self.settings.delivery,
            "stream_status": self.stream_status,
            "verified": bool(self.verified_states),
            "unsolicited_verifications": self.unsolicited_verifications,
            "state": self.state.counts(),
            "jtis": len(self.jtis),
            "cached_tokens": len(self.tokens),
            "stats": dict(self.stats),
            # Degraded: enforcing from local memory while the store (Redis / database) is down.
            "degraded": not self.store_available,
            "store": {
                "backend": type(self.store).__name__,
                "available": self.store_available,
                "error": self.store_error or getattr(self.store, "last_error", None),
                "unsynced_mutations": len(self._unsynced),
            },
        }
