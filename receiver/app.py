"""The receiver service: push endpoint, health, and a protected demo resource."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from receiver.core import Receiver
from receiver.middleware import ContinuousAuthMiddleware
from receiver.ops import install_ops
from receiver.policy import Policy
from receiver.push import PushEndpoint, push_route
from receiver.push_http import push_protocol
from receiver.settings import ReceiverSettings

__all__ = ["create_app"]


def _protected_app() -> FastAPI:
    demo = FastAPI(title="protected demo resource", openapi_url=None, docs_url=None, redoc_url=None)

    @demo.get("/whoami")
    async def whoami(request: Request) -> dict[str, Any]:
        """The principal the middleware authorized for this request."""
        p = request.state.principal
        return {
            "sub": p.sub,
            "sid": p.sid,
            "acr": p.acr,
            "device": p.device,
            "iss": p.iss,
            "scope": p.scope,
            "state": {
                "device_compliant": p.state.device_compliant,
                "assurance_level": p.state.assurance_level,
                "risk_level": p.state.risk_level,
            },
            "claims": dict(p.claims),
        }

    return demo


class ReceiverAPI(FastAPI):
    """FastAPI, with ``POST /ssf/push`` dispatched before FastAPI's middleware and router.

    The push route is also mounted as a plain Starlette route (it shows in ``app.routes``);
    the shortcut only skips layers that do nothing for it (perf-anchors b: FastAPI's layers
    cost more than the verify on a trivial endpoint).
    """

    push_path: str = "/ssf/push"
    push_app: PushEndpoint | None = None

    @property
    def http_protocol(self) -> type[asyncio.Protocol] | str:
        """For ``uvicorn.Config(http=...)``: pushes answered straight off the socket, every
        other request by uvicorn's own HTTP protocol (:mod:`receiver.push_http`)."""
        if self.push_app is None:
            return "auto"
        return push_protocol(self.push_app, self.push_path)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.push_app is not None and scope["type"] == "http" and scope["path"] == self.push_path:
            await self.push_app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: ReceiverSettings | None = None,
    *,
    protected_demo: bool = True,
    policy: Policy | None = None,
    receiver: Receiver | None = None,
) -> ReceiverAPI:
    """The receiver service. Lifespan: discovery, stream reconciliation, verification, polling."""
    rcv = receiver or Receiver(settings)
    app = ReceiverAPI(title="SSF receiver", version="0.1.0", lifespan=rcv.lifespan)
    app.state.receiver = rcv
    # RFC 8935 push as a plain Starlette route on the FastAPI app (perf-anchors b).
    route = push_route(rcv)
    app.router.routes.insert(0, route)
    app.push_app = route.app if isinstance(route.app, PushEndpoint) else None

    @app.get("/health")
    async def health() -> JSONResponse:
        status = rcv.status()
        return JSONResponse(status, status_code=200 if status["ready"] or not status["issuer"] else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(
            rcv.metrics_text() + ops.metrics_text(), media_type="text/plain; version=0.0.4"
        )

    ops = install_ops(app, rcv)  # /healthz, /readyz, SET counts and log lines

    if protected_demo:
        app.mount("/protected", ContinuousAuthMiddleware(_protected_app(), receiver=rcv, policy=policy))
    return app
