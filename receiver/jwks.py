"""A JWKS fetched over HTTP, imported once, re-fetched on an unknown ``kid`` at a bounded rate.

Key objects stay imported between verifies (perf-anchors a: re-importing a JWK per verify
costs more than the verify's own Python overhead). A stream of garbage ``kid``s costs at
most one fetch per ``min_interval`` seconds: it can never make us hammer the key server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx

from receiver.transport import describe
from ssf.errors import KeyMaterialError
from ssf.keys import PublicKeys

__all__ = ["JWKSCache", "JWKSError"]

log = logging.getLogger("receiver.jwks")


class JWKSError(Exception):
    """The JWKS could not be fetched or holds no usable key."""


class JWKSCache:
    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient,
        *,
        min_interval: float = 10.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.http = http
        self.min_interval = min_interval
        self.now = now
        self.keys = PublicKeys()
        self.fetches = 0
        self._last_fetch: float | None = None
        self._lock = asyncio.Lock()

    async def load(self) -> PublicKeys:
        """Fetch now (start-up); raises :class:`JWKSError` when unusable."""
        async with self._lock:
            await self._fetch()
        return self.keys

    async def refresh(self) -> bool:
        """Fetch again unless the last fetch was under ``min_interval`` ago; True if fetched."""
        async with self._lock:
            last = self._last_fetch
            if last is not None and self.now() - last < self.min_interval:
                return False
            try:
                await self._fetch()
            except JWKSError as exc:
                log.warning("JWKS refresh from %s failed: %s", self.url, exc)
                return False
            return True

    async def _fetch(self) -> None:
        self._last_fetch = self.now()
        self.fetches += 1
        try:
            resp = await self.http.get(self.url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise JWKSError(f"fetching the JWKS failed: {describe(exc)}") from exc
        if resp.status_code != 200:
            raise JWKSError(f"JWKS answered {resp.status_code}")
        try:
            self.keys = PublicKeys.from_jwks(resp.json())
        except (ValueError, KeyMaterialError) as exc:
            raise JWKSError(f"JWKS unusable: {exc}") from exc
