"""Real services for tests: loopback uvicorn servers, PostgreSQL and Redis.

PostgreSQL (127.0.0.1:5432, database ``test``) and Redis (127.0.0.1:6379) are required in
CI (``CI=true``): there a missing service fails the test. Elsewhere the test is skipped
with a one-line reason.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

POSTGRES_URL = os.environ.get("SSF_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SSF_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, port: int) -> None:
    if _reachable(port):
        return
    if IN_CI:
        pytest.fail(f"{name} at 127.0.0.1:{port} is required in CI and is not reachable")
    pytest.skip(f"{name} not reachable at 127.0.0.1:{port}")


def require_postgres() -> str:
    require_service("PostgreSQL", 5432)
    return POSTGRES_URL


@contextlib.contextmanager
def postgres_schema(prefix: str = "t_") -> Iterator[str]:
    """A throwaway schema on the shared PostgreSQL; yields a URL whose search_path is it."""
    import secrets

    import sqlalchemy

    base = require_postgres()
    schema = prefix + secrets.token_hex(4)
    engine = sqlalchemy.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{base}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def require_redis() -> str:
    require_service("Redis", 6379)
    return REDIS_URL


class ThreadedServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test process keeps its own handlers
        pass


@contextlib.contextmanager
def serve(app: Any, *, port: int | None = None, **config: Any) -> Iterator[str]:
    """Run an ASGI app on a real loopback port in a thread; yields its base URL."""
    port = port or free_port()
    if "http" not in config and hasattr(app, "http_protocol"):
        config["http"] = app.http_protocol  # the receiver service: served as `ssf receiver serve` does
    cfg = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on", **config
    )
    server = ThreadedServer(cfg)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
