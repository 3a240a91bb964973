"""Stream control modules of the suite: happy path, the 13 error tests, subject control."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from conformance.registry import Check, ModuleRun, Severity, check, module
from conformance.tx.context import (
    CLEANUP_DELETE,
    CLEANUP_READ,
    DELIVERY_SUPPORTED,
    INTEROP_EVENTS,
    METADATA_FETCH,
    STREAM_CREATE,
    TEARDOWN_DELETE,
    TOKEN_LIFETIME,
    TOKEN_OBTAINED,
    Stream,
    TransmitterKit,
    json_of,
)
from ssf import uris
from ssf.events import EVENT_MODELS

F, W, INFO = Severity.FAILURE, Severity.WARNING, Severity.INFO
PREAMBLE = (METADATA_FETCH, DELIVERY_SUPPORTED, TOKEN_OBTAINED, TOKEN_LIFETIME, CLEANUP_READ, CLEANUP_DELETE)
SCIM_EVENT_PREFIX = "urn:ietf:params:scim:event:"

CREATE_201 = check("stream.create-201", "SSF 8.1.1.1", W, "create answers 201 Created")
CREATE_ISS = check("stream.create-iss", "SSF 8.1.1.1", W, "created config iss equals the metadata issuer")
CREATE_AUD = check("stream.create-aud", "SSF 8.1.1.1", W, "created config carries aud")
CREATE_METHOD = check("stream.create-delivery-method", "SSF 8.1.1.1", W, "delivery.method is 8935 or 8936")
CREATE_REQUIRED = check(
    "stream.create-required",
    "SSF 8.1.1.1",
    F,
    "created config has stream_id, iss, aud, events_delivered and delivery",
)
READ = check("stream.read", "SSF 8.1.1.2", W, "GET ?stream_id= answers 200 with the config and iss")
EVENTS_SUPPORTED = check(
    "stream.events-supported", "SSF 8.1.1", W, "events_supported present with only SSF/CAEP/RISC/SCIM URIs"
)
UPDATE = check("stream.update", "SSF 8.1.1.3", W, "PATCH answers 200 with the config and iss")
REPLACE = check("stream.replace", "SSF 8.1.1.4", W, "PUT answers 200 with the config and iss")
STATUS_READ = check("status.read", "SSF 8.1.2.1", W, "status GET ?stream_id= answers 200")
STATUS_UPDATE = check("status.update", "SSF 8.1.2.2", F, "status POST for enabled/paused/disabled succeeds")
STATUS_UPDATE_200 = check("status.update-200", "SSF 8.1.2.2", W, "status POST answers 200")
STATUS_UPDATE_JSON = check("status.update-json", "SSF 8.1.2.2", W, "status POST answers a JSON object")
STATUS_UPDATE_ECHO = check("status.update-echo", "SSF 8.1.2.2", W, "status POST echoes the new status")
DELETE = check("stream.delete", "SSF 8.1.1.5", F, "DELETE ?stream_id= answers 204")

HAPPY_CHECKS = (
    *PREAMBLE,
    STREAM_CREATE,
    CREATE_201,
    CREATE_ISS,
    CREATE_AUD,
    CREATE_METHOD,
    CREATE_REQUIRED,
    READ,
    EVENTS_SUPPORTED,
    UPDATE,
    REPLACE,
    STATUS_READ,
    STATUS_UPDATE,
    STATUS_UPDATE_200,
    STATUS_UPDATE_JSON,
    STATUS_UPDATE_ECHO,
    DELETE,
)
REQUIRED_MEMBERS = ("stream_id", "iss", "aud", "events_delivered", "delivery")


def known_event(uri: str) -> bool:
    return uri in EVENT_MODELS or uri.lower().startswith(SCIM_EVENT_PREFIX)


def check_created(
    kit: TransmitterKit,
    run: ModuleRun,
    resp: httpx.Response,
    cfg: dict[str, Any],
    c201: Check,
    ciss: Check,
    caud: Check,
    cmethod: Check,
    creq: Check,
) -> None:
    issuer = str(kit.metadata.get("issuer", ""))
    run.expect_status(c201, resp.status_code, (201,), "create")
    iss = cfg.get("iss")
    run.expect(
        ciss,
        isinstance(iss, str) and iss.rstrip("/") == issuer.rstrip("/"),
        f"config iss {iss!r} differs from issuer {issuer!r}",
        "iss ok",
    )
    run.expect(caud, "aud" in cfg, "config has no aud", "aud present")
    d = cfg.get("delivery")
    method = d.get("method") if isinstance(d, dict) else None
    run.expect(
        cmethod,
        isinstance(method, str) and uris.normalize_delivery_method(method) in (uris.PUSH, uris.POLL),
        f"delivery.method is {method!r}",
        "method ok",
    )
    missing = [m for m in REQUIRED_MEMBERS if m not in cfg]
    run.expect(creq, not missing, f"config lacks {', '.join(missing)}", "required members present")


def check_events_supported(run: ModuleRun, cfg: dict[str, Any], c: Check) -> list[str]:
    es = cfg.get("events_supported")
    if not isinstance(es, list):
        run.record(c, False, "events_supported is missing")
        return []
    unknown = [u for u in es if not isinstance(u, str) or not known_event(u)]
    run.expect(c, not unknown, f"non-standard event URIs: {unknown[:3]}", f"{len(es)} standard URIs")
    return [u for u in es if isinstance(u, str)]


def check_iss_response(
    kit: TransmitterKit, run: ModuleRun, c: Check, resp: httpx.Response, what: str
) -> None:
    body = json_of(resp)
    issuer = str(kit.metadata.get("issuer", ""))
    iss = body.get("iss") if isinstance(body, dict) else None
    run.expect(
        c,
        resp.status_code == 200 and isinstance(iss, str) and iss.rstrip("/") == issuer.rstrip("/"),
        f"{what}: HTTP {resp.status_code}, iss {iss!r}",
        f"{what}: 200",
    )


@module(
    "openid-ssf-stream-control-happy-path",
    "transmitter",
    "Create, read, update, replace, status read/update, delete one stream",
    HAPPY_CHECKS,
)
async def happy_path(kit: TransmitterKit, run: ModuleRun) -> None:
    await kit.setup(run)
    resp, stream = await kit.create_stream(run)
    assert stream is not None
    url = kit.need_endpoint("configuration_endpoint")
    try:
        check_created(
            kit, run, resp, stream.config, CREATE_201, CREATE_ISS, CREATE_AUD, CREATE_METHOD, CREATE_REQUIRED
        )
        r = await kit.call("GET", url, params={"stream_id": stream.id})
        check_iss_response(kit, run, READ, r, "read")
        cfg = json_of(r)
        if isinstance(cfg, dict):
            check_events_supported(run, cfg, EVENTS_SUPPORTED)
        if kit.caep:
            run.note("CAEP profile: PATCH, PUT and status POST are not exercised")
        else:
            body, _, _ = kit.create_body()
            if stream.key is not None:  # keep the push endpoint that belongs to this stream
                body["delivery"] = stream.config.get("delivery", body["delivery"])
                if stream.authorization and isinstance(body["delivery"], dict):
                    body["delivery"] = {**body["delivery"], "authorization_header": stream.authorization}
            body["stream_id"] = stream.id
            body["description"] = "Updated: " + body["description"]
            r = await kit.call("PATCH", url, body=body)
            check_iss_response(kit, run, UPDATE, r, "PATCH")
            body["description"] = "Replaced: " + body["description"]
            r = await kit.call("PUT", url, body=body)
            check_iss_response(kit, run, REPLACE, r, "PUT")
        r = await kit.get_status(stream)
        run.expect_status(STATUS_READ, r.status_code, (200,), "status GET")
        if not kit.caep:
            for status in ("enabled", "paused", "disabled"):
                r = await kit.set_status(stream, status)
                run.expect(
                    STATUS_UPDATE,
                    r.status_code in (200, 202),
                    f"status POST {status}: HTTP {r.status_code}",
                    f"status POST {status}",
                )
                run.expect_status(STATUS_UPDATE_200, r.status_code, (200,), f"status POST {status}")
                data = json_of(r)
                run.expect(
                    STATUS_UPDATE_JSON, isinstance(data, dict), f"{status}: body is not a JSON object", "JSON"
                )
                if r.status_code == 200:
                    got = data.get("status") if isinstance(data, dict) else None
                    run.expect(
                        STATUS_UPDATE_ECHO, got == status, f"echoed status {got!r}, sent {status}", status
                    )
    finally:
        r = await kit.call("DELETE", url, params={"stream_id": stream.id})
    run.expect_status(DELETE, r.status_code, (204,), "DELETE", stop=True)


# ---- the error modules ------------------------------------------------------------------

BROKEN = b";{ broken"


def invalid_token() -> str:
    return f"invalid:{uuid.uuid4()}"


ErrorFlow = Callable[[TransmitterKit, ModuleRun, Check], Awaitable[None]]
BodyOf = Callable[[TransmitterKit, Stream], dict[str, Any]]


def error_module(
    name: str, check_id: str, requirement: str, title: str, *, caep: bool = True
) -> Callable[[ErrorFlow], ErrorFlow]:
    c = check(check_id, requirement, F, title)
    profiles = ("default", "caep-interop") if caep else ("default",)

    def wrap(flow: ErrorFlow) -> ErrorFlow:
        async def run_it(kit: TransmitterKit, run: ModuleRun) -> None:
            await kit.setup(run)
            await flow(kit, run, c)

        module(name, "transmitter", title, (*PREAMBLE, STREAM_CREATE, TEARDOWN_DELETE, c), profiles=profiles)(
            run_it
        )
        return flow

    return wrap


async def _created_then_deleted(kit: TransmitterKit, run: ModuleRun) -> Stream:
    _, stream = await kit.create_stream(run)
    assert stream is not None
    await kit.delete_stream(run, stream)
    return stream


def _patch_body(description: str) -> BodyOf:
    return lambda kit, stream: {"stream_id": stream.id, "description": description}


def _replace_body(kit: TransmitterKit, stream: Stream) -> dict[str, Any]:
    body, _, _ = kit.create_body()
    body["stream_id"] = stream.id
    return body


@dataclass(frozen=True)
class Probe:
    """An error flow: one configuration-endpoint request that must answer one of `expect`.

    `stream` is None (no stream), "live" (created first, deleted afterwards) or "deleted" (created
    and deleted before the request); `body` builds the JSON body from that stream, `by_id` sends
    ?stream_id=, `broken` sends unparsable JSON and `bad_token` an invalid bearer token.
    """

    method: str
    expect: tuple[int, ...]
    label: str
    stream: Literal["live", "deleted"] | None = None
    body: BodyOf | None = None
    by_id: bool = False
    broken: bool = False
    bad_token: bool = False

    @property
    def caep(self) -> bool:
        """The CAEP interoperability profile does not exercise PATCH and PUT."""
        return self.method not in ("PATCH", "PUT")

    async def __call__(self, kit: TransmitterKit, run: ModuleRun, c: Check) -> None:
        target: Stream | None = None
        if self.stream == "deleted":
            target = await _created_then_deleted(kit, run)
        elif self.stream == "live":
            _, target = await kit.create_stream(run)
            assert target is not None
        try:
            r = await kit.call(
                self.method,
                kit.need_endpoint("configuration_endpoint"),
                body=self.body(kit, target) if self.body is not None and target is not None else None,
                content=BROKEN if self.broken else None,
                params={"stream_id": target.id} if self.by_id and target is not None else None,
                token=invalid_token() if self.bad_token else None,
            )
            run.expect_status(c, r.status_code, self.expect, self.label)
        finally:
            if self.stream == "live":
                await kit.delete_stream(run, target)


async def _create_token(kit: TransmitterKit, run: ModuleRun, c: Check) -> None:
    body, _, _ = kit.create_body()
    r = await kit.call("POST", kit.need_endpoint("configuration_endpoint"), body=body, token=invalid_token())
    run.expect_status(c, r.status_code, (401,), "create with invalid token")
    if r.status_code in (200, 201):
        data = json_of(r)
        if isinstance(data, dict) and isinstance(data.get("stream_id"), str):
            await kit.delete_stream(None, Stream(data))


async def _create_dup(kit: TransmitterKit, run: ModuleRun, c: Check) -> None:
    resp, first = await kit.create_stream(run)
    run.expect_status(c, resp.status_code, (201,), "first create")
    second: Stream | None = None
    try:
        body, _, _ = kit.create_body()
        if first is not None and first.key is not None:
            body["delivery"] = {**body["delivery"], "endpoint_url": kit.push_url(first.key)}
        r = await kit.call("POST", kit.need_endpoint("configuration_endpoint"), body=body)
        run.expect_status(c, r.status_code, (201, 409), "second create")
        data = json_of(r)
        if r.status_code in (200, 201) and isinstance(data, dict) and isinstance(data.get("stream_id"), str):
            second = Stream(data)
    finally:
        await kit.delete_stream(run, first)
        await kit.delete_stream(None, second)


P = "openid-ssf-stream-control-error-"

#: (module name after P, (check id, requirement, title), flow), in suite order.
ERROR_MODULES: tuple[tuple[str, tuple[str, str, str], ErrorFlow], ...] = (
    (
        "create-stream-with-broken-input",
        ("errors.create-broken-input", "SSF 8.1.1.1", "create with unparsable JSON answers 400"),
        Probe("POST", (400,), "create with broken JSON", broken=True),
    ),
    (
        "create-stream-with-invalid-token",
        ("errors.create-invalid-token", "SSF 8.1.1.1", "create with an invalid token answers 401"),
        _create_token,
    ),
    (
        "create-stream-with-duplicate-config",
        ("errors.create-duplicate", "SSF 8.1.1.1", "a second create answers 201 (new stream) or 409"),
        _create_dup,
    ),
    (
        "read-stream-with-invalid-token",
        ("errors.read-invalid-token", "SSF 8.1.1.2", "read with an invalid token answers 401"),
        Probe("GET", (401,), "GET with invalid token", bad_token=True),
    ),
    (
        "read-unknown-stream",
        ("errors.read-unknown-stream", "SSF 8.1.1.2", "read of a deleted stream answers 404"),
        Probe("GET", (404,), "GET deleted stream", stream="deleted", by_id=True),
    ),
    (
        "update-stream-with-invalid-token",
        ("errors.update-invalid-token", "SSF 8.1.1.3", "PATCH with an invalid token answers 400 or 401"),
        Probe(
            "PATCH",
            (400, 401),
            "PATCH with invalid token",
            stream="live",
            body=_patch_body("invalid token update"),
            bad_token=True,
        ),
    ),
    (
        "update-stream-with-invalid-body",
        ("errors.update-invalid-body", "SSF 8.1.1.3", "PATCH with unparsable JSON answers 400"),
        Probe("PATCH", (400,), "PATCH with broken JSON", broken=True),
    ),
    (
        "update-unknown-stream",
        ("errors.update-unknown-stream", "SSF 8.1.1.3", "PATCH of a deleted stream answers 404"),
        Probe(
            "PATCH",
            (404,),
            "PATCH deleted stream",
            stream="deleted",
            body=_patch_body("update of a deleted stream"),
        ),
    ),
    (
        "replace-stream-with-invalid-body",
        ("errors.replace-invalid-body", "SSF 8.1.1.4", "PUT with unparsable JSON answers 400"),
        Probe("PUT", (400,), "PUT with broken JSON", broken=True),
    ),
    (
        "replace-stream-with-invalid-token",
        ("errors.replace-invalid-token", "SSF 8.1.1.4", "PUT with an invalid token answers 401"),
        Probe("PUT", (401,), "PUT with invalid token", stream="live", body=_replace_body, bad_token=True),
    ),
    (
        "replace-unknown-stream",
        ("errors.replace-unknown-stream", "SSF 8.1.1.4", "PUT of a deleted stream answers 404"),
        Probe("PUT", (404,), "PUT deleted stream", stream="deleted", body=_replace_body),
    ),
    (
        "delete-stream-with-invalid-token",
        (
            "errors.delete-invalid-token",
            "SSF 8.1.1.5",
            "DELETE with an invalid token answers 401 (before 404)",
        ),
        Probe("DELETE", (401,), "DELETE with invalid token", stream="deleted", by_id=True, bad_token=True),
    ),
    (
        "delete-unknown-stream",
        ("errors.delete-unknown-stream", "SSF 8.1.1.5", "DELETE of a deleted stream answers 404"),
        Probe("DELETE", (404,), "DELETE deleted stream", stream="deleted", by_id=True),
    ),
)

for _suffix, (_check_id, _requirement, _title), _flow in ERROR_MODULES:
    error_module(
        P + _suffix,
        _check_id,
        _requirement,
        _title,
        caep=not isinstance(_flow, Probe) or _flow.caep,
    )(_flow)


# ---- subject control ---------------------------------------------------------------------

SUBJECT_CREATE_ISS = check("subjects.create-iss", "SSF 8.1.1.1", W, "created config iss equals the issuer")
SUBJECT_ADD = check("subjects.add-200", "SSF 8.1.3.2", W, "add subject answers 200")
SUBJECT_REMOVE = check("subjects.remove-204", "SSF 8.1.3.3", W, "remove subject answers 204")
SUITE_SUBJECT = {"format": "email", "email": "example.user@example.com"}


@module(
    "openid-ssf-stream-subject-control",
    "transmitter",
    "Add then remove a subject on a new stream",
    (*PREAMBLE, STREAM_CREATE, SUBJECT_CREATE_ISS, SUBJECT_ADD, SUBJECT_REMOVE, TEARDOWN_DELETE),
    profiles=("default",),
)
async def subject_control(kit: TransmitterKit, run: ModuleRun) -> None:
    await kit.setup(run)
    kit.need_endpoint("add_subject_endpoint")
    kit.need_endpoint("remove_subject_endpoint")
    resp, stream = await kit.create_stream(run)
    assert stream is not None
    try:
        iss = stream.config.get("iss")
        issuer = str(kit.metadata.get("issuer", ""))
        run.expect(
            SUBJECT_CREATE_ISS,
            resp.status_code == 201 and isinstance(iss, str) and iss.rstrip("/") == issuer.rstrip("/"),
            f"create: HTTP {resp.status_code}, iss {iss!r}",
            "201 + iss",
        )
        r = await kit.add_subject(stream, SUITE_SUBJECT, verified=True)
        run.expect_status(SUBJECT_ADD, r.status_code, (200,), "add subject")
        r = await kit.remove_subject(stream, SUITE_SUBJECT)
        run.expect_status(SUBJECT_REMOVE, r.status_code, (204,), "remove subject")
    finally:
        await kit.delete_stream(run, stream)


__all__ = ["INTEROP_EVENTS", "check_created", "check_events_supported", "known_event"]
