"""PostgreSQL wake-ups across instances work whatever the schema is called."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy

from tests.support.services import require_postgres
from transmitter.notify import Notifier
from transmitter.pg_listen import PgAnnouncer, PgListener, channel_name
from transmitter.settings import TransmitterSettings

LONG = "tenant_" + "x" * 56  # a valid schema name (63 bytes); ssf_outbox_ + it is not
QUOTED = 'Tenant "A"; drop'


@pytest.mark.parametrize("schema", [None, "t_short", LONG, LONG[:-1] + "y", QUOTED])
def test_a_notify_from_one_instance_wakes_the_other(schema: str | None) -> None:
    url = require_postgres()
    settings = TransmitterSettings(database_url=url, database_schema=schema)
    engine = sqlalchemy.create_engine(url)

    async def main() -> bool:
        notifier = Notifier()
        notifier.bind(asyncio.get_running_loop())
        woken = notifier.register("s_1")
        listener = PgListener(engine, settings, notifier, origin="b")
        announcer = PgAnnouncer(engine, settings, origin="a")
        listener.start()
        try:
            assert await asyncio.to_thread(listener.ready.wait, 10)
            await asyncio.to_thread(announcer.send, ["s_1"])
            await asyncio.wait_for(woken.wait(), 5)
            return True
        finally:
            announcer.close()
            await asyncio.to_thread(listener.stop)

    try:
        assert asyncio.run(main())
    finally:
        engine.dispose()


def test_channels_are_identifiers_and_distinct_per_schema() -> None:
    names = [
        channel_name(TransmitterSettings(database_schema=s))
        for s in (None, "a", LONG, LONG[:-1] + "y", QUOTED)
    ]
    assert len(set(names)) == len(names)
    assert all(len(n.encode()) <= 63 and n.replace("_", "").isalnum() for n in names)
    assert names[:2] == ["ssf_outbox_public", "ssf_outbox_a"]  # unchanged where they worked
