"""Private Redis and PostgreSQL servers a test may stop, kill and restart.

The shared servers (127.0.0.1:5432, 127.0.0.1:6379) serve every other test running at the
same time, so a test that takes a backend away starts its own on a free loopback port:

- :class:`RedisServer`: ``redis-server`` without persistence (``--save "" --appendonly
  no``): a restart comes back empty, the harshest case for the receivers sharing it; with
  ``persistent=True`` an append-only file fsynced on every write keeps everything.
- :class:`PgCluster`: a throw-away cluster made with ``initdb`` (trust auth on 127.0.0.1)
  and driven with ``pg_ctl``. PostgreSQL refuses to run as root, so as root every command
  runs as the ``postgres`` user (``runuser``) on a directory that user owns.

In CI (``CI=true``) a missing binary fails the test; elsewhere it skips with one line.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.services import IN_CI, free_port

__all__ = ["PgCluster", "RedisServer", "pg_cluster", "redis_server"]


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required in CI and is not installed")
    pytest.skip(f"{what} not installed")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait(pred: object, timeout: float, what: str) -> None:
    assert callable(pred)
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}")
        time.sleep(0.05)


# --- Redis ---------------------------------------------------------------------------------
class RedisServer:
    """One ``redis-server`` on 127.0.0.1:``port``; :meth:`stop` and :meth:`start` keep the port."""

    def __init__(self, workdir: Path, binary: str, *, persistent: bool = False) -> None:
        self.workdir = workdir
        self.binary = binary
        self.persistent = persistent
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--appendfsync", "always",
            "--dir", str(self.workdir),
            "--logfile", str(self.workdir / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.starts += 1

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited: {self.log()[-1500:]}")
            return self.ping()

        _wait(up, 30, f"redis-server up on port {self.port}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, how: str = "term") -> None:
        """``term``: SIGTERM (a clean shutdown); ``nosave``: the ``SHUTDOWN NOSAVE`` command;
        ``kill``: SIGKILL. Returns once the port is closed."""
        proc = self.proc
        assert proc is not None and proc.poll() is None, "not running"
        if how == "nosave":
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 2) as s:
                s.sendall(b"SHUTDOWN NOSAVE\r\n")
                s.recv(64)
        elif how == "kill":
            proc.send_signal(signal.SIGKILL)
        else:
            proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        _wait(lambda: not _port_open(self.port), 10, "redis port closed")

    def log(self) -> str:
        path = self.workdir / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def redis_server(workdir: Path, *, persistent: bool = False) -> Iterator[RedisServer]:
    """A private, started ``redis-server`` (skips, or fails in CI, without the binary)."""
    binary = shutil.which("redis-server")
    if binary is None:
        _missing("redis-server")
    assert binary is not None
    workdir.mkdir(parents=True, exist_ok=True)
    server = RedisServer(workdir, binary, persistent=persistent)
    try:
        server.start()
        yield server
    finally:
        server.close()


# --- PostgreSQL ----------------------------------------------------------------------------
def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PgCluster:
    """A private PostgreSQL cluster on 127.0.0.1:``port`` (trust auth, database ``postgres``)."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.logfile = root / "postgres.log"
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise AssertionError(
                f"{' '.join(args[:2])} failed ({done.returncode}): "
                f"{done.stderr.decode(errors='replace')[-1500:]} {self.log()[-1500:]}"
            )
        return done

    def init(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\n"
                # a throw-away cluster: crash safety is not what the tests judge
                "fsync = off\nfull_page_writes = off\nmax_connections = 100\n"
            )

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast") -> None:
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-m", mode, "-w", "-t", "60", "restart"
        )

    def running(self) -> bool:
        return _port_open(self.port)

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self.stop("immediate")


@contextlib.contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    """A private, started PostgreSQL cluster, removed afterwards (skips, or fails in CI,
    without ``initdb``)."""
    bindir = _pg_bin()
    if bindir is None:
        _missing("PostgreSQL server binaries (initdb, pg_ctl)")
    assert bindir is not None
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        _missing("runuser (to run PostgreSQL as the postgres user)")
    # Not under pytest's tmp_path: as root that is mode 0700, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="ssf-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    cluster = PgCluster(bindir, root)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.close()
        shutil.rmtree(root, ignore_errors=True)
