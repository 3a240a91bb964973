"""PostgreSQL LISTEN/NOTIFY: wake-ups across transmitter instances sharing one database.

After each commit that queues SETs (or changes a stream), an instance sends
``NOTIFY <channel>, '<origin>:<stream_id>,...'`` ('*' for the ids when the list is long); every
instance's listener thread feeds the ids to its :class:`~transmitter.notify.Notifier`, so a
long poll on instance B wakes at once for an event published on instance A, and B's push
worker picks up work without waiting for its next ``worker_poll_interval``. PostgreSQL also
delivers a notification to the session that sent it: a listener skips its own ``origin``,
whose waiters were woken in-process at commit (an echo would cost each publish a second
wake-up, and a long poll a second database query).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from transmitter.notify import Notifier
from transmitter.settings import TransmitterSettings

__all__ = ["PgListener", "channel_name", "pg_notify"]

log = logging.getLogger("transmitter.pg_listen")
_MAX_PAYLOAD = 7000  # PostgreSQL's limit is 8000 bytes
_NOTIFY = text("SELECT pg_notify(:ch, :p)")


def channel_name(settings: TransmitterSettings) -> str:
    """One channel per schema: instances of different tenants/tests do not wake each other."""
    return "ssf_outbox_" + (settings.database_schema or "public")


def pg_notify(conn: Connection, channel: str, ids: Iterable[str], origin: str = "") -> None:
    """Queue a notification in the caller's transaction: PostgreSQL delivers it at commit."""
    payload = ",".join(sorted(set(ids)))
    if not payload:
        return
    if len(payload) > _MAX_PAYLOAD:
        payload = "*"
    conn.execute(_NOTIFY, {"ch": channel, "p": f"{origin}:{payload}"})


class PgListener:
    """A daemon thread holding one LISTEN connection; reconnects after errors."""

    def __init__(
        self, engine: Engine, settings: TransmitterSettings, notifier: Notifier, origin: str = ""
    ) -> None:
        url = engine.url.set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
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
