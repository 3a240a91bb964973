"""The outbox schema: delivery order read off an index, and databases of earlier versions
brought up to it at start (both SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy

from transmitter.db import DELIVERY_ORDER_INDEX, create_schema, make_engine
from transmitter.delivery import _BATCH_SQL
from transmitter.outbox import _poll_sql
from transmitter.settings import TransmitterSettings


def _indexes(engine: sqlalchemy.Engine) -> set[str]:
    return {i["name"] for i in sqlalchemy.inspect(engine).get_indexes("ssf_outbox") if i["name"]}


def test_an_earlier_database_gets_the_delivery_order_index(db_config: dict[str, Any], tmp_path: Path) -> None:
    settings = TransmitterSettings(dev_mode=True, secret_file=tmp_path / "secret", **db_config)
    engine = make_engine(settings)
    try:
        create_schema(engine, settings)
        with engine.begin() as conn:  # as the previous version left it
            conn.execute(sqlalchemy.text(f"DROP INDEX {DELIVERY_ORDER_INDEX}"))
            conn.execute(
                sqlalchemy.text(
                    "CREATE INDEX ix_ssf_outbox_stream_state ON ssf_outbox (stream_id, state, priority, id)"
                )
            )
        assert DELIVERY_ORDER_INDEX not in _indexes(engine)
        create_schema(engine, settings)
        create_schema(engine, settings)  # again: nothing to do, no error
        found = _indexes(engine)
        assert DELIVERY_ORDER_INDEX in found and "ix_ssf_outbox_stream_state" not in found
    finally:
        engine.dispose()


def test_sqlite_reads_the_next_sets_off_the_index_without_sorting(tmp_path: Path) -> None:
    """A stream's whole pending backlog was sorted on every poll and every push batch."""
    settings = TransmitterSettings(
        dev_mode=True, secret_file=tmp_path / "secret", database_url=f"sqlite:///{tmp_path / 'tx.db'}"
    )
    engine = make_engine(settings)
    try:
        create_schema(engine, settings)
        with engine.connect() as conn:
            for sql, args in (
                (_poll_sql("?", False), ("s", "pending", 10)),
                (_poll_sql("?", True), ("s", "pending", True, 10)),
                (_BATCH_SQL["?"], ("s", "pending", "me", "push", True, 10)),
            ):
                plan = " | ".join(
                    row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, args).fetchall()
                )
                assert DELIVERY_ORDER_INDEX in plan and "TEMP B-TREE" not in plan, plan
    finally:
        engine.dispose()


def test_the_outbox_insert_writes_every_member_a_row_is_built_with(
    db_config: dict[str, Any], tmp_path: Path
) -> None:
    from ssf.events import SessionRevoked
    from ssf.keys import generate_signing_key
    from ssf.subjects import Subject
    from transmitter import outbox
    from transmitter.db import begin, outbox_t

    settings = TransmitterSettings(dev_mode=True, secret_file=tmp_path / "secret", **db_config)
    engine = make_engine(settings)
    try:
        create_schema(engine, settings)
        rows = [
            outbox.build(
                issuer="https://tx.example",
                key=generate_signing_key("ES256"),
                stream_id=f"s{i}",
                aud="https://rx.example",
                subject=Subject.email(f"u{i}@example.com"),
                event_type=SessionRevoked.event_type,
                event=SessionRevoked(),
                control=i == 1,
                priority=i,
                now=1000.0 + i,
            )
            for i in range(3)
        ]
        with begin(engine) as conn:
            outbox.insert(conn, rows)
        with engine.connect() as conn:
            stored = conn.execute(sqlalchemy.select(outbox_t).order_by(outbox_t.c.id)).mappings().all()
        assert [{c: r[c] for c in rows[0]} for r in stored] == rows
        assert all(r["id"] is not None and r["done_at"] is None and r["last_error"] is None for r in stored)
    finally:
        engine.dispose()


def test_sqlite_database_is_in_wal_mode(tmp_path: Path) -> None:
    """The default store: a SQLite file in WAL mode (readers never wait for the writer)."""
    from transmitter.service import Transmitter

    path = tmp_path / "tx.db"
    tx = Transmitter(
        TransmitterSettings(dev_mode=True, secret_file=tmp_path / "secret", database_url=f"sqlite:///{path}")
    )
    tx.close()
    import sqlite3

    with sqlite3.connect(path) as conn:  # a fresh connection: the mode is the file's own
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
