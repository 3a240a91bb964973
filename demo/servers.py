"""Real uvicorn servers on loopback ports, each in its own thread with its own event loop."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

__all__ = ["ServiceThread", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the demo's main thread keeps Ctrl-C
        pass


class ServiceThread:
    """One ASGI app served on ``127.0.0.1:port`` until :meth:`stop`."""

    def __init__(self, name: str, app: Any, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            log_config=None,  # records go to the demo's log file, not the terminal
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        self._server = _Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"demo-{name}", daemon=True)

    def start(self, timeout: float = 30.0) -> ServiceThread:
        """Start and wait until the app's start-up (lifespan) has finished and the port listens."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"{self.name} failed to start (see the log)")
            if time.monotonic() > deadline:
                self._server.should_exit = True
                raise RuntimeError(f"{self.name} did not start within {timeout:.0f} s")
            time.sleep(0.01)
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and self._server.started

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the server to finish (lifespan shutdown runs); True once its thread has ended."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()
