"""Wake-ups for long polls and the push worker when SETs are queued.

In-process the :class:`Notifier` uses one ``asyncio.Event`` per waiting stream, set through
``call_soon_threadsafe`` because publishing runs on worker threads. Several instances on one
PostgreSQL also feed it from LISTEN/NOTIFY (:mod:`transmitter.pg_listen`); the stream id
``"*"`` wakes every waiter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

__all__ = ["Notifier"]


class Notifier:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._listeners: list[Callable[[frozenset[str]], None]] = []
        #: Set when the server is stopping: long polls answer at once instead of waiting on.
        self.closing = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def add_listener(self, fn: Callable[[frozenset[str]], None]) -> None:
        """``fn`` runs on the event loop with the stream ids that got new SETs."""
        self._listeners.append(fn)

    def notify(self, stream_ids: Iterable[str]) -> None:
        """Thread-safe: wake whoever waits for these streams."""
        ids = frozenset(stream_ids)
        if not ids or self._loop is None or self._loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._fire(ids)
        else:
            try:
                self._loop.call_soon_threadsafe(self._fire, ids)
            except RuntimeError:  # loop closed during shutdown
                pass

    def close(self) -> None:
        """The server is stopping: wake every waiter so open long polls answer now."""
        self.closing = True
        self.notify(["*"])

    def _fire(self, ids: frozenset[str]) -> None:
        if "*" in ids:  # "some streams": wake every waiter
            ids = frozenset(self._waiters) | ids
        for sid in ids:
            for ev in self._waiters.get(sid, ()):
                ev.set()
        for fn in self._listeners:
            fn(ids)

    async def wait(self, stream_id: str, timeout: float) -> bool:
        """Wait until ``stream_id`` gets a SET or ``timeout`` passes; True if woken."""
        ev = asyncio.Event()
        self._waiters.setdefault(stream_id, set()).add(ev)
        try:
            await asyncio.wait_for(ev.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            group = self._waiters.get(stream_id)
            if group is not None:
                group.discard(ev)
                if not group:
                    del self._waiters[stream_id]

    def register(self, stream_id: str) -> asyncio.Event:
        """An event set on the next notification (register before checking, to miss nothing)."""
        ev = asyncio.Event()
        self._waiters.setdefault(stream_id, set()).add(ev)
        return ev

    def waiting(self, stream_id: str) -> int:
        """How many waiters (open long polls) ``stream_id`` has."""
        return len(self._waiters.get(stream_id, ()))

    def unregister(self, stream_id: str, ev: asyncio.Event) -> None:
        group = self._waiters.get(stream_id)
        if group is not None:
            group.discard(ev)
            if not group:
                del self._waiters[stream_id]
