"""Kit modules: verification rate limits, long polling, poll acknowledgements, JWKS rotation (SSF
8.1.4.2, RFC 8936, SSF 7.1)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from conformance.registry import ModuleRun, Severity, SkipModule, check, module
from conformance.tx.beyond_common import (
    KIT,
    publish_marked,
)
from conformance.tx.context import (
    STREAM_CREATE,
    TEARDOWN_DELETE,
    Stream,
    TransmitterKit,
    fresh_state,
    json_of,
)
from conformance.tx.setchecks import PUSH_CHECKS, SET_CHECKS, Received
from conformance.tx.suite_streams import PREAMBLE
from conformance.tx.suite_verification import TRIGGER, has_state

F, W, INFO = Severity.FAILURE, Severity.WARNING, Severity.INFO


# ---- min_verification_interval and 429 ----------------------------------------------------------

RATE_SECOND = check(
    "verification.rate-limit",
    "SSF 8.1.4.2",
    F,
    "a too-early verification request answers 204 or 429, nothing else",
)
RATE_RETRY_AFTER = check("verification.retry-after", "RFC 6585 4 / SSF 8.1.4.2", W, "429 carries Retry-After")
RATE_RESPECTED = check(
    "verification.interval-respected",
    "SSF 8.1.1",
    W,
    "a request after min_verification_interval is not refused",
)


@module(
    "kit-transmitter-verification-rate-limit",
    "transmitter",
    "min_verification_interval: early requests may get 429 with Retry-After; later ones must not",
    (*PREAMBLE, STREAM_CREATE, TEARDOWN_DELETE, TRIGGER, RATE_SECOND, RATE_RETRY_AFTER, RATE_RESPECTED),
    origin=KIT,
)
async def verification_rate(kit: TransmitterKit, run: ModuleRun) -> None:
    await kit.setup(run)
    kit.need_endpoint("verification_endpoint")
    _, stream = await kit.create_stream(run)
    assert stream is not None
    try:
        r = await kit.verify(stream, fresh_state())
        run.expect_status(TRIGGER, r.status_code, (204,), "first verification", stop=True)
        r = await kit.verify(stream, fresh_state())
        run.expect_status(RATE_SECOND, r.status_code, (204, 429), "immediate second verification")
        if r.status_code == 429:
            run.expect(RATE_RETRY_AFTER, "retry-after" in r.headers, "429 without Retry-After", "Retry-After")
        interval = stream.config.get("min_verification_interval")
        if not isinstance(interval, int | float) or interval <= 0:
            run.skip(RATE_RESPECTED, "no min_verification_interval advertised")
            return
        if interval > kit.opts.max_wait:
            run.skip(RATE_RESPECTED, f"min_verification_interval {interval}s exceeds --max-wait")
            return
        await asyncio.sleep(float(interval) + 0.2)
        r = await kit.verify(stream, fresh_state())
        run.expect_status(RATE_RESPECTED, r.status_code, (204,), "verification after the interval")
    finally:
        await kit.delete_stream(run, stream)


# ---- poll: long polling, acknowledgements ---------------------------------------------------------

LONG_POLL_HOLDS = check(
    "poll.long-poll-holds", "RFC 8936 2.1", F, "a long poll is held open while nothing is queued"
)
LONG_POLL_WAKES = check("poll.long-poll-wakes", "RFC 8936 2.1", F, "a held long poll returns the new SET")
LONG_POLL_PROMPT = check(
    "poll.long-poll-prompt", "RFC 8936 2.1", W, "the held poll wakes promptly after the event"
)
SHORT_POLL = check(
    "poll.return-immediately", "RFC 8936 2.1", F, "returnImmediately answers at once when empty"
)


async def drain(kit: TransmitterKit, run: ModuleRun, stream: Stream) -> None:
    await kit.receive(run, stream, lambda rs: False, timeout=min(kit.opts.settle, 1.0))


@module(
    "kit-transmitter-long-poll",
    "transmitter",
    "Long polling holds the request and wakes as soon as an event is queued",
    (
        *PREAMBLE,
        STREAM_CREATE,
        TEARDOWN_DELETE,
        TRIGGER,
        SHORT_POLL,
        LONG_POLL_HOLDS,
        LONG_POLL_WAKES,
        LONG_POLL_PROMPT,
    ),
    deliveries=("poll",),
    origin=KIT,
)
async def long_poll(kit: TransmitterKit, run: ModuleRun) -> None:
    await kit.setup(run)
    _, stream = await kit.create_stream(run)
    assert stream is not None
    try:
        await drain(kit, run, stream)
        t0 = time.monotonic()
        r = await kit.poll(stream, {"returnImmediately": True})
        run.expect(
            SHORT_POLL,
            r.status_code == 200 and time.monotonic() - t0 < 1.0,
            f"HTTP {r.status_code} after {time.monotonic() - t0:.1f}s",
            "immediate",
        )
        state = fresh_state()
        hold = kit.opts.settle

        async def trigger() -> float:
            await asyncio.sleep(hold)
            await kit.verify(stream, state)
            return time.monotonic()

        t0 = time.monotonic()
        task = asyncio.create_task(trigger())
        r = await kit.poll(stream, {"maxEvents": 10}, timeout=kit.opts.long_poll_timeout)
        returned = time.monotonic()
        fired = await task
        data = json_of(r)
        sets = data.get("sets") if isinstance(data, dict) else None
        recs = [Received(c, "poll") for c in (sets or {}).values() if isinstance(c, str)]
        for rec in recs:
            rec.decode()
        run.expect(
            LONG_POLL_HOLDS,
            returned - t0 >= hold * 0.9 or bool(recs),
            f"the long poll returned empty after {returned - t0:.2f}s, before any event",
            "held",
        )
        woke = has_state(state)(recs)
        if not woke and r.status_code == 200:  # timed out early or returned before the event: look again
            recs2 = await kit.receive(run, stream, has_state(state))
            later = "had" if has_state(state)(recs2) else "lacked"
            run.note(f"first long poll returned without the SET; later polls {later} it")
        run.expect(
            LONG_POLL_WAKES,
            woke,
            f"the held poll returned {len(recs)} SET(s) without the verification",
            "woke",
        )
        if woke:
            lag = returned - fired
            run.expect(
                LONG_POLL_PROMPT,
                lag <= kit.opts.event_timeout,
                f"woke {lag:.2f}s after the event",
                f"{lag:.2f}s",
            )
    finally:
        await kit.delete_stream(run, stream)


ACK_REMOVES = check(
    "poll.acked-not-redelivered", "RFC 8936 2.4", F, "acknowledged SETs are not returned again"
)
UNACKED_AGAIN = check("poll.unacked-redelivered", "RFC 8936 2.4", W, "unacknowledged SETs are returned again")
MAX_EVENTS = check("poll.max-events", "RFC 8936 2.1", W, "maxEvents caps the SETs returned")
MORE_AVAILABLE = check(
    "poll.more-available", "RFC 8936 2.2", W, "moreAvailable is true when SETs were held back"
)
SET_ERRS = check("poll.set-errs-accepted", "RFC 8936 2.4.4", F, "a poll reporting setErrs succeeds")
POLL_BAD_BODY = check(
    "poll.malformed-400", "RFC 8936 2.5", F, "a malformed poll request answers 400 with err"
)


@module(
    "kit-transmitter-poll-acks",
    "transmitter",
    "Poll acknowledgements, redelivery, maxEvents, moreAvailable, setErrs, malformed requests",
    (
        *PREAMBLE,
        STREAM_CREATE,
        TEARDOWN_DELETE,
        TRIGGER,
        ACK_REMOVES,
        UNACKED_AGAIN,
        MAX_EVENTS,
        MORE_AVAILABLE,
        SET_ERRS,
        POLL_BAD_BODY,
    ),
    deliveries=("poll",),
    origin=KIT,
)
async def poll_acks(kit: TransmitterKit, run: ModuleRun) -> None:
    await kit.setup(run)
    _, stream = await kit.create_stream(run)
    assert stream is not None
    try:
        await drain(kit, run, stream)
        r = await kit.poll(stream, {"maxEvents": "many", "returnImmediately": True})
        data = json_of(r)
        run.expect(
            POLL_BAD_BODY,
            r.status_code == 400 and isinstance(data, dict) and isinstance(data.get("err"), str),
            f"maxEvents 'many': HTTP {r.status_code}",
            "400 + err",
        )
        # queue two SETs
        if kit.can_publish:
            await kit.ensure_subject(stream, kit.opts.subject)
            for i in range(2):
                await publish_marked(kit, stream, f"kit-ack-{i}-{uuid.uuid4().hex[:6]}")
        else:
            interval = stream.config.get("min_verification_interval") or 0
            for i in range(2):
                if i and isinstance(interval, int | float) and 0 < interval <= kit.opts.max_wait:
                    await asyncio.sleep(float(interval))
                r = await kit.verify(stream, fresh_state())
                run.expect_status(TRIGGER, r.status_code, (204,), "verification request", stop=True)
        await asyncio.sleep(min(kit.opts.settle, 1.0))
        one = await _poll_sets(kit, stream, {"maxEvents": 1, "returnImmediately": True})
        if one is None:
            raise SkipModule("poll failed")
        sets, more = one
        run.expect(MAX_EVENTS, len(sets) <= 1, f"maxEvents 1 returned {len(sets)} SETs", "capped")
        everything = await _poll_sets(kit, stream, {"maxEvents": 10, "returnImmediately": True})
        total = set(sets) | set(everything[0] if everything else {})
        if len(total) >= 2 and len(sets) == 1:
            run.expect(MORE_AVAILABLE, more, "moreAvailable missing while SETs were held back", "true")
        else:
            run.skip(MORE_AVAILABLE, f"only {len(total)} SET(s) queued")
        first = next(iter(sets), None)
        if first is None:
            raise SkipModule("no SET was queued")
        run.expect(
            UNACKED_AGAIN,
            everything is not None and first in everything[0],
            "an unacknowledged SET was not returned again",
            "redelivered",
        )
        others = [j for j in total if j != first]
        r = await kit.poll(
            stream,
            {
                "returnImmediately": True,
                "ack": [first],
                "setErrs": {j: {"err": "invalid_request", "description": "kit test"} for j in others[:1]},
            },
        )
        run.expect_status(SET_ERRS, r.status_code, (200,), "poll with ack and setErrs")
        again = await _poll_sets(kit, stream, {"maxEvents": 10, "returnImmediately": True})
        run.expect(
            ACK_REMOVES,
            again is not None and first not in again[0],
            "an acknowledged SET came back",
            "not redelivered",
        )
    finally:
        await kit.delete_stream(run, stream)


async def _poll_sets(
    kit: TransmitterKit, stream: Stream, body: dict[str, Any]
) -> tuple[dict[str, str], bool] | None:
    r = await kit.poll(stream, body)
    data = json_of(r)
    if r.status_code != 200 or not isinstance(data, dict) or not isinstance(data.get("sets"), dict):
        return None
    return {str(k): str(v) for k, v in data["sets"].items()}, data.get("moreAvailable") is True


# ---- JWKS rotation ---------------------------------------------------------------------------------

ROTATION_NEW_KEY = check(
    "rotation.new-key-published", "SSF 7.1", F, "after rotation the new signing key is in the JWKS"
)
ROTATION_OLD_KEY = check(
    "rotation.old-key-kept",
    "SSF 7.1",
    W,
    "the previous key stays in the JWKS while SETs it signed may be in flight",
)
ROTATION_VERIFIES = check(
    "rotation.sets-verify", "SSF 7.1", F, "SETs signed after rotation verify against the refreshed JWKS"
)


@module(
    "kit-transmitter-jwks-rotation",
    "transmitter",
    "Rotate the signing key mid-stream (--rotate-cmd): SETs keep verifying",
    (
        *PREAMBLE,
        STREAM_CREATE,
        TEARDOWN_DELETE,
        TRIGGER,
        ROTATION_NEW_KEY,
        ROTATION_OLD_KEY,
        ROTATION_VERIFIES,
        *SET_CHECKS,
        *PUSH_CHECKS,
    ),
    origin=KIT,
)
async def jwks_rotation(kit: TransmitterKit, run: ModuleRun) -> None:
    if not kit.opts.rotate_cmd:
        raise SkipModule("no --rotate-cmd to rotate the transmitter's signing key")
    await kit.setup(run)
    _, stream = await kit.create_stream(run)
    assert stream is not None
    try:
        state = fresh_state()
        r = await kit.verify(stream, state)
        run.expect_status(TRIGGER, r.status_code, (204,), "verification before rotation", stop=True)
        before = await kit.receive(run, stream, has_state(state))
        hit = [x for x in before if x.state == state]
        old_kid = hit[0].header.get("kid") if hit else None
        kids_before = _kids(kit)
        if not await kit.run_cmd(kit.opts.rotate_cmd):
            raise SkipModule("--rotate-cmd failed")
        # a running transmitter may take a moment to pick the new key up: watch the JWKS
        loop = asyncio.get_running_loop()
        deadline = loop.time() + kit.opts.key_rotation_wait
        while True:
            await kit.load_keys()
            kids = _kids(kit)
            if kids - kids_before or loop.time() >= deadline:
                break
            await asyncio.sleep(0.25)
        run.expect(
            ROTATION_NEW_KEY,
            bool(kids - kids_before),
            f"no new key in the JWKS within {kit.opts.key_rotation_wait:g}s (kids {sorted(kids)})",
            f"new key(s) {sorted(kids - kids_before)}",
        )
        run.expect(ROTATION_OLD_KEY, old_kid in kids, f"old kid {old_kid!r} no longer published", "kept")
        interval = stream.config.get("min_verification_interval")
        if isinstance(interval, int | float) and 0 < interval <= kit.opts.max_wait:
            await asyncio.sleep(float(interval))
        state2 = fresh_state()
        r = await kit.verify(stream, state2)
        run.expect_status(TRIGGER, r.status_code, (204,), "verification after rotation", stop=True)
        after = await kit.receive(run, stream, has_state(state2))
        hit2 = [x for x in after if x.state == state2]
        kit.inspect(run, stream, hit2)
        from conformance.tx.setchecks import SET_SIGNATURE

        sig = run.results.get(SET_SIGNATURE.id)
        run.expect(
            ROTATION_VERIFIES,
            bool(hit2) and sig is not None and sig.outcome.value == "passed",
            f"the post-rotation SET does not verify ({sig.message if sig else 'no result'})"
            if hit2
            else "no SET after rotation",
            f"verifies (kid {hit2[0].header.get('kid') if hit2 else None})",
        )
    finally:
        await kit.delete_stream(run, stream)


def _kids(kit: TransmitterKit) -> frozenset[str]:
    return kit.inspector.keys.kids() if kit.inspector and kit.inspector.keys else frozenset()
