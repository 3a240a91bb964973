"""Receiver modules of the suite (digest 11.4) and the kit's wire checks on what the
receiver asked for; they judge the session the emulated transmitter recorded."""

from __future__ import annotations

from conformance.registry import Check, ModuleRun, Severity, SkipModule, check, module
from conformance.rx.context import ReceiverKit
from conformance.rx.emulator import INTEROP, Exchange
from ssf import uris
from ssf.metadata import well_known_url

F, W = Severity.FAILURE, Severity.WARNING


def _stream_id(kit: ReceiverKit, run: ModuleRun, create: Check | None = None) -> str:
    """The stream the receiver made; a module about streams skips only if it never called."""
    if kit.created_id is None:
        if not kit.em.ops:
            raise SkipModule("the receiver never contacted the kit's issuer")
        tried = kit.ops("create")
        why = (
            f"stream creation failed (HTTP {tried[-1].status})" if tried else "the receiver created no stream"
        )
        run.record(create or ANY_CREATE, False, why, stop=True)
    if create is not None:
        run.record(create, True, "create seen")
    assert kit.created_id is not None
    return kit.created_id


ANY_CREATE = check("rx.create", "SSF 8.1.1.1", F, "the receiver creates a stream at the kit's issuer")


def _seen(kit: ReceiverKit, run: ModuleRun, c: Check, kind: str, sid: str, what: str) -> bool:
    ok = bool(kit.succeeded(kind, sid))
    tried = kit.ops(kind, sid)
    why = f"no {what} for stream {sid}" if not tried else f"{what} failed (HTTP {tried[-1].status})"
    return run.expect(c, ok, why, f"{what} seen")


def _accepted(ex: Exchange) -> str:
    if ex.via == "push":
        return f"HTTP {ex.status}"
    return "acknowledged" if ex.acked else f"setErrs {ex.set_err}" if ex.set_err else "not acknowledged"


def op_check(name: str, op: str, requirement: str) -> Check:
    return check(f"rx.{name}.{op}", requirement, F, f"{name}: the receiver performs {op}")


# ---- happy path, create-delete, status update ------------------------------------------------

HP = {
    k: op_check("happypath", k, r)
    for k, r in (
        ("create", "SSF 8.1.1.1"),
        ("read", "SSF 8.1.1.2"),
        ("update", "SSF 8.1.1.3"),
        ("replace", "SSF 8.1.1.4"),
        ("delete", "SSF 8.1.1.5"),
    )
}


@module(
    "openid-ssf-receiver-happypath",
    "receiver",
    "The receiver creates, reads, updates, replaces and deletes its stream",
    tuple(HP.values()),
    profiles=("default",),
)
async def happypath(kit: ReceiverKit, run: ModuleRun) -> None:
    sid = _stream_id(kit, run, HP["create"])
    for kind, c in HP.items():
        if kind != "create":
            _seen(kit, run, c, kind, sid, kind)


CD = {k: op_check("create-delete", k, r) for k, r in (("create", "SSF 8.1.1.1"), ("delete", "SSF 8.1.1.5"))}


@module(
    "openid-ssf-receiver-stream-create-delete",
    "receiver",
    "The receiver creates and deletes a stream",
    tuple(CD.values()),
)
async def create_delete(kit: ReceiverKit, run: ModuleRun) -> None:
    sid = _stream_id(kit, run, CD["create"])
    _seen(kit, run, CD["delete"], "delete", sid, "delete")


SU = {
    k: op_check("status-update", k, r)
    for k, r in (
        ("create", "SSF 8.1.1.1"),
        ("status-update", "SSF 8.1.2.2"),
        ("delete", "SSF 8.1.1.5"),
    )
}


@module(
    "openid-ssf-receiver-stream-status-update",
    "receiver",
    "The receiver creates a stream, updates its status and deletes it",
    tuple(SU.values()),
    profiles=("default",),
)
async def status_update(kit: ReceiverKit, run: ModuleRun) -> None:
    sid = _stream_id(kit, run, SU["create"])
    for kind in ("status-update", "delete"):
        _seen(kit, run, SU[kind], kind, sid, kind)


# ---- verification ----------------------------------------------------------------------------

V_CREATE = op_check("verification", "create", "SSF 8.1.1.1")
V_VERIFY = op_check("verification", "verify", "SSF 8.1.4.2")
V_ACCEPT = check(
    "rx.verification.accepted", "SSF 8.1.4.1 / RFC 8935 2.2", F, "the verification SET is accepted"
)
V_DELETE = op_check("verification", "delete", "SSF 8.1.1.5")


