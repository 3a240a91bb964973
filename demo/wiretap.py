"""A tap on the push endpoint's wire: the demo shows a real SET as it arrived, without touching it."""

from __future__ import annotations

import collections
import threading
from typing import Any

__all__ = ["WireTap"]

Scope = dict[str, Any]
Message = dict[str, Any]


class WireTap:
    """ASGI wrapper that keeps a copy of recent request bodies sent to ``path``.

    The request goes on to the wrapped app unchanged: the tap only records what it reads.
    """

    def __init__(self, app: Any, path: str = "/ssf/push", keep: int = 32) -> None:
        self.app = app
        self.path = path
        self._bodies: collections.deque[bytes] = collections.deque(maxlen=keep)
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") != self.path:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []

        async def tapped() -> Message:
            message: Message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    with self._lock:
                        self._bodies.append(b"".join(chunks))
            return message

        await self.app(scope, tapped, send)

    def bodies(self) -> list[bytes]:
        with self._lock:
            return list(self._bodies)
