"""Kit modules: stream configuration rules and management-API authorization (SSF 8.1.1-8.1.2, RFC
6750, CAEP interop scopes)."""

from __future__ import annotations

import re
import uuid

from conformance.registry import ModuleRun, Severity, check, module
from conformance.tx.beyond_common import (
    KIT,
)
from conformance.tx.context import (
    STREAM_CREATE,
    SUITE_EVENTS,
    TEARDOWN_DELETE,
    Stream,
    TransmitterKit,
    json_of,
)
from conformance.tx.suite_streams import PREAMBLE, invalid_token
from ssf import uris

F, W, INFO = Severity.FAILURE, Severity.WARNING, Severity.INFO
UNRESERVED = re.compile(r"^[A-Za-z0-9._~-]+$")


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