@module(
    "openid-ssf-receiver-stream-verification",
    "receiver",
    "The receiver requests verification and accepts the verification SET",
    (V_CREATE, V_VERIFY, V_ACCEPT, V_DELETE),
)
async def verification(kit: ReceiverKit, run: ModuleRun) -> None:
    sid = _stream_id(kit, run, V_CREATE)
    if _seen(kit, run, V_VERIFY, "verify", sid, "verification request"):
        sent = [e for e in kit.exchanges("verification") if e.state]
        ok = any(e.accepted for e in sent)
        why = ", ".join(_accepted(e) for e in sent) or "no verification SET was sent"
        run.expect(V_ACCEPT, ok, f"stateful verification SET: {why}", "accepted")
    else:
        run.skip(V_ACCEPT, "no verification was requested")
    _seen(kit, run, V_DELETE, "delete", sid, "delete")


U_ACCEPT = check(
    "rx.unsolicited.accepted",
    "SSF 8.1.4.1 / RFC 8935 2.2",
    F,
    "an unsolicited (stateless) verification SET is accepted",
)
U_DELETE = op_check("unsolicited", "delete", "SSF 8.1.1.5")


@module(
    "openid-ssf-receiver-unsolicited-stream-verification",
    "receiver",
    "The receiver accepts a verification SET it did not ask for",
    (ANY_CREATE, U_ACCEPT, U_DELETE),
)
async def unsolicited(kit: ReceiverKit, run: ModuleRun) -> None:
    sid = _stream_id(kit, run)
    sent = kit.exchanges("unsolicited")
    run.expect(
        U_ACCEPT,
        bool(sent) and all(e.accepted for e in sent),
        f"stateless verification SET: {', '.join(_accepted(e) for e in sent) or 'not sent'}",
        "accepted",
    )
    _seen(kit, run, U_DELETE, "delete", sid, "delete")


# ---- supported events ------------------------------------------------------------------------

E_ACCEPT = check(
    "rx.supported-events.accepted",
    "RFC 8935 2.2 / RFC 8936 2.2",
    F,
    "one SET of every delivered type is accepted",
)
E_DELETE = op_check("supported-events", "delete", "SSF 8.1.1.5")


@module(
    "openid-ssf-receiver-stream-supported-events",
    "receiver",
    "The receiver accepts an example SET of every type in events_delivered",
    (ANY_CREATE, E_ACCEPT, E_DELETE),
)
async def supported_events(kit: ReceiverKit, run: ModuleRun) -> None:
    sid = _stream_id(kit, run)
    sent = kit.exchanges("event")
    if not kit.events_sent:
        run.record(
            E_ACCEPT, False, "no example events were sent: the receiver never completed a verification"
        )
    else:
        refused = [f"{e.event_type.rsplit('/', 1)[-1]} ({_accepted(e)})" for e in sent if not e.accepted]
        run.expect(E_ACCEPT, not refused, f"not accepted: {', '.join(refused)}", f"{len(sent)} accepted")
    _seen(kit, run, E_DELETE, "delete", sid, "delete")


# ---- CAEP interop ----------------------------------------------------------------------------

C_REQUESTED = check(
    "rx.caep.events-requested", "CAEPIOP 3", F, "the create request asks for at least one interop event type"
)
C_READ = op_check("caep", "read", "SSF 8.1.1.2")
C_STATUS = op_check("caep", "status-read", "CAEPIOP 2.3.5")
C_VERIFY = op_check("caep", "verify", "SSF 8.1.4.2")
C_ACCEPT = check("rx.caep.accepted", "CAEPIOP 2.4", F, "the verification and interop SETs are accepted")


@module(
    "openid-ssf-receiver-stream-caep-interop",
    "receiver",
    "CAEP interop: create asking for interop events, read, status, verify, accept the events",
    (ANY_CREATE, C_REQUESTED, C_READ, C_STATUS, C_VERIFY, C_ACCEPT),
    profiles=("caep-interop",),
)
async def caep(kit: ReceiverKit, run: ModuleRun) -> None:
    sid = _stream_id(kit, run)
    create = kit.succeeded("create", sid)[0]
    requested = create.body.get("events_requested") if isinstance(create.body, dict) else None
    run.expect(
        C_REQUESTED,
        isinstance(requested, list) and any(u in INTEROP for u in requested),
        f"events_requested is {requested!r}",
        "interop events requested",
    )
    _seen(kit, run, C_READ, "read", sid, "read")
    _seen(kit, run, C_STATUS, "status-read", sid, "status read")
    _seen(kit, run, C_VERIFY, "verify", sid, "verification request")
    sent = [e for e in kit.exchanges("verification") if e.state] + kit.exchanges("event")
    refused = [e.event_type.rsplit("/", 1)[-1] for e in sent if not e.accepted]
    run.expect(C_ACCEPT, bool(sent) and not refused, f"not accepted: {refused or 'nothing sent'}", "accepted")


# ---- the kit's wire checks on the receiver's requests ----------------------------------------

