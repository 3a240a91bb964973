"""Transmitter modules beyond the OpenID suite (digest 12 item 16 and checklist rows the
suite leaves out): stream configuration rules, authorization, stream-updated, paused and
disabled streams, inactivity, subject matching, critical subject members, verification
rate limits, long polling, acknowledgements and key rotation."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

from conformance.registry import ModuleRun, Severity, SkipModule, check, module
from conformance.tx.context import (
    STREAM_CREATE,
    SUITE_EVENTS,
    TEARDOWN_DELETE,
    Stream,
    TransmitterKit,
    fresh_state,
    json_of,
)
from conformance.tx.setchecks import PUSH_CHECKS, SET_CHECKS, Received
from conformance.tx.suite_streams import PREAMBLE, invalid_token
from conformance.tx.suite_verification import TRIGGER, event_payload, has_state
from ssf import uris

F, W, INFO = Severity.FAILURE, Severity.WARNING, Severity.INFO
KIT = "kit"
SESSION_REVOKED = uris.CAEP_BASE + "session-revoked"
UNRESERVED = re.compile(r"^[A-Za-z0-9._~-]+$")


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


# ---- stream configuration rules ---------------------------------------------------------

NO_DELIVERY_POLL = check(
    "config.create-without-delivery",
    "SSF 8.1.1.1",
    F,
    "create without delivery assumes poll and returns its endpoint_url",
)
LIST_ARRAY = check("config.read-all-array", "SSF 8.1.1.2", F, "GET without stream_id answers a JSON array")
DELIVERED_SUBSET = check(
    "config.events-delivered-subset",
    "SSF 8.1.1",
    F,
    "events_delivered is within events_supported and events_requested",
)
UNKNOWN_EVENTS_IGNORED = check(
    "config.unknown-events-ignored",
    "SSF 8.1.1",
    F,
    "unknown events_requested values are ignored, not refused",
)
PATCH_KEEPS = check(
    "config.patch-keeps-absent", "SSF 8.1.1.3", F, "PATCH changes present members and keeps absent ones"
)
PATCH_MISMATCH = check(
    "config.patch-transmitter-mismatch",
    "SSF 8.1.1.3",
    F,
    "PATCH with a different transmitter-supplied aud answers 400",
)
PUT_DELETES = check(
    "config.put-deletes-absent", "SSF 8.1.1.4", F, "PUT removes receiver-supplied members it lacks"
)
DELETE_NEEDS_ID = check(
    "config.delete-needs-stream-id", "SSF 8.1.1.5", W, "DELETE without stream_id is refused (4xx)"
)
STATUS_UNKNOWN = check(
    "config.status-unknown-404", "SSF 8.1.2.1", F, "status GET of an unknown stream answers 404"
)
STATUS_NO_AUTH = check(
    "config.status-unauthorized-401", "SSF 8.1.2.1", F, "status GET without a token answers 401"
)
STATUS_VALUE = check(
    "config.status-value", "SSF 8.1.2.1", F, "status GET returns stream_id and a valid status"
)
STREAM_ID_CHARS = check(
    "config.stream-id-unreserved", "SSF 8.1.1", W, "stream_id uses RFC 3986 unreserved characters"
)
NO_STORE = check(
    "config.cache-control", "SSF 8.1.1", INFO, "management responses carry Cache-Control: no-store"
)
POLL_URL_UNIQUE = check("config.poll-url-unique", "SSF 6.1.2", F, "poll endpoint_url is unique per stream")
VERIFY_UNKNOWN = check(
    "config.verify-unknown-404", "SSF 8.1.4.2", W, "verification for an unknown stream answers 404"
)


@module(
    "kit-transmitter-stream-config-rules",
    "transmitter",
    "Stream configuration rules the suite does not test (SSF 8.1.1-8.1.2)",
    (
        *PREAMBLE,
        STREAM_CREATE,
        TEARDOWN_DELETE,
        NO_DELIVERY_POLL,
        LIST_ARRAY,
        DELIVERED_SUBSET,
        UNKNOWN_EVENTS_IGNORED,
        PATCH_KEEPS,
        PATCH_MISMATCH,
        PUT_DELETES,
        DELETE_NEEDS_ID,
        STATUS_UNKNOWN,
        STATUS_NO_AUTH,
        STATUS_VALUE,
        STREAM_ID_CHARS,
        NO_STORE,
        POLL_URL_UNIQUE,
        VERIFY_UNKNOWN,
    ),
    origin=KIT,
)
async def config_rules(kit: TransmitterKit, run: ModuleRun) -> None:
    await kit.setup(run)
    url = kit.need_endpoint("configuration_endpoint")
    unknown = "https://example.com/conformance/unknown-event-type"
    body, key, authz = kit.create_body()
    body["events_requested"] = [*SUITE_EVENTS, unknown]
    resp = await kit.call("POST", url, body=body)
    cfg = json_of(resp)
    run.expect(
        UNKNOWN_EVENTS_IGNORED,
        resp.status_code in (200, 201) and isinstance(cfg, dict),
        f"create with an unknown requested event: HTTP {resp.status_code}",
        "created",
    )
    run.expect(
        STREAM_CREATE, isinstance(cfg, dict) and "stream_id" in cfg, "no stream created", "created", stop=True
    )
    assert isinstance(cfg, dict)
    stream = Stream(cfg, key, authz)
    try:
        cc = resp.headers.get("cache-control", "")
        run.expect(NO_STORE, "no-store" in cc.lower(), f"Cache-Control is {cc!r}", "no-store")
        delivered = cfg.get("events_delivered") or []
        supported = cfg.get("events_supported")
        bad = [
            u
            for u in delivered
            if u not in body["events_requested"] or (isinstance(supported, list) and u not in supported)
        ]
        run.expect(
            DELIVERED_SUBSET, not bad and unknown not in delivered, f"events_delivered has {bad}", "subset"
        )
        run.expect(
            STREAM_ID_CHARS,
            bool(UNRESERVED.match(stream.id)),
            f"stream_id {stream.id!r}",
            "unreserved characters",
        )
        r = await kit.call("GET", url)
        run.expect(
            LIST_ARRAY,
            r.status_code == 200 and isinstance(json_of(r), list),
            f"GET all: HTTP {r.status_code}",
            "array",
        )
        # PATCH: change description only; the delivery and events must stay.
        r = await kit.call("PATCH", url, body={"stream_id": stream.id, "description": "patched by the kit"})
        after = json_of(r)
        ok = (
            r.status_code == 200
            and isinstance(after, dict)
            and after.get("description") == "patched by the kit"
            and after.get("events_requested", cfg.get("events_requested")) == cfg.get("events_requested")
            and (after.get("delivery") or {}).get("endpoint_url")
            == (cfg.get("delivery") or {}).get("endpoint_url")
        )
        run.expect(
            PATCH_KEEPS, ok, f"PATCH: HTTP {r.status_code}, config {str(after)[:160]}", "applied and kept"
        )
        r = await kit.call(
            "PATCH", url, body={"stream_id": stream.id, "aud": "https://conformance.invalid/other-audience"}
        )
        run.expect_status(PATCH_MISMATCH, r.status_code, (400,), "PATCH with another aud")
        put = {"stream_id": stream.id, "events_requested": list(SUITE_EVENTS), "delivery": body["delivery"]}
        r = await kit.call("PUT", url, body=put)
        after = json_of(r)
        run.expect(
            PUT_DELETES,
            r.status_code == 200 and isinstance(after, dict) and "description" not in after,
            f"PUT without description: HTTP {r.status_code}, body {str(after)[:120]}",
            "description removed",
        )
        r = await kit.call("DELETE", url)
        run.expect(
            DELETE_NEEDS_ID,
            400 <= r.status_code < 500,
            f"DELETE without stream_id: HTTP {r.status_code}",
            "refused",
        )
        status_url = kit.endpoint("status_endpoint")
        if status_url:
            r = await kit.get_status(stream)
            st = json_of(r)
            run.expect(
                STATUS_VALUE,
                r.status_code == 200
                and isinstance(st, dict)
                and st.get("stream_id") == stream.id
                and st.get("status") in ("enabled", "paused", "disabled"),
                f"status GET: HTTP {r.status_code}, {str(st)[:100]}",
                "status ok",
            )
            r = await kit.call("GET", status_url, params={"stream_id": "kit-unknown-" + uuid.uuid4().hex})
            run.expect_status(STATUS_UNKNOWN, r.status_code, (404,), "status of unknown stream")
            r = await kit.call("GET", status_url, params={"stream_id": stream.id}, auth=False)
            run.expect_status(STATUS_NO_AUTH, r.status_code, (401,), "status without token")
        verify_url = kit.endpoint("verification_endpoint")
        if verify_url:
            r = await kit.call("POST", verify_url, body={"stream_id": "kit-unknown-" + uuid.uuid4().hex})
            run.expect_status(VERIFY_UNKNOWN, r.status_code, (404,), "verification of unknown stream")
    finally:
        await kit.delete_stream(run, stream)
    await _no_delivery_streams(kit, run, url)


async def _no_delivery_streams(kit: TransmitterKit, run: ModuleRun, url: str) -> None:
    methods = kit.metadata.get("delivery_methods_supported") or []
    if uris.POLL not in methods:
        run.skip(NO_DELIVERY_POLL, "poll delivery not offered")
        run.skip(POLL_URL_UNIQUE, "poll delivery not offered")
        return
    body = {"description": "kit: no delivery", "events_requested": list(SUITE_EVENTS)}
    r = await kit.call("POST", url, body=body)
    first = json_of(r)
    streams = []
    try:
        d = first.get("delivery") if isinstance(first, dict) else None
        ok = (
            r.status_code == 201
            and isinstance(d, dict)
            and uris.normalize_delivery_method(str(d.get("method"))) == uris.POLL
            and isinstance(d.get("endpoint_url"), str)
        )
        run.expect(NO_DELIVERY_POLL, ok, f"HTTP {r.status_code}, delivery {d!r}", "poll with endpoint_url")
        if isinstance(first, dict) and "stream_id" in first:
            streams.append(Stream(first))
        r2 = await kit.call("POST", url, body=body)
        second = json_of(r2)
        if r2.status_code == 201 and isinstance(second, dict) and "stream_id" in second:
            streams.append(Stream(second))
            u1, u2 = streams[0].poll_url, streams[1].poll_url
            run.expect(POLL_URL_UNIQUE, u1 is not None and u1 != u2, f"both streams poll at {u1}", "unique")
        else:
            run.skip(POLL_URL_UNIQUE, f"a second stream could not be created (HTTP {r2.status_code})")
    finally:
        for s in streams:
            await kit.delete_stream(None, s)


# ---- authorization ------------------------------------------------------------------------

NO_TOKEN = check(
    "auth.missing-token-401", "SSF 8 / RFC 6750 3.1", F, "a management call without a token answers 401"
)
WWW_AUTH = check("auth.www-authenticate", "RFC 6750 3", W, "401 answers carry WWW-Authenticate: Bearer")
QUERY_TOKEN = check(
    "auth.no-query-token",
    "CAEPIOP 2.7.2 / RFC 6750 2.3",
    W,
    "a token in the query string is not accepted",
    caep=F,
)
READ_SCOPE = check(
    "auth.read-scope", "CAEPIOP 2.7.3", W, "a token with only ssf.read can read streams", caep=F
)
INSUFFICIENT_SCOPE = check(
    "auth.insufficient-scope-403",
    "CAEPIOP 2.7.2 / RFC 6750 3.1",
    W,
    "ssf.read alone cannot create: 403",
    caep=F,
)


@module(
    "kit-transmitter-authorization",
    "transmitter",
    "Bearer token handling of the management API (RFC 6750, CAEP interop scopes)",
    (*PREAMBLE, NO_TOKEN, WWW_AUTH, QUERY_TOKEN, READ_SCOPE, INSUFFICIENT_SCOPE),
    origin=KIT,
)
async def authorization(kit: TransmitterKit, run: ModuleRun) -> None:
    await kit.setup(run, cleanup=False)
    url = kit.need_endpoint("configuration_endpoint")
    r = await kit.call("GET", url, auth=False)
    run.expect_status(NO_TOKEN, r.status_code, (401,), "GET streams without a token")
    r2 = await kit.call("GET", url, token=invalid_token())
    challenge = r2.headers.get("www-authenticate", "")
    run.expect(
        WWW_AUTH,
        r2.status_code == 401 and challenge.lower().startswith("bearer"),
        f"HTTP {r2.status_code}, WWW-Authenticate {challenge!r}",
        "Bearer challenge",
    )
    token = await kit.access_token()
    r = await kit.call("GET", url, params={"access_token": token}, auth=False)
    run.expect(
        QUERY_TOKEN, r.status_code in (400, 401), f"query-string token: HTTP {r.status_code}", "refused"
    )
    if not (kit.opts.client_id and kit.opts.client_secret):
        run.skip(READ_SCOPE, "needs client credentials to ask for an ssf.read token")
        run.skip(INSUFFICIENT_SCOPE, "needs client credentials to ask for an ssf.read token")
        return
    resp, _ = await kit._client_credentials(kit.opts.client_id, kit.opts.client_secret, "ssf.read")
    data = json_of(resp) if resp is not None else None
    if resp is None or resp.status_code != 200 or not isinstance(data, dict):
        run.skip(READ_SCOPE, "the token endpoint refused a scope of ssf.read")
        run.skip(INSUFFICIENT_SCOPE, "the token endpoint refused a scope of ssf.read")
        return
    read_token = str(data.get("access_token"))
    r = await kit.call("GET", url, token=read_token)
    run.expect_status(READ_SCOPE, r.status_code, (200, 404), "GET streams with ssf.read")
    body, _, _ = kit.create_body()
    r = await kit.call("POST", url, body=body, token=read_token)
    run.expect_status(INSUFFICIENT_SCOPE, r.status_code, (403,), "create with ssf.read")
    created = json_of(r)
    if isinstance(created, dict) and "stream_id" in created:
        await kit.delete_stream(None, Stream(created))


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
    await kit.setup(run)
    kit.need_endpoint("status_endpoint")
    _, stream = await kit.create_stream(run)
    assert stream is not None
    try:
        await kit.ensure_subject(stream, kit.opts.subject)
        r = await kit.set_status(stream, "paused")
        run.expect(PAUSE_OK, r.status_code in (200, 202), f"pause: HTTP {r.status_code}", "paused", stop=True)
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
        r = await kit.set_status(stream, "enabled")
        run.expect(
            PAUSE_OK, r.status_code in (200, 202), f"enable: HTTP {r.status_code}", "enabled", stop=True
        )
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
    await kit.setup(run)
    kit.need_endpoint("status_endpoint")
    _, stream = await kit.create_stream(run)
    assert stream is not None
    try:
        await kit.ensure_subject(stream, kit.opts.subject)
        r = await kit.set_status(stream, "disabled")
        run.expect(
            DISABLE_OK, r.status_code in (200, 202), f"disable: HTTP {r.status_code}", "disabled", stop=True
        )
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
    await kit.setup(run)
    kit.need_endpoint("status_endpoint")
    _, stream = await kit.create_stream(run)
    assert stream is not None
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
