"""``create_app``: the FastAPI application, its error handlers and the worker lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from ssf.errors import SSFError
from transmitter.api import JSON_HEADERS, build_router, hot_routes
from transmitter.auth import AuthError
from transmitter.console import build_console
from transmitter.errors import TooManyRequests
from transmitter.offload import Offload
from transmitter.ops import ObservedDeliveryWorker, install_ops
from transmitter.pg_listen import PgListener
from transmitter.service import Transmitter
from transmitter.settings import TransmitterSettings

__all__ = ["create_app"]

log = logging.getLogger("transmitter")

#: Errors that mean "the database is not there right now" (answered 503 + Retry-After).
_STORAGE_DOWN: tuple[type[Exception], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
)


def check_settings(settings: TransmitterSettings) -> None:
    """Without dev mode the issuer must be https (SSF §7.1)."""
    if not settings.issuer.startswith("https://") and not settings.dev_mode:
        raise ValueError("the issuer must be an https URL (set SSF_TRANSMITTER_DEV_MODE=1 for http)")
    if "?" in settings.issuer or "#" in settings.issuer:
        raise ValueError("the issuer must not have a query or fragment")


def create_app(
    settings: TransmitterSettings | None = None, *, transmitter: Transmitter | None = None
) -> FastAPI:
    """The transmitter service. ``transmitter`` lets a caller share the Python API object."""
    tx = transmitter or Transmitter(settings)
    check_settings(tx.settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tx.notifier.bind(asyncio.get_running_loop())
        worker = ObservedDeliveryWorker(tx, obs, offload)
        await worker.start()
        scheduler = _start_rotation(tx)
        listener = None
        if tx.settings.is_postgres:
            listener = PgListener(tx.engine, tx.settings, tx.notifier, tx.origin)
            listener.start()
        app.state.worker = worker
        app.state.pg_listener = listener
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.shutdown(wait=False)
            if listener is not None:
                await asyncio.to_thread(listener.stop)
            await worker.stop()
            offload.close()

    app = FastAPI(title="SSF transmitter", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.transmitter = tx
    # Publishing and polling: plain Starlette routes tried first (see ``hot_routes``).
    offload = Offload(max_workers=16)
    app.router.routes[0:0] = hot_routes(tx, offload)
    app.include_router(build_router(tx))
    obs = install_ops(app, tx)  # /healthz, /readyz, /metrics
    app.include_router(build_console(tx))  # /admin

    @app.exception_handler(SSFError)
    async def _ssf_error(_request: Request, exc: SSFError) -> JSONResponse:
        headers = dict(JSON_HEADERS)
        if isinstance(exc, TooManyRequests):
            headers["Retry-After"] = str(exc.retry_after)
        status = exc.status_code if exc.status_code < 500 else 400
        return JSONResponse(exc.to_body(), status_code=status, headers=headers)

    @app.exception_handler(AuthError)
    async def _auth_error(_request: Request, exc: AuthError) -> JSONResponse:
        headers = dict(JSON_HEADERS)
        headers["WWW-Authenticate"] = exc.www_authenticate()
        err = "invalid_token" if exc.error == "missing_token" else exc.error
        return JSONResponse(
            {"err": err, "description": exc.description}, status_code=exc.status, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {"err": "invalid_request", "description": "malformed request"}, 400, headers=JSON_HEADERS
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        body = {"err": codes.get(exc.status_code, "invalid_request"), "description": str(exc.detail)}
        return JSONResponse(body, exc.status_code, headers={**JSON_HEADERS, **(exc.headers or {})})

    async def _storage_down(_request: Request, exc: Exception) -> JSONResponse:
        # The database is unreachable: nothing was accepted (a publish answers only once its
        # SETs are committed); the caller retries. Never a 500 for an outage.
        log.warning("database unavailable: %s", type(exc).__name__)
        headers = {**JSON_HEADERS, "Retry-After": "1"}
        body = {"err": "temporarily_unavailable", "description": "storage is unavailable; retry later"}
        return JSONResponse(body, 503, headers=headers)

    for exc_type in _STORAGE_DOWN:
        app.add_exception_handler(exc_type, _storage_down)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(
            {"err": "server_error", "description": "internal error"}, 500, headers=JSON_HEADERS
        )

    return app


def _start_rotation(tx: Transmitter) -> Any:
    """Optional automatic key rotation (APScheduler); `ssf transmitter keys rotate` otherwise."""
    interval = tx.settings.key_rotation_interval
    if not interval:
        return None
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    scheduler = AsyncIOScheduler()

    async def rotate() -> None:
        await asyncio.to_thread(tx.keys.rotate_due, interval)

    scheduler.add_job(rotate, "interval", seconds=interval, id="ssf-key-rotation", coalesce=True)
    scheduler.start()
    return scheduler