W_DISCOVERY = check(
    "rx.discovery", "SSF 7.2.1", F, "metadata is fetched with GET at the path-inserted well-known URL"
)
W_TOKEN_SCOPE = check(
    "rx.token-scope", "CAEPIOP 2.7.3", F, "token requests ask for a scope of ssf.read and/or ssf.manage only"
)
W_BEARER = check("rx.bearer", "SSF 8 / RFC 6750 2.1", F, "every management call carries a valid bearer token")
W_CREATE_BODY = check(
    "rx.create-body", "SSF 8.1.1.1", F, "create bodies are JSON without transmitter-supplied properties"
)
W_UPDATE_BODY = check(
    "rx.update-body",
    "SSF 8.1.1.3-8.1.1.4",
    F,
    "PATCH/PUT carry stream_id and no other transmitter-supplied property",
)
W_QUERY = check(
    "rx.stream-id-query", "SSF 8.1.1.5 / 8.1.2.1", F, "DELETE and status GET name the stream in ?stream_id="
)
W_PUSH_202 = check("rx.push-202", "RFC 8935 2.2", F, "every valid pushed SET is answered 202")
W_PUSH_EMPTY = check("rx.push-empty-body", "RFC 8935 2.2", W, "202 answers have an empty body")
W_POLL_ACK = check("rx.poll-ack", "RFC 8936 2.2-2.4", F, "every valid polled SET is acknowledged")
W_POLL_QUERY = check("rx.poll-query-kept", "SSF 6.1.2", F, "polls keep the endpoint_url query string")


@module(
    "kit-receiver-wire",
    "receiver",
    "What the receiver sends: discovery, tokens, request bodies, push answers, poll acks",
    (
        W_DISCOVERY,
        W_TOKEN_SCOPE,
        W_BEARER,
        W_CREATE_BODY,
        W_UPDATE_BODY,
        W_QUERY,
        W_PUSH_202,
        W_PUSH_EMPTY,
        W_POLL_ACK,
        W_POLL_QUERY,
    ),
    origin="kit",
)
async def wire(kit: ReceiverKit, run: ModuleRun) -> None:
    em = kit.em
    disc = kit.ops("discovery")
    if not disc:
        if kit.created_id is None:
            raise SkipModule("the receiver never contacted the kit's issuer")
        run.record(W_DISCOVERY, False, f"never fetched {well_known_url(em.issuer)}")
    else:
        bad = [o.method for o in disc if o.method != "GET"]
        run.expect(W_DISCOVERY, not bad, f"metadata requested with {', '.join(bad)}", "GET")
    tokens = kit.ops("token")
    if tokens:
        bad_scope = [p for o in tokens for p in o.problems]
        run.expect(W_TOKEN_SCOPE, not bad_scope, f"token request: {', '.join(bad_scope)}", "scope ok")
    else:
        run.skip(W_TOKEN_SCOPE, "no token request (static token)")
    mgmt = [o for o in em.ops if o.kind not in ("discovery", "token")]
    unauth = [f"{o.method} {o.path}" for o in mgmt if "no valid bearer token" in o.problems]
    run.expect(W_BEARER, not unauth, f"without a valid token: {', '.join(unauth[:3])}", f"{len(mgmt)} calls")

    def problems(kinds: tuple[str, ...]) -> list[str]:
        return [p for o in em.ops if o.kind in kinds for p in o.problems if p != "no valid bearer token"]

    creates = kit.ops("create")
    if creates:
        p = problems(("create",))
        run.expect(W_CREATE_BODY, not p, "; ".join(p), "ok")
    updates = kit.ops("update") + kit.ops("replace")
    if updates:
        p = problems(("update", "replace"))
        run.expect(W_UPDATE_BODY, not p, "; ".join(p), "ok")
    q = problems(("delete", "status-read"))
    if kit.ops("delete") or kit.ops("status-read"):
        run.expect(W_QUERY, not q, "; ".join(q), "ok")
    valid = [
        e
        for e in em.exchanges
        if e.kind in ("unsolicited", "verification", "event", "corpus-valid", "corpus-resend", "corpus-probe")
    ]
    pushed = [e for e in valid if e.via == "push"]
    polled = [e for e in valid if e.via == "poll"]
    if pushed:
        not202 = [f"{e.kind}:{e.status}" for e in pushed if e.status != 202]
        run.expect(W_PUSH_202, not not202, f"not 202: {', '.join(not202[:5])}", f"{len(pushed)} x 202")
        bodies = [e.kind for e in pushed if e.status == 202 and e.body.strip()]
        run.expect(W_PUSH_EMPTY, not bodies, f"202 with a body for {', '.join(bodies[:3])}", "empty")
    if polled:
        unacked = [f"{e.kind}:{_accepted(e)}" for e in polled if not e.acked]
        run.expect(
            W_POLL_ACK, not unacked, f"not acknowledged: {', '.join(unacked[:5])}", f"{len(polled)} acked"
        )
        lost = [o for o in kit.ops("poll") if "poll without the endpoint_url's ?stream_id=" in o.problems]
        run.expect(W_POLL_QUERY, not lost, f"{len(lost)} poll(s) dropped the query string", "kept")


__all__ = ["uris"]
