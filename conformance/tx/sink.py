"""The kit's own push endpoint (RFC 8935 receiver side) served on a loopback port.

Each stream the kit creates gets its own path ``/push/<key>`` so SETs are attributed to
the stream that carried them; every request is recorded with its headers and answered
202 with an empty body.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conformance.tx.setchecks import Received

__all__ = ["PushSink", "serve_app"]


class PushSink:
    def __init__(self) -> None:
        self.records: dict[str, list[Received]] = {}
        self._cond = asyncio.Condition()
        self.base_url = ""
        self.app = Starlette(routes=[Route("/push/{key}", self._push, methods=["POST"])])

    async def _push(self, request: Request) -> Response:
        body = await request.body()
        rec = Received(
            compact=body.decode("ascii", "replace").strip(),
            via="push",
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        rec.decode()
        async with self._cond:
            self.records.setdefault(request.path_params["key"], []).append(rec)
            self._cond.notify_all()
        return Response(status_code=202)

    def url(self, key: str) -> str:
        return f"{self.base_url}/push/{key}"

    def received(self, key: str) -> list[Received]:
        return list(self.records.get(key, []))

    async def wait(self, key: str, until: Callable[[list[Received]], bool], timeout: float) -> list[Received]:
        """Wait until ``until(records)`` holds or ``timeout`` passes; returns the records."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._cond:
            while not until(self.received(key)):
                left = deadline - loop.time()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cond.wait(), left)
        return self.received(key)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.stop_event = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the kit keeps the process's own handlers
        yield

    async def main_loop(self) -> None:
        # wake at once on stop instead of polling every 100 ms
        await self.stop_event.wait()


@contextlib.asynccontextmanager
async def serve_app(app: Any, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn inside the running event loop; yields its base URL."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the kit's endpoint did not start")
            await asyncio.sleep(0.01)
        shown = f"[{host}]" if ":" in host else host
        yield f"http://{shown}:{bound}"
    finally:
        server.should_exit = True
        server.stop_event.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        sock.close()
