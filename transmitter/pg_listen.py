"""PostgreSQL LISTEN/NOTIFY: wake-ups across transmitter instances sharing one database.

After each commit that queues SETs (or changes a stream), an instance sends
``NOTIFY <channel>, '<origin>:<stream_id>,...'`` ('*' for the ids when the list is long); every
instance's listener thread feeds the ids to its :class:`~transmitter.notify.Notifier`, so a
long poll on instance B wakes at once for an event published on instance A, and B's push
worker picks up work without waiting for its next ``worker_poll_interval``. PostgreSQL also
delivers a notification to the session that sent it: a listener skips its own ``origin``,
whose waiters were woken in-process at commit (an echo would cost each publish a second
wake-up, and a long poll a second database query).

The NOTIFY is sent after the commit, on a connection of its own with ``synchronous_commit``
off (:class:`PgAnnouncer`), not inside the transaction that queued the SETs: PostgreSQL (up to
17) serialises every committing transaction that issued a NOTIFY on one lock held through its
WAL flush, so publishes on several instances (or threads) could not share a flush and their
throughput did not grow with instances. A notification is only a wake-up: if one is lost (a
crash between the commit and the NOTIFY), the other instances find the SETs on their next
``worker_poll_interval``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
from collections.abc import Iterable
from typing import Any

import psycopg
from sqlalchemy.engine import Engine

from transmitter.notify import Notifier
from transmitter.settings import TransmitterSettings

__all__ = ["PgAnnouncer", "PgListener", "channel_name"]

log = logging.getLogger("transmitter.pg_listen")
_MAX_PAYLOAD = 7000  # PostgreSQL's limit is 8000 bytes
_STATEMENT_TIMEOUT_MS = 2000


def channel_name(settings: TransmitterSettings) -> str:
    """One channel per schema: instances of different tenants/tests do not wake each other.

    A channel is an identifier of at most 63 bytes: ``pg_notify`` refuses a longer one while
    ``LISTEN`` cuts it, so a long schema name (or one needing quotes) is hashed instead; every
    instance derives the same name.
    """
    schema = settings.database_schema or "public"
    name = _CHANNEL_PREFIX + schema
    if len(name) > _MAX_IDENTIFIER or not _PLAIN.fullmatch(schema):
        name = _CHANNEL_PREFIX + hashlib.sha256(schema.encode()).hexdigest()[:40]
    return name


_CHANNEL_PREFIX = "ssf_outbox_"
_MAX_IDENTIFIER = 63  # bytes (NAMEDATALEN - 1); a plain name is ASCII
_PLAIN = re.compile(r"[A-Za-z0-9_]+")


def _payload(ids: Iterable[str], origin: str) -> str:
    joined = ",".join(sorted(set(ids)))
    if len(joined) > _MAX_PAYLOAD:
        joined = "*"
    return f"{origin}:{joined}"


def _dsn(engine: Engine) -> str:
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class PgAnnouncer:
    """Sends the NOTIFYs of one process after its commits, on one autocommit connection.

    Thread-safe (publishing runs on worker threads); a failure is logged and the connection
    opened again on the next call: a wake-up is never worth failing a publish for.
    """

    def __init__(self, engine: Engine, settings: TransmitterSettings, origin: str) -> None:
        self._dsn = _dsn(engine)
        self._channel = channel_name(settings)
        self._origin = origin
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None

    def send(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        if not ids:
            return
        payload = _payload(ids, self._origin)
        with self._lock:
            for _ in range(2):
                # A kept connection is found dead only when used (after a database restart):
                # then one more try on a new connection, or this wake-up would be lost.
                kept = self._conn is not None and not self._conn.closed
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=2)
                        # A NOTIFY-only transaction: nothing to wait for on disk (see module doc).
                        self._conn.execute("SET synchronous_commit TO off")
                        # Sent under the lock, after a publish's commit: a stuck server (or a
                        # full notification queue) must not hold every publishing thread.
                        self._conn.execute(f"SET statement_timeout TO {_STATEMENT_TIMEOUT_MS}")
                    self._conn.execute("SELECT pg_notify(%s, %s)", (self._channel, payload))
                    return
                except psycopg.Error:
                    self._drop()
                    if not kept:
                        log.warning("NOTIFY failed; other instances poll for the SETs", exc_info=True)
                        return

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


class PgListener:
    """A daemon thread holding one LISTEN connection; reconnects after errors."""

    def __init__(
        self, engine: Engine, settings: TransmitterSettings, notifier: Notifier, origin: str = ""
    ) -> None:
        self._dsn = _dsn(engine)
        self._channel = channel_name(settings)
        self._notifier = notifier
        self._origin = origin
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ssf-pg-listen", daemon=True)
        self.ready = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True) as conn:
                    conn.execute(f'LISTEN "{self._channel}"')
                    self.ready.set()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            origin, _, payload = note.payload.partition(":")
                            if self._origin and origin == self._origin:
                                continue
                            self._notifier.notify(payload.split(",") if payload else [])
            except psycopg.Error:
                log.warning("LISTEN connection lost; reconnecting", exc_info=True)
                self._stop.wait(1.0)
