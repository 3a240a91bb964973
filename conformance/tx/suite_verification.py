"""Verification modules (push, push without auth, poll-only, poll-and-ack, ack-only) and the
CAEP interoperability module of the suite (digest 11.3)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from conformance.registry import Check, ModuleRun, Severity, StopModule, check, module
from conformance.tx.context import (
    INTEROP_EVENTS,
    STREAM_CREATE,
    TEARDOWN_DELETE,
    Stream,
    TransmitterKit,
    fresh_state,
    json_of,
)
from conformance.tx.setchecks import PUSH_CHECKS, SET_CHECKS, Received
from conformance.tx.suite_streams import PREAMBLE, check_created, check_events_supported, check_iss_response
from ssf import uris
from ssf.events import CAEP_EVENTS, example_payload

F, W, INFO = Severity.FAILURE, Severity.WARNING, Severity.INFO

TRIGGER = check("verification.trigger-204", "SSF 8.1.4.2", F, "verification request answers 204")
RECEIVED = check("verification.received", "SSF 8.1.4.2", F, "a verification SET echoing the state arrives")
UNSOLICITED_NO_STATE = check(
    "verification.unsolicited-no-state",
    "SSF 8.1.4.2",
    F,
    "verification SETs sent before the request carry no state",
)
STATE_ECHO = check(
    "verification.state-echo", "SSF 8.1.4.2", F, "the first stateful verification SET echoes the state"
)
POLL_RESPONSE = check("poll.response", "RFC 8936 2.2", F, "poll answers 200 with a sets object")
POLL_ACK_ONLY = check(
    "poll.ack-only", "RFC 8936 2.4.2", F, "an acknowledge-only request (maxEvents 0) succeeds"
)
POLL_AND_ACK_STATE = check(
    "poll.poll-and-ack", "RFC 8936 2.4.3", F, "poll with ack returns the second verification SET"
)

VERIFY_CHECKS = (
    *PREAMBLE,
    STREAM_CREATE,
    TRIGGER,
    RECEIVED,
    UNSOLICITED_NO_STATE,
    STATE_ECHO,
    TEARDOWN_DELETE,
)
MAX_STATELESS = 10


def has_state(state: str) -> Any:
    return lambda recs: any(r.is_verification() and r.state == state for r in recs)


def judge_verification(run: ModuleRun, before: list[Received], after: list[Received], state: str) -> None:
    """The suite's verification rules: stateless ones tolerated, the first stateful echoes."""
    early = [r for r in before if r.is_verification() and r.state is not None]
    run.expect(
        UNSOLICITED_NO_STATE,
        not early,
        f"{len(early)} verification SET(s) before the request carried a state",
        "no state on unsolicited verifications",
    )
    stateful = [r for r in after if r.is_verification() and r.state is not None]
    stateless = [r for r in after if r.is_verification() and r.state is None]
    if not stateful:
        run.record(
            RECEIVED,
            False,
            f"no stateful verification SET arrived ({len(stateless)} stateless, {len(after)} SET(s) in all)",
        )
        return
    run.record(RECEIVED, True, "verification SET received")
    first = stateful[0].state
    run.expect(STATE_ECHO, first == state, f"state {first!r} != requested {state!r}", "state echoed")
    if len(stateless) > MAX_STATELESS:
        run.note(f"{len(stateless)} stateless verification SETs (the suite tolerates {MAX_STATELESS})")


async def verification_flow(kit: TransmitterKit, run: ModuleRun, *, push_auth: bool = True) -> None:
    await kit.setup(run)
    _, stream = await kit.create_stream(run, push_auth=push_auth)
    assert stream is not None
    try:
        before = await kit.receive(run, stream, lambda rs: False, timeout=kit.opts.settle)
        state = fresh_state()
        r = await kit.verify(stream, state)
        run.expect_status(TRIGGER, r.status_code, (204,), "verification request", stop=True)
        after = await kit.receive(run, stream, has_state(state))
        kit.inspect(run, stream, before + after)
        judge_verification(run, before, after, state)
    finally:
        await kit.delete_stream(run, stream)


