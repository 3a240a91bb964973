"""Abuse limits that are not part of the wire protocol: per-client rate limiting of the
management API and the JSON nesting bound of request bodies."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from ssf.errors import ModelError
from transmitter.errors import TooManyRequests

__all__ = ["RateLimiter", "check_json"]


class RateLimiter:
    """A token bucket per key (``rate`` per second, up to ``burst``); memory is bounded by
    forgetting the oldest keys past ``max_keys`` (a forgotten key starts with a full bucket)."""

    def __init__(self, rate: float, burst: int, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str, now: float | None = None) -> float:
        """Take one token: 0.0 when allowed, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            while len(self._buckets) > self.max_keys:
                del self._buckets[next(iter(self._buckets))]
        return wait

    def check(self, key: str, what: str = "requests") -> None:
        """Raise :class:`TooManyRequests` (429 + Retry-After) when ``key`` is over its rate."""
        wait = self.hit(key)
        if wait > 0:
            raise TooManyRequests(f"too many {what}; retry later", max(1, math.ceil(wait)))


def check_json(value: Any, limit: int) -> None:
    """Raise :class:`ModelError` (400) when ``value`` nests arrays/objects deeper than ``limit``,
    holds a string that is not Unicode text or holds NUL, or a NaN or infinite number.

    JSON may spell a lone surrogate (``"\\ud800"``); Python keeps it in a ``str`` that no UTF-8
    encoder (database driver, SET signer, receiver) accepts. Every request body is walked here
    anyway, so this is where such text is refused, before anything tries to store it. NaN and
    Infinity are not JSON (RFC 8259 §6) although Python's parser takes them.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
            continue
        if isinstance(item, float) and not math.isfinite(item):
            raise ModelError(f"the request body holds {item!r}, which is not a JSON number (NaN or Infinity)")
        if isinstance(item, dict):
            for key in item:
                _check_text(key)
            children = item.values()
        elif isinstance(item, list):
            children = item  # type: ignore[assignment]
        else:
            continue
        if depth > limit:
            raise ModelError(f"the request body nests deeper than {limit} levels")
        stack.extend((c, depth + 1) for c in children)


def _check_text(text: str) -> None:
    if "\x00" in text:
        # Valid JSON, but PostgreSQL text cannot hold it (SQLite can): refused on both alike.
        raise ModelError("the request body holds a string with a NUL character")
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ModelError(
            "the request body holds a string that is not Unicode text (a lone surrogate)"
        ) from None
