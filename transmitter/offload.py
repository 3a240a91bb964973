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
    """A small thread pool for one application; :meth:`close` at shutdown."""

    def __init__(self, max_workers: int, name: str = "ssf-db") -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)

    async def __call__(self, fn: Callable[[*Ts], R], /, *args: *Ts) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False)
