"""Running blocking database work off the event loop, cheaply.

The hot HTTP paths (publish, poll) hop to a thread once per request. A plain
``ThreadPoolExecutor`` hop costs about 60 % of anyio's ``to_thread`` (Starlette's
``run_in_threadpool``: capacity limiter, cancel scope, worker bookkeeping) in CPU per call,
measured on this project's machine; nothing here needs anyio's cancellation semantics, since a
started database transaction runs to its end either way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar, TypeVarTuple

__all__ = ["Offload"]

R = TypeVar("R")
Ts = TypeVarTuple("Ts")


class Offload:
    """A small thread pool for one application, started on first use; :meth:`close` at
    shutdown (an application served again starts a new pool)."""

    def __init__(self, max_workers: int, name: str = "ssf-db") -> None:
        self._max_workers = max_workers
        self._name = name
        self._pool: ThreadPoolExecutor | None = None

    async def __call__(self, fn: Callable[[*Ts], R], /, *args: *Ts) -> R:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix=self._name)
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)
