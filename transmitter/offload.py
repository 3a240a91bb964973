"""Running blocking database work off the event loop, cheaply.

The hot paths (publish, poll, the push worker's reads and bookkeeping) hop to a thread once
or more per SET. A ``ThreadPoolExecutor`` hop (``run_in_executor``) builds a
``concurrent.futures.Future`` with its ``Condition``/``RLock``, chains it to an asyncio future,
and may start a thread; measured on this project's 2-core machine that cost 55-140 us of CPU
per hop, about twice what this one costs: a few long-lived threads take ``(future, call)``
items from one ``SimpleQueue`` (a C queue) and hand the outcome back with
``call_soon_threadsafe``. Fewer threads also means fewer of them fighting the event loop for
the GIL. Nothing here needs cancellation beyond ``run_in_executor``'s: a call not yet started
is skipped when its caller was cancelled; a started database transaction runs to its end.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar, TypeVarTuple

__all__ = ["Offload"]

R = TypeVar("R")
Ts = TypeVarTuple("Ts")

_Item = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


class Offload:
    """Up to ``max_workers`` threads for one application, started as calls wait for them;
    :meth:`close` at shutdown (an application served again starts new threads)."""

    def __init__(self, max_workers: int, name: str = "ssf-db") -> None:
        self._max_workers = max_workers
        self._name = name
        self._lane = _Lane()

    async def __call__(self, fn: Callable[[*Ts], R], /, *args: *Ts) -> R:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        lane = self._lane
        with lane.lock:
            lane.pending += 1
            if lane.pending > lane.threads and lane.threads < self._max_workers:
                lane.threads += 1
                name = f"{self._name}_{lane.threads - 1}"
                threading.Thread(target=lane.work, name=name, daemon=True).start()
        lane.jobs.put((loop, fut, fn, args))
        return await fut

    def close(self) -> None:
        lane, self._lane = self._lane, _Lane()
        with lane.lock:
            threads = lane.threads
        for _ in range(threads):
            lane.jobs.put(None)  # each thread ends after the calls queued before it


class _Lane:
    """One generation of threads and their queue (a closed one drains and ends)."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.threads = 0
        #: Calls queued or running: a new thread starts when they outnumber the threads.
        self.pending = 0

    def work(self) -> None:
        while (item := self.jobs.get()) is not None:
            loop, fut, fn, args = item
            try:
                if fut.cancelled():  # its caller gave up before it started
                    continue
                try:
                    result = fn(*args)
                except BaseException as exc:  # handed to the awaiting caller
                    _post(loop, _fail, fut, exc)
                else:
                    _post(loop, _succeed, fut, result)
            finally:
                with self.lock:
                    self.pending -= 1


def _post(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop was closed meanwhile: nobody waits any more
        pass


def _succeed(fut: asyncio.Future[Any], result: Any) -> None:
    if not fut.done():
        fut.set_result(result)


def _fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
