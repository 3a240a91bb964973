"""Kit modules: complex-subject matching, critical_subject_members, and one event of every
delivered type (SSF 3.6, 8.1.3, CAEP, RISC)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from conformance.registry import ModuleRun, Severity, SkipModule, check, module
from conformance.tx.beyond_common import (
    KIT,
    marker_of,
    markers,
    need_publish,
    publish_marked,
)
from conformance.tx.context import (
    STREAM_CREATE,
    TEARDOWN_DELETE,
    TransmitterKit,
)
from conformance.tx.setchecks import PUSH_CHECKS, SET_CHECKS, Received
from conformance.tx.suite_streams import PREAMBLE
from conformance.tx.suite_verification import event_payload
from ssf import uris

F, W, INFO = Severity.FAILURE, Severity.WARNING, Severity.INFO


# ---- subjects and complex-subject matching --------------------------------------------------

MATCH_ADD = check("matching.add-200", "SSF 8.1.3.2", W, "adding a complex subject answers 200")
MATCH_SENDS = check(
    "matching.sends-matching", "SSF 8.1.3.1", W, "events for subjects matching an added one are sent"
)
MATCH_WITHHOLDS = check(
    "matching.withholds-non-matching",
    "SSF 8.1.3.1 / 9",
    F,
    "events for subjects that match nothing added are not sent",
)
MATCH_BAD_SUBJECT = check(
    "matching.invalid-subject-400", "SSF 8.1.3.2", W, "adding a malformed subject answers 400"
)
MATCH_REMOVE = check("matching.remove-204", "SSF 8.1.3.3", W, "removing a subject answers 204")


def cx(**members: dict[str, str]) -> dict[str, Any]:
    return {"format": "complex", **members}


def em(addr: str) -> dict[str, str]:
    return {"format": "email", "email": addr}


@module(
    "kit-transmitter-subject-matching",
    "transmitter",
    "Subject add/remove with the complex-subject matching rule (missing member = wildcard)",
    (
        *PREAMBLE,
        STREAM_CREATE,
        TEARDOWN_DELETE,
        MATCH_ADD,
        MATCH_SENDS,
        MATCH_WITHHOLDS,
        MATCH_BAD_SUBJECT,
        MATCH_REMOVE,
        *PUSH_CHECKS,
    ),
    profiles=("default",),
    origin=KIT,
)
async def subject_matching(kit: TransmitterKit, run: ModuleRun) -> None:
    need_publish(kit)
    await kit.setup(run)
    kit.need_endpoint("add_subject_endpoint")
    if kit.metadata.get("default_subjects") == "ALL":
        raise SkipModule("default_subjects is ALL: every subject is included")
    _, stream = await kit.create_stream(run)
    assert stream is not None
    tag = uuid.uuid4().hex[:8]
    t1, u1, u2, d2, u3 = (f"{n}-{tag}@example.com" for n in ("tenant1", "user1", "user2", "device2", "user3"))
    added = [
        cx(tenant=em(t1)),
        cx(user=em(u2), device=em(d2)),
        cx(user=em(u3), group=em(f"g1-{tag}@example.com")),
    ]
    cases = [  # (marker, event subject, should be sent)
        ("match-tenant", cx(tenant=em(t1), user=em(u1)), True),
        ("match-wildcard", cx(user=em(u2)), True),
        ("nomatch-group", cx(user=em(u3), group=em(f"g2-{tag}@example.com")), False),
        ("nomatch-unknown", em(f"never-added-{tag}@example.com"), False),
    ]
    try:
        for s in added:
            r = await kit.add_subject(stream, s)
            run.expect_status(MATCH_ADD, r.status_code, (200,), "add complex subject")
        r = await kit.call(
            "POST",
            kit.need_endpoint("add_subject_endpoint"),
            body={"stream_id": stream.id, "subject": {"email": 5}},
        )
        run.expect_status(MATCH_BAD_SUBJECT, r.status_code, (400,), "add malformed subject")
        prefix = f"kit-match-{tag}-"
        for name, subject, _ in cases:
            await publish_marked(kit, stream, prefix + name, subject)
        sentinel = prefix + "sentinel"
        await publish_marked(kit, stream, sentinel, cx(tenant=em(t1)))
        recs = await kit.receive(run, stream, lambda rs: sentinel in markers(rs, prefix))
        if sentinel not in markers(recs, prefix):
            raise SkipModule(
                "even an event for an added subject was not delivered; matching cannot be judged"
            )
        await asyncio.sleep(0.2)
        recs += await kit.receive(run, stream, lambda rs: False, timeout=kit.opts.settle / 2)
        got = set(markers(recs, prefix))
        for name, _, expected in cases:
            if expected:
                run.expect(MATCH_SENDS, prefix + name in got, f"{name}: matching event not sent", name)
            else:
                severity_ok = prefix + name not in got
                run.expect(
                    MATCH_WITHHOLDS, severity_ok, f"{name}: event sent for a subject never added", name
                )
        if kit.endpoint("remove_subject_endpoint"):
            r = await kit.remove_subject(stream, added[0])
            run.expect_status(MATCH_REMOVE, r.status_code, (204,), "remove complex subject")
    finally:
        await kit.delete_stream(run, stream)


# ---- critical_subject_members -----------------------------------------------------------------

CRITICAL_KEPT = check(
    "critical.members-delivered",
    "SSF 3.6",
    F,
    "subjects keep every critical_subject_members member on delivery",
)


@module(
    "kit-transmitter-critical-subject-members",
    "transmitter",
    "Events about complex subjects keep the members the transmitter declares critical",
    (*PREAMBLE, STREAM_CREATE, TEARDOWN_DELETE, CRITICAL_KEPT, *SET_CHECKS, *PUSH_CHECKS),
    origin=KIT,
)
async def critical_members(kit: TransmitterKit, run: ModuleRun) -> None:
    need_publish(kit)
    await kit.setup(run)
    crit = kit.metadata.get("critical_subject_members")
    if not isinstance(crit, list) or not crit:
        raise SkipModule("the metadata declares no critical_subject_members")
    _, stream = await kit.create_stream(run)
    assert stream is not None
    try:
        tag = uuid.uuid4().hex[:8]
        subject = cx(**{str(m): em(f"{m}-{tag}@example.com") for m in crit if isinstance(m, str)})
        if "user" not in subject:
            subject["user"] = em(f"user-{tag}@example.com")
        await kit.ensure_subject(stream, subject)
        marker = f"kit-critical-{tag}"
        await publish_marked(kit, stream, marker, subject)
        recs = await kit.receive(run, stream, lambda rs: marker in markers(rs, marker))
        hits = [r for r in recs if marker_of(r) == marker]
        if not hits:
            raise SkipModule("the event about the complex subject was not delivered")
        kit.inspect(run, stream, hits)
        sub = hits[0].claims.get("sub_id") or {}
        lost = [m for m in crit if not isinstance(sub, dict) or sub.get(m) != subject.get(m)]
        run.expect(CRITICAL_KEPT, not lost, f"critical members lost or changed: {lost}", "kept")
    finally:
        await kit.delete_stream(run, stream)


# ---- every event type the transmitter offers ---------------------------------------------------

CATALOGUE_DELIVERED = check(
    "catalogue.delivered", "SSF 8.1.1", W, "every published event type in events_delivered is delivered"
)


def catalogue_subject(uri: str, tag: str) -> dict[str, Any]:
    return {"format": "email", "email": f"catalogue-{tag}@example.com"}


@module(
    "kit-transmitter-event-catalogue",
    "transmitter",
    "Publish one event of every type the stream delivers and judge each SET's members",
    (*PREAMBLE, STREAM_CREATE, TEARDOWN_DELETE, CATALOGUE_DELIVERED, *SET_CHECKS, *PUSH_CHECKS),
    origin=KIT,
)
async def event_catalogue(kit: TransmitterKit, run: ModuleRun) -> None:
    need_publish(kit)
    await kit.setup(run)
    body, key, authz = kit.create_body()
    # ask for every standard CAEP and RISC type; the transmitter delivers what it supports
    from ssf.events import CAEP_EVENTS, RISC_EVENTS

    body["events_requested"] = sorted((CAEP_EVENTS | RISC_EVENTS) - {uris.RISC_BASE + "sessions-revoked"})
    _, stream = await kit.create_stream(run, body=body)
    assert stream is not None
    stream.key, stream.authorization = key, authz
    try:
        tag = uuid.uuid4().hex[:8]
        subject = catalogue_subject("", tag)
        await kit.ensure_subject(stream, subject)
        delivered = [u for u in stream.config.get("events_delivered") or [] if isinstance(u, str)]
        published: list[str] = []
        for uri in delivered:
            if uri in (uris.VERIFICATION, uris.STREAM_UPDATED):
                continue
            if await kit.publish(
                stream, uri, event_payload(uri), subject=subject, txn=f"kit-cat-{tag}-{len(published)}"
            ):
                published.append(uri)
        if not published:
            raise SkipModule("no event could be published")

        def complete(recs: list[Received]) -> bool:
            return {r.event_type for r in recs} >= set(published)

        recs = await kit.receive(run, stream, complete)
        kit.inspect(run, stream, recs)
        got = {r.event_type for r in recs}
        missing = [u.rsplit("/", 1)[-1] for u in published if u not in got]
        run.expect(
            CATALOGUE_DELIVERED,
            not missing,
            f"not delivered: {', '.join(missing)}",
            f"{len(published)} types",
        )
    finally:
        await kit.delete_stream(run, stream)
