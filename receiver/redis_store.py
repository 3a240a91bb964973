"""A shared state backend for several receiver instances: Redis keys + pub/sub fan-out.

Layout under ``{ns}``:

- ``{ns}:s:{subject key}`` hash, one field per applied fact (``{field}:{event time}`` →
  the mutation as JSON). Replaying every field rebuilds the subject exactly, because
  mutations are idempotent and order-tolerant; concurrent writers never overwrite each
  other.
- ``{ns}:j:{jti}`` → payload digest, expiring after the jti retention window.
- ``{ns}:events`` channel: every commit is published; each instance applies what others
  applied, so a token refused on one instance is refused on all of them.
- ``{ns}:stream:{issuer}`` → the stream configuration (JSON).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from contextlib import suppress
from typing import Any

import redis.asyncio as aioredis

from receiver.state import Mutation, RevocationState, row_key
from receiver.store import JtiTracker, RemoteListener, WriteBatch

__all__ = ["RedisStore"]

log = logging.getLogger("receiver.redis")


def _prunable(field: bytes | str, before: float | None) -> bool:
    raw = field if isinstance(field, bytes) else field.encode()
    if not raw.startswith(b"cutoff:"):
        return False
    if before is None:
        return True
    try:
        return float(raw[7:]) < before
    except ValueError:
        return False


class RedisStore:
    wants_snapshots = False

    def __init__(self, url: str, *, namespace: str = "ssf-receiver", jti_retention: int = 7 * 86400) -> None:
        self.url = url
        self.ns = namespace
        self.jti_retention = jti_retention
        self.instance_id = secrets.token_hex(8)
        self.redis: aioredis.Redis = aioredis.Redis.from_url(url)
        self._listeners: list[RemoteListener] = []
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self.received = 0
        #: False while Redis is unreachable (the subscription is down); for health/metrics.
        self.connected = False
        self.last_error: str | None = None
        #: Full re-reads after a lost subscription (fan-out messages may have been missed).
        self.resyncs = 0

    @property
    def channel(self) -> str:
        return f"{self.ns}:events"

    async def open(self) -> None:
        await self.redis.ping()
        self._task = asyncio.create_task(self._listen(), name="ssf-receiver-redis-sub")
        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout=5)

    async def load(self, state: RevocationState, jtis: JtiTracker) -> None:
        self.jti_retention = int(jtis.retention)
        async for key in self.redis.scan_iter(match=f"{self.ns}:s:*", count=1000):
            facts = await self.redis.hgetall(key)
            for raw in facts.values():
                with suppress(ValueError, KeyError, TypeError):
                    state.apply(Mutation.from_json(json.loads(raw)))
        now = time.time()
        prefix = len(f"{self.ns}:j:")
        async for key in self.redis.scan_iter(match=f"{self.ns}:j:*", count=1000):
            digest = await self.redis.get(key)
            if digest is not None:
                if isinstance(digest, bytes):
                    jtis.add(key.decode()[prefix:], digest, now)

    async def commit(self, batch: WriteBatch) -> None:
        if not batch:
            return
        pipe = self.redis.pipeline(transaction=False)
        for jti, digest, _at in batch.jtis:
            pipe.set(f"{self.ns}:j:{jti}", digest, ex=self.jti_retention, nx=True)
        for m in batch.mutations:
            pipe.hset(f"{self.ns}:s:{row_key(m.subject)}", f"{m.field}:{m.at!r}", json.dumps(m.to_json()))
        message = {
            "origin": self.instance_id,
            "mutations": [m.to_json() for m in batch.mutations],
            "jtis": [[jti, digest.hex(), at] for jti, digest, at in batch.jtis],
        }
        pipe.publish(self.channel, json.dumps(message))
        try:
            await pipe.execute()
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            raise

    async def _listen(self) -> None:
        lost = False
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                if lost:
                    # Messages published while we were away are gone: re-read the shared keys
                    # and hand them to the listeners (applying is idempotent).
                    await self._resync()
                    lost = False
                self.connected = True
                self.last_error = None
                self._subscribed.set()
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None and msg.get("type") == "message":
                        self._dispatch(msg["data"])
            except asyncio.CancelledError:
                with suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                raise
            except Exception as exc:  # connection lost: resubscribe after a pause
                if not lost:
                    log.warning("redis subscription lost (%s); resubscribing", exc)
                lost = True
                self.connected = False
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                with suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                await asyncio.sleep(0.5)

    async def _resync(self) -> None:
        mutations: list[Mutation] = []
        async for key in self.redis.scan_iter(match=f"{self.ns}:s:*", count=1000):
            for raw in (await self.redis.hgetall(key)).values():
                with suppress(ValueError, KeyError, TypeError):
                    mutations.append(Mutation.from_json(json.loads(raw)))
        jtis: list[tuple[str, bytes, float]] = []
        prefix = len(f"{self.ns}:j:")
        now = time.time()
        async for key in self.redis.scan_iter(match=f"{self.ns}:j:*", count=1000):
            digest = await self.redis.get(key)
            if isinstance(digest, bytes):
                jtis.append((key.decode()[prefix:], digest, now))
        self.resyncs += 1
        for listener in self._listeners:
            listener(mutations, jtis)

    def _dispatch(self, data: Any) -> None:
        try:
            message = json.loads(data)
            if message.get("origin") == self.instance_id:
                return
            mutations = [Mutation.from_json(m) for m in message.get("mutations", ())]
            jtis = [(str(j), bytes.fromhex(d), float(at)) for j, d, at in message.get("jtis", ())]
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring a malformed fan-out message: %s", exc)
            return
        self.received += 1
        for listener in self._listeners:
            listener(mutations, jtis)

    async def prune(self, before: float) -> int:
        return 0  # jti keys expire by themselves

    async def save_stream(self, issuer: str, data: dict[str, Any]) -> None:
        await self.redis.set(f"{self.ns}:stream:{issuer}", json.dumps(data))

    async def load_stream(self, issuer: str) -> dict[str, Any] | None:
        raw = await self.redis.get(f"{self.ns}:stream:{issuer}")
        if raw is None:
            return None
        data = json.loads(raw)
        return data if isinstance(data, dict) else None

    async def forget(
        self, keys: list[str], snapshots: dict[str, list[dict[str, Any]]], before: float | None = None
    ) -> None:
        """Drop the pruned cutoff facts (each instance prunes its own memory by the same rule).

        A field is ``cutoff:{event time}``: with ``before``, only those made before it go, so a
        newer cutoff or revocation another instance wrote meanwhile stays.
        """
        names = [f"{self.ns}:s:{key}" for key in [*keys, *snapshots]]
        for i in range(0, len(names), 500):  # pipelined: a day of revocations is many keys
            chunk = names[i : i + 500]
            read = self.redis.pipeline(transaction=False)
            for name in chunk:
                read.hkeys(name)
            drop = self.redis.pipeline(transaction=False)
            dropping = False
            for name, fields in zip(chunk, await read.execute(), strict=True):
                old = [f for f in fields if _prunable(f, before)]
                if old:
                    drop.hdel(name, *old)
                    dropping = True
            if dropping:
                await drop.execute()

    async def lookup_jti(self, jti: str) -> bytes | None:
        value = await self.redis.get(f"{self.ns}:j:{jti}")
        return value if isinstance(value, bytes) else None

    def on_remote(self, listener: RemoteListener) -> None:
        self._listeners.append(listener)

    async def clear(self) -> None:
        """Delete every key of this namespace (tests, resets)."""
        async for key in self.redis.scan_iter(match=f"{self.ns}:*", count=1000):
            await self.redis.delete(key)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self.redis.aclose()