@module(
    "openid-ssf-transmitter-stream-verification-push",
    "transmitter",
    "Trigger verification on a push stream and judge the pushed SET",
    (*VERIFY_CHECKS, *SET_CHECKS, *PUSH_CHECKS),
    deliveries=("push",),
)
async def verification_push(kit: TransmitterKit, run: ModuleRun) -> None:
    await verification_flow(kit, run, push_auth=True)


@module(
    "openid-ssf-transmitter-stream-verification-error-push-no-auth",
    "transmitter",
    "Verification on a push stream without authorization_header: no Authorization sent",
    (*VERIFY_CHECKS, *SET_CHECKS, *PUSH_CHECKS),
    deliveries=("push",),
)
async def verification_push_no_auth(kit: TransmitterKit, run: ModuleRun) -> None:
    await verification_flow(kit, run, push_auth=False)


async def poll_once(
    kit: TransmitterKit, run: ModuleRun, stream: Stream, body: dict[str, Any]
) -> list[Received]:
    r = await kit.poll(stream, body)
    data = json_of(r)
    ok = r.status_code == 200 and isinstance(data, dict) and isinstance(data.get("sets"), dict)
    run.expect(POLL_RESPONSE, ok, f"poll: HTTP {r.status_code}, body {str(data)[:80]!r}", "200 + sets")
    if not ok:
        raise StopModule("poll failed")
    assert isinstance(data, dict)
    out = []
    for jti, compact in data["sets"].items():
        if isinstance(compact, str):
            rec = Received(compact=compact, via="poll")
            rec.decode()
            out.append(rec)
        else:
            run.record(POLL_RESPONSE, False, f"sets[{jti!r}] is not a string")
    return out


