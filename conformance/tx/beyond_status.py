"""Kit modules: stream-updated on transmitter-initiated changes, paused and disabled streams,
inactivity timeout (SSF 8.1.1, 8.1.2, 8.1.5)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from conformance.registry import Check, ModuleRun, Severity, SkipModule, check, module
from conformance.tx.beyond_common import (
    KIT,
    markers,
    need_publish,
    publish_marked,
)
from conformance.tx.context import (
    STREAM_CREATE,
    TEARDOWN_DELETE,
    Stream,
    TransmitterKit,
    json_of,
)
from conformance.tx.setchecks import PUSH_CHECKS, SET_CHECKS, Received
from conformance.tx.suite_streams import PREAMBLE
from ssf import uris

F, W, INFO = Severity.FAILURE, Severity.WARNING, Severity.INFO


# ---- stream-updated on transmitter-initiated changes ---------------------------------------

STREAM_UPDATED_SENT = check(
    "stream-updated.sent",
    "SSF 8.1.2 / 8.1.5",
    F,
    "a transmitter-initiated status change sends stream-updated",
)
STREAM_UPDATED_STATUS = check(
    "stream-updated.status", "SSF 8.1.5", F, "the stream-updated event names the new status"
)


def updated_with(status: str) -> Any:
    return lambda recs: any((r.event(uris.STREAM_UPDATED) or {}).get("status") == status for r in recs)


@module(
    "kit-transmitter-stream-updated",
    "transmitter",
    "Pause and re-enable a stream from the transmitter side (--status-cmd); stream-updated must follow",
    (
        *PREAMBLE,
        STREAM_CREATE,
        TEARDOWN_DELETE,
        STREAM_UPDATED_SENT,
        STREAM_UPDATED_STATUS,
        *SET_CHECKS,
        *PUSH_CHECKS,
    ),
    origin=KIT,
)
async def stream_updated(kit: TransmitterKit, run: ModuleRun) -> None:
    if not kit.opts.status_cmd:
        raise SkipModule("no --status-cmd to change a stream's status on the transmitter's side")
    await kit.setup(run)
    _, stream = await kit.create_stream(run)
    assert stream is not None
    try:
        got: list[Received] = []
        for status in ("paused", "enabled"):
            ok = await kit.run_cmd(kit.opts.status_cmd, stream_id=stream.id, status=status)
            if not ok:
                raise SkipModule(f"--status-cmd failed for {status}")
            recs = await kit.receive(run, stream, updated_with(status))
            got += recs
            ups = [r for r in recs if r.event(uris.STREAM_UPDATED) is not None]
            run.expect(
                STREAM_UPDATED_SENT, bool(ups), f"no stream-updated after the change to {status}", "sent"
            )
            if ups:
                st = (ups[-1].event(uris.STREAM_UPDATED) or {}).get("status")
                run.expect(
                    STREAM_UPDATED_STATUS,
                    st == status,
                    f"stream-updated status {st!r}, expected {status}",
                    status,
                )
        kit.inspect(run, stream, got)
    finally:
        await kit.delete_stream(run, stream)


# ---- paused and disabled streams ------------------------------------------------------------

PAUSE_OK = check(
    "paused.status-accepted", "SSF 8.1.2.2 / CAEPIOP 2.3.5", F, "status POST paused / enabled succeeds"
)
PAUSED_NO_DELIVERY = check(
    "paused.no-delivery", "SSF 8.1.2.1", F, "nothing is delivered while the stream is paused"
)
PAUSED_DELIVERED = check(
    "paused.delivered-after-enable", "SSF 8.1.2.1", W, "held events are delivered on re-enable"
)
PAUSED_ORDER = check(
    "paused.order",
    "SSF 8.1.2.1",
    F,
    "held events about one subject arrive in generation order (or only the latest)",
)
DISABLE_OK = check("disabled.status-accepted", "SSF 8.1.2.2", F, "status POST disabled succeeds")
DISABLED_NO_DELIVERY = check("disabled.no-delivery", "SSF 8.1.2.1", F, "nothing is delivered while disabled")
DISABLED_DROPS = check("disabled.drops", "SSF 8.1.2.1", F, "events published while disabled are not kept")
HELD = 3


async def _status_stream(kit: TransmitterKit, run: ModuleRun) -> Stream:
    """Set up, require the status endpoint and create the stream a status module works on."""
    await kit.setup(run)
    kit.need_endpoint("status_endpoint")
    _, stream = await kit.create_stream(run)
    assert stream is not None
    return stream


async def _set_status(kit: TransmitterKit, run: ModuleRun, stream: Stream, c: Check, status: str) -> None:
    """Status POST that must succeed (200 or 202) for the module to go on."""
    r = await kit.set_status(stream, status)
    verb = status.removesuffix("d")
    run.expect(c, r.status_code in (200, 202), f"{verb}: HTTP {r.status_code}", status, stop=True)


@module(
    "kit-transmitter-paused-stream",
    "transmitter",
    "A paused stream holds events, then delivers them in order on re-enable",
    (
        *PREAMBLE,
        STREAM_CREATE,
        TEARDOWN_DELETE,
        PAUSE_OK,
        PAUSED_NO_DELIVERY,
        PAUSED_DELIVERED,
        PAUSED_ORDER,
        *SET_CHECKS,
        *PUSH_CHECKS,
    ),
    origin=KIT,
)
async def paused_stream(kit: TransmitterKit, run: ModuleRun) -> None:
    need_publish(kit)
    stream = await _status_stream(kit, run)
    try:
        await kit.ensure_subject(stream, kit.opts.subject)
        await _set_status(kit, run, stream, PAUSE_OK, "paused")
        prefix = f"kit-held-{uuid.uuid4().hex[:8]}-"
        sent = [f"{prefix}{i}" for i in range(HELD)]
        for m in sent:
            if not await publish_marked(kit, stream, m):
                raise SkipModule("publishing an event failed")
        held = await kit.receive(
            run, stream, lambda rs: bool(markers(rs, prefix)), timeout=kit.opts.settle, ack=False
        )
        early = markers(held, prefix)
        run.expect(
            PAUSED_NO_DELIVERY,
            not early,
            f"{len(early)} event(s) delivered while paused",
            "nothing delivered",
        )
        await _set_status(kit, run, stream, PAUSE_OK, "enabled")
        recs = await kit.receive(run, stream, lambda rs: len(markers(rs, prefix)) >= HELD)
        kit.inspect(run, stream, held + recs)
        got = early + markers(recs, prefix)
        run.expect(
            PAUSED_DELIVERED, set(got) >= set(sent), f"delivered {len(set(got))} of {HELD}", "all delivered"
        )
        # in order, or only the latest ones: what arrived must be a suffix-respecting subsequence
        order = [sent.index(m) for m in got if m in sent]
        ordered = order == sorted(order)
        if kit.opts.delivery == "push":
            run.expect(PAUSED_ORDER, ordered, f"arrival order {order}", "generation order")
        else:
            run.skip(PAUSED_ORDER, "poll responses carry no order; not judged")
    finally:
        await kit.delete_stream(run, stream)


@module(
    "kit-transmitter-disabled-stream",
    "transmitter",
    "A disabled stream delivers nothing and keeps nothing",
    (
        *PREAMBLE,
        STREAM_CREATE,
        TEARDOWN_DELETE,
        DISABLE_OK,
        DISABLED_NO_DELIVERY,
        DISABLED_DROPS,
        *PUSH_CHECKS,
    ),
    origin=KIT,
)
async def disabled_stream(kit: TransmitterKit, run: ModuleRun) -> None:
    need_publish(kit)
    stream = await _status_stream(kit, run)
    try:
        await kit.ensure_subject(stream, kit.opts.subject)
        await _set_status(kit, run, stream, DISABLE_OK, "disabled")
        prefix = f"kit-dropped-{uuid.uuid4().hex[:8]}-"
        for i in range(2):
            await publish_marked(kit, stream, f"{prefix}{i}")
        recs = await kit.receive(run, stream, lambda rs: bool(markers(rs, prefix)), timeout=kit.opts.settle)
        run.expect(
            DISABLED_NO_DELIVERY,
            not markers(recs, prefix),
            "events delivered while disabled",
            "nothing delivered",
        )
        r = await kit.set_status(stream, "enabled")
        if r.status_code not in (200, 202):
            run.skip(
                DISABLED_DROPS, f"the transmitter does not re-enable a disabled stream (HTTP {r.status_code})"
            )
            return
        recs = await kit.receive(
            run, stream, lambda rs: bool(markers(rs, prefix)), timeout=kit.opts.settle * 2
        )
        kept = markers(recs, prefix)
        run.expect(
            DISABLED_DROPS, not kept, f"{len(kept)} event(s) from the disabled period delivered", "dropped"
        )
    finally:
        await kit.delete_stream(run, stream)


# ---- inactivity timeout ----------------------------------------------------------------------

INACTIVITY_RESET = check(
    "inactivity.timer-reset", "SSF 8.1.1", F, "management calls about the stream restart the inactivity timer"
)
INACTIVITY_EVENT = check(
    "inactivity.stream-updated",
    "SSF 8.1.1 / 8.1.5",
    F,
    "pausing or disabling for inactivity sends stream-updated",
)
INACTIVITY_ACTS = check(
    "inactivity.acts", "SSF 8.1.1", INFO, "the transmitter acts when inactivity_timeout elapses"
)


@module(
    "kit-transmitter-inactivity-timeout",
    "transmitter",
    "inactivity_timeout: activity keeps the stream alive; expiry sends stream-updated",
    (
        *PREAMBLE,
        STREAM_CREATE,
        TEARDOWN_DELETE,
        INACTIVITY_RESET,
        INACTIVITY_EVENT,
        INACTIVITY_ACTS,
        *SET_CHECKS,
        *PUSH_CHECKS,
    ),
    origin=KIT,
)
async def inactivity(kit: TransmitterKit, run: ModuleRun) -> None:
    stream = await _status_stream(kit, run)
    try:
        timeout = stream.config.get("inactivity_timeout")
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise SkipModule("the stream has no inactivity_timeout")
        if timeout * 2.5 > kit.opts.max_wait:
            raise SkipModule(f"inactivity_timeout {timeout}s is longer than --max-wait allows")
        # keep it alive with status reads (management calls referencing the stream)
        end = time.monotonic() + timeout * 1.6
        while time.monotonic() < end:
            await asyncio.sleep(timeout / 4)
            r = await kit.get_status(stream)
        st = (json_of(r) or {}).get("status") if r.status_code == 200 else None
        run.expect(INACTIVITY_RESET, st == "enabled", f"status {st!r} despite activity", "still enabled")
        await asyncio.sleep(timeout * 1.5)
        r = await kit.get_status(stream)
        data = json_of(r)
        gone = r.status_code == 404
        st = data.get("status") if isinstance(data, dict) else None
        acted = gone or st in ("paused", "disabled")
        run.record(INACTIVITY_ACTS, acted, f"after expiry: HTTP {r.status_code}, status {st!r}")
        if not acted or gone:
            run.skip(INACTIVITY_EVENT, "the stream was not paused or disabled")
            return
        recs = await kit.receive(run, stream, updated_with(str(st)))
        kit.inspect(run, stream, recs)
        run.expect(
            INACTIVITY_EVENT,
            updated_with(str(st))(recs),
            f"stream {st} without a stream-updated event",
            "sent",
        )
    finally:
        await kit.delete_stream(run, stream)
