"""The poll loop (RFC 8936): long poll, apply, then ack in the next request.

Every SET of a response is applied and made durable before its ``jti`` is acknowledged;
refused ones go back in ``setErrs``. A failed request keeps its acks for the next one (an
ack is never lost, at worst repeated). The loop asks again at once while ``moreAvailable``,
backs off with jitter on errors, and honours ``Retry-After``. The client timeout is above
the transmitter's long-poll hold (``poll_timeout``), and ``endpoint_url`` is used verbatim,
query string included.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from receiver.client import TransmitterClient, TransmitterError
from ssf.poll import PollRequest

if TYPE_CHECKING:
    from receiver.core import Receiver

__all__ = ["MAX_RETRY_AFTER", "Poller", "parse_poll_response"]

log = logging.getLogger("receiver.poll")
#: The longest pause a transmitter's ``Retry-After`` can impose on the poll loop.
MAX_RETRY_AFTER = 3600.0


def parse_poll_response(data: object) -> tuple[dict[str, object], bool]:
    """``sets`` and ``moreAvailable`` of a poll answer, tolerant of junk values per SET."""
    if not isinstance(data, dict):
        raise TransmitterError("poll answer is not a JSON object")
    sets = data.get("sets", {})
    if not isinstance(sets, dict):
        raise TransmitterError("poll answer 'sets' is not an object")
    more = data.get("moreAvailable", False)
    return {str(k): v for k, v in sets.items()}, more is True


class Poller:
    def __init__(self, receiver: Receiver, client: TransmitterClient, endpoint_url: str) -> None:
        self.receiver = receiver
        self.client = client
        self.endpoint_url = endpoint_url
        s = receiver.settings
        self.max_events = s.poll_max_events
        self.return_immediately = s.poll_return_immediately
        self.timeout = s.poll_timeout
        self.interval = s.poll_interval
        self.base, self.cap = s.backoff_base, s.backoff_max
        self.acks: list[str] = []
        self.errs: dict[str, dict[str, str]] = {}
        self.polls = 0
        self.failures = 0

    def _request(self, *, max_events: int | None, immediately: bool) -> PollRequest:
        body: dict[str, Any] = {"returnImmediately": immediately}
        if max_events is not None:
            body["maxEvents"] = max_events
        if self.acks:
            body["ack"] = list(self.acks)
        if self.errs:
            body["setErrs"] = dict(self.errs)
        return PollRequest.model_validate(body)

    async def poll_once(self) -> tuple[int, bool]:
        """One request: send pending acks/errors, apply what comes back. (count, more)."""
        req = self._request(max_events=self.max_events, immediately=self.return_immediately)
        data = await self.client.poll(self.endpoint_url, req, timeout=self.timeout)
        self.polls += 1
        self.acks, self.errs = [], {}  # delivered with that request
        sets, more = parse_poll_response(data)
        if sets:
            acks, errs = await self.receiver.receive_batch(sets)
            self.acks.extend(acks)
            self.errs.update(errs)
        return len(sets), more

    async def flush_acks(self) -> None:
        """An acknowledge-only request (``maxEvents: 0``) for what is still unacknowledged."""
        if not self.acks and not self.errs:
            return
        req = self._request(max_events=0, immediately=True)
        await self.client.poll(self.endpoint_url, req, timeout=self.timeout)
        self.acks, self.errs = [], {}

    def _jitter(self, delay: float) -> float:
        return delay / 2 + random.uniform(0, delay / 2)

    async def run(self, stop: asyncio.Event) -> None:
        delay = self.base
        while not stop.is_set():
            started = time.monotonic()
            try:
                count, more = await self.poll_once()
            except asyncio.CancelledError:
                raise
            except TransmitterError as exc:
                self.failures += 1
                if exc.retry_after is not None:
                    # Honoured, up to an hour (or BACKOFF_MAX if longer): a bogus "Retry-After:
                    # 99999999" must not silence the revocation feed until a restart.
                    wait = min(exc.retry_after, max(self.cap, MAX_RETRY_AFTER))
                else:
                    wait = self._jitter(delay)
                delay = min(delay * 2, self.cap)
                log.warning("poll failed (%s); next try in %.2fs", exc, wait)
                await _sleep(stop, wait)
                continue
            except Exception as exc:  # storage failure: nothing was acked, so nothing is lost
                self.failures += 1
                wait = self._jitter(delay)
                delay = min(delay * 2, self.cap)
                log.exception("applying a poll batch failed (%s); next try in %.2fs", exc, wait)
                await _sleep(stop, wait)
                continue
            delay = self.base
            if not count and not more:
                # Short polls pause between requests; a "long" poll answered empty at once (a
                # transmitter that does not hold) must not turn into a busy loop either.
                elapsed = time.monotonic() - started
                await _sleep(stop, self.interval if self.return_immediately else self.interval - elapsed)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))