async def poll_until_state(
    kit: TransmitterKit, run: ModuleRun, stream: Stream, state: str, ack: list[str] | None = None
) -> list[Received]:
    """Poll (no ack unless given) until the stateful SET shows up or the time is up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + kit.opts.event_timeout
    body: dict[str, Any] = {"maxEvents": 10, "returnImmediately": True}
    if ack:
        body["ack"] = ack
    seen: dict[str, Received] = {}
    while True:
        for rec in await poll_once(kit, run, stream, body):
            seen.setdefault(rec.jti or rec.compact, rec)
        body.pop("ack", None)
        if has_state(state)(list(seen.values())) or loop.time() >= deadline:
            return list(seen.values())
        await asyncio.sleep(0.2)


async def poll_verification(
    kit: TransmitterKit, run: ModuleRun, stream: Stream, label: str = "verification request"
) -> list[Received]:
    """Trigger a verification, poll until its SET shows up, judge it and return what was polled."""
    state = fresh_state()
    r = await kit.verify(stream, state)
    run.expect_status(TRIGGER, r.status_code, (204,), label, stop=True)
    got = await poll_until_state(kit, run, stream, state)
    kit.inspect(run, stream, got)
    judge_verification(run, [], got, state)
    return got


PollFollowUp = Callable[[TransmitterKit, ModuleRun, Stream, list[Received]], Awaitable[None]]


def poll_verification_module(
    name: str, summary: str, extra: tuple[Check, ...] = (), label: str = "verification request"
) -> Callable[[PollFollowUp], PollFollowUp]:
    """A poll-only module: one verification on a new poll stream, then `follow_up` with its SETs."""

    def wrap(follow_up: PollFollowUp) -> PollFollowUp:
        async def run_it(kit: TransmitterKit, run: ModuleRun) -> None:
            await kit.setup(run)
            _, stream = await kit.create_stream(run)
            assert stream is not None
            try:
                got = await poll_verification(kit, run, stream, label)
                await follow_up(kit, run, stream, got)
            finally:
                await kit.delete_stream(run, stream)

        checks = (*VERIFY_CHECKS, POLL_RESPONSE, *extra, *SET_CHECKS)
        module(name, "transmitter", summary, checks, deliveries=("poll",))(run_it)
        return follow_up

    return wrap


@poll_verification_module(
    "openid-ssf-transmitter-stream-verification-poll-only",
    "Trigger verification on a poll stream and poll for the SET",
)
async def verification_poll_only(
    kit: TransmitterKit, run: ModuleRun, stream: Stream, got: list[Received]
) -> None:
    pass


@poll_verification_module(
    "openid-ssf-transmitter-stream-verification-poll-and-ack",
    "Two verifications; the second poll acknowledges the first batch and returns the second SET",
    (POLL_AND_ACK_STATE,),
    label="verification request #1",
)
async def verification_poll_and_ack(
    kit: TransmitterKit, run: ModuleRun, stream: Stream, first: list[Received]
) -> None:
    interval = stream.config.get("min_verification_interval")
    if isinstance(interval, int | float) and interval > 0:
        await asyncio.sleep(min(float(interval), kit.opts.max_wait, 120.0))
    state2 = fresh_state()
    r = await kit.verify(stream, state2)
    run.expect_status(TRIGGER, r.status_code, (204,), "verification request #2", stop=True)
    acks = [x.jti for x in first if x.jti]
    second = await poll_until_state(kit, run, stream, state2, ack=acks)
    kit.inspect(run, stream, second)
    # like the suite: the first stateful verification SET of the response is compared
    stateful = [x for x in second if x.is_verification() and x.state is not None]
    got = stateful[0].state if stateful else None
    run.expect(POLL_AND_ACK_STATE, got == state2, f"second poll's verification state is {got!r}", "state #2")


@poll_verification_module(
    "openid-ssf-transmitter-stream-verification-ack-only",
    "Verification on a poll stream, then an acknowledge-only request",
    (POLL_ACK_ONLY,),
)
async def verification_ack_only(
    kit: TransmitterKit, run: ModuleRun, stream: Stream, got: list[Received]
) -> None:
    acks = [x.jti for x in got if x.jti]
    r = await kit.poll(stream, {"maxEvents": 0, "returnImmediately": True, "ack": acks})
    data = json_of(r)
    run.expect(
        POLL_ACK_ONLY,
        r.status_code == 200 and isinstance(data, dict),
        f"acknowledge-only: HTTP {r.status_code}",
        "acknowledged",
    )


# ---- CAEP interoperability ---------------------------------------------------------------

CAEP_CREATE_201 = check("caep.create-201", "CAEPIOP 2.3.8 / SSF 8.1.1.1", F, "create answers 201")
CAEP_CREATE_ISS = check("caep.create-iss", "SSF 8.1.1.1", F, "created config iss equals the issuer")
CAEP_CREATE_AUD = check("caep.create-aud", "SSF 8.1.1.1", F, "created config carries aud")
CAEP_CREATE_METHOD = check(
    "caep.create-delivery-method", "CAEPIOP 2.3.8", F, "delivery.method is push or poll"
)
CAEP_CREATE_REQUIRED = check(
    "caep.create-required", "SSF 8.1.1.1", F, "created config has the required members"
)
CAEP_DELIVERED = check(
    "caep.events-delivered", "CAEPIOP 3", F, "events_delivered holds at least one CAEP interop event type"
)
CAEP_READ = check("caep.read", "SSF 8.1.1.2", F, "read answers 200 with iss")
CAEP_SUPPORTED = check("caep.events-supported", "SSF 8.1.1", W, "events_supported lists only standard URIs")
CAEP_SUPPORTED_INTEROP = check(
    "caep.events-supported-interop", "CAEPIOP 3", F, "events_supported has at least one interop event"
)
CAEP_STATUS = check("caep.status-read", "CAEPIOP 2.3.5", F, "status GET answers 200")
CAEP_ALL_RECEIVED = check(
    "caep.all-delivered", "SSF 8.1.1 / CAEPIOP 3", F, "every CAEP type in events_delivered is received"
)

#: Payloads like the suite's examples (digest 11.4), with the interop-required reason_admin.
INTEROP_PAYLOADS: dict[str, dict[str, Any]] = {
    uris.CAEP_BASE + "session-revoked": {
        "initiating_entity": "policy",
        "reason_admin": {"en": "Landspeed Policy Violation: C076E82F"},
        "reason_user": {"en": "Access attempt from multiple regions."},
    },
    uris.CAEP_BASE + "credential-change": {
        "credential_type": "fido2-roaming",
        "change_type": "create",
        "friendly_name": "Jane's USB authenticator",
        "initiating_entity": "user",
        "reason_admin": {"en": "User self-enrollment"},
    },
    uris.CAEP_BASE + "device-compliance-change": {
        "previous_status": "compliant",
        "current_status": "not-compliant",
        "initiating_entity": "policy",
        "reason_admin": {"en": "Location Policy Violation: C076E8A3"},
    },
}


def event_payload(uri: str, marker: str | None = None) -> dict[str, Any]:
    import time

    payload = dict(INTEROP_PAYLOADS.get(uri) or example_payload(uri))
    if uri in CAEP_EVENTS:
        payload.setdefault("event_timestamp", int(time.time()))
        if marker is not None:
            payload["reason_admin"] = {"en": marker}
    return payload


@module(
    "openid-ssf-transmitter-stream-caep-interop",
    "transmitter",
    "CAEP interop: create, read, status, verify, then receive every interop event type",
    (
        *PREAMBLE,
        STREAM_CREATE,
        CAEP_CREATE_201,
        CAEP_CREATE_ISS,
        CAEP_CREATE_AUD,
        CAEP_CREATE_METHOD,
        CAEP_CREATE_REQUIRED,
        CAEP_DELIVERED,
        CAEP_READ,
        CAEP_SUPPORTED,
        CAEP_SUPPORTED_INTEROP,
        CAEP_STATUS,
        TRIGGER,
        RECEIVED,
        UNSOLICITED_NO_STATE,
        STATE_ECHO,
        CAEP_ALL_RECEIVED,
        TEARDOWN_DELETE,
        *SET_CHECKS,
        *PUSH_CHECKS,
    ),
    profiles=("caep-interop",),
)
async def caep_interop(kit: TransmitterKit, run: ModuleRun) -> None:
    await kit.setup(run)
    resp, stream = await kit.create_stream(run)
    assert stream is not None
    try:
        cfg = stream.config
        check_created(
            kit,
            run,
            resp,
            cfg,
            CAEP_CREATE_201,
            CAEP_CREATE_ISS,
            CAEP_CREATE_AUD,
            CAEP_CREATE_METHOD,
            CAEP_CREATE_REQUIRED,
        )
        delivered = [u for u in cfg.get("events_delivered") or [] if isinstance(u, str)]
        caep_types = [u for u in delivered if u in CAEP_EVENTS]
        run.expect(
            CAEP_DELIVERED,
            any(u in INTEROP_EVENTS for u in delivered),
            f"events_delivered {delivered} has no interop event",
            "interop events delivered",
            stop=True,
        )
        url = kit.need_endpoint("configuration_endpoint")
        r = await kit.call("GET", url, params={"stream_id": stream.id})
        check_iss_response(kit, run, CAEP_READ, r, "read")
        data = json_of(r)
        supported = check_events_supported(run, data if isinstance(data, dict) else {}, CAEP_SUPPORTED)
        run.expect(
            CAEP_SUPPORTED_INTEROP,
            any(u in INTEROP_EVENTS for u in supported),
            "events_supported has no interop event",
            "interop event supported",
        )
        r = await kit.get_status(stream)
        run.expect_status(CAEP_STATUS, r.status_code, (200,), "status GET")
        await kit.ensure_subject(stream, kit.opts.subject)
        state = fresh_state()
        r = await kit.verify(stream, state)
        run.expect_status(TRIGGER, r.status_code, (204,), "verification request", stop=True)
        got = await kit.receive(run, stream, has_state(state))
        judge_verification(run, [], got, state)
        published: list[str] = []
        for uri in caep_types:
            if await kit.publish(stream, uri, event_payload(uri), txn=fresh_state()):
                published.append(uri)
        if not kit.can_publish:
            run.note("no --publish-cmd / publish credentials: waiting for events triggered by the operator")

        def all_in(recs: list[Received]) -> bool:
            types = {r.event_type for r in got + recs}
            return all(u in types for u in caep_types)

        more = await kit.receive(run, stream, all_in, timeout=kit.opts.event_timeout * 2)
        everything = got + more
        kit.inspect(run, stream, everything)
        types = {x.event_type for x in everything}
        missing = [u.rsplit("/", 1)[-1] for u in caep_types if u not in types]
        run.expect(CAEP_ALL_RECEIVED, not missing, f"not received: {', '.join(missing)}", "all received")
    finally:
        await kit.delete_stream(run, stream)
