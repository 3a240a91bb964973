"""Helpers shared by the kit's own transmitter modules (beyond the OpenID suite: digest 12
item 16 and the checklist rows the suite leaves out)."""

from __future__ import annotations

from typing import Any

from conformance.registry import Severity, SkipModule
from conformance.tx.context import (
    Stream,
    TransmitterKit,
)
from conformance.tx.setchecks import Received
from conformance.tx.suite_verification import event_payload
from ssf import uris

F, W, INFO = Severity.FAILURE, Severity.WARNING, Severity.INFO
KIT = "kit"
SESSION_REVOKED = uris.CAEP_BASE + "session-revoked"


def marker_of(rec: Received) -> str | None:
    ev = rec.event(SESSION_REVOKED)
    ra = ev.get("reason_admin") if ev else None
    v = ra.get("en") if isinstance(ra, dict) else None
    return v if isinstance(v, str) else None


def markers(recs: list[Received], prefix: str) -> list[str]:
    return [m for r in recs if (m := marker_of(r)) is not None and m.startswith(prefix)]


async def publish_marked(
    kit: TransmitterKit, stream: Stream, marker: str, subject: dict[str, Any] | None = None
) -> bool:
    return await kit.publish(
        stream, SESSION_REVOKED, event_payload(SESSION_REVOKED, marker), subject=subject, txn=marker
    )


def need_publish(kit: TransmitterKit) -> None:
    if not kit.can_publish:
        raise SkipModule("no way to trigger events: give --publish-cmd or publish credentials")
