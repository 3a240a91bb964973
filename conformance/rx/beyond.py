"""The kit's own receiver modules beyond the suite: critical subject members (SSF 3.6),
events for removed subjects (SSF 9.3), the stream configuration's ``iss`` (SSF 8.1.1.1) and
TLS certificate validation (CAEPIOP 2.1). Each is judged by the wire: what the receiver
answered, what it asked for next, and what its protected resource enforces.
"""

from __future__ import annotations

from conformance.registry import Check, ModuleRun, Severity, SkipModule, check, module
from conformance.rx.context import CRITICAL_MEMBER, IMPOSTOR_ISS, ProbeSession, ReceiverKit
from conformance.rx.emulator import Exchange

F, W = Severity.FAILURE, Severity.WARNING


def _answer(ex: Exchange | None) -> str:
    if ex is None:
        return "not sent"
    if ex.via == "push":
        return f"HTTP {ex.status}" if ex.status is not None else "no answer"
    return "acknowledged" if ex.acked else f"setErrs {ex.set_err}" if ex.set_err else "not acknowledged"


def _ok(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


def _contacted(kit: ReceiverKit) -> None:
    if not kit.em.ops:
        raise SkipModule("the receiver never contacted the kit's issuer")


# ---- critical subject members -----------------------------------------------------------------

CRITICAL = check(
    "rx.critical-member.discarded",
    "SSF 3.6",
    F,
    "an event whose subject has a critical member the receiver cannot process changes nothing it enforces",
)


@module(
    "kit-receiver-critical-subject-members",
    "receiver",
    "An event naming an unprocessable critical subject member is discarded (seen at --probe-url)",
    (CRITICAL,),
    origin="kit",
)
async def critical_members(kit: ReceiverKit, run: ModuleRun) -> None:
    if not kit.opts.probe_url:
        raise SkipModule("needs --probe-url: a resource the receiver protects, to see what it enforces")
    _contacted(kit)
    p = kit.critical
    if p is None:
        run.skip(CRITICAL, "no events were sent: the receiver never completed a verification")
        return
    if not _ok(p.baseline):
        run.skip(
            CRITICAL,
            f"the probe URL refused the kit's access token before any event (HTTP {p.baseline}): let the"
            f" receiver accept RFC 9068 tokens from {kit.em.issuer} (JWKS {kit.em.issuer}/jwks,"
            f" aud {kit.opts.probe_audience})",
        )
        return
    what = (
        f"a session-revoked for {p.user} naming critical member {CRITICAL_MEMBER!r} ({_answer(p.critical)})"
    )
    if not _ok(p.after_critical):
        run.record(
            CRITICAL, False, f"after {what} the probe got HTTP {p.after_critical}: the receiver acted on it"
        )
        return
    if _ok(p.after_control) or p.after_control is None:
        run.skip(
            CRITICAL,
            f"the control (the same event without the critical member, {_answer(p.control)}) changed"
            f" nothing either (HTTP {p.after_control}): the probe cannot show what the receiver enforces",
        )
        return
    run.record(
        CRITICAL,
        True,
        f"ignored {what} (probe HTTP {p.after_critical}); enforced the control (HTTP {p.after_control})",
    )


# ---- events for removed subjects ----------------------------------------------------------------

REMOVED = check(
    "rx.removed-subject.tolerated",
    "SSF 9.3",
    F,
    "a SET about a subject the receiver removed is accepted (202 / acknowledged), not reported as an error",
)


@module(
    "kit-receiver-removed-subjects",
    "receiver",
    "After the receiver removes a subject, the kit sends an event about it: tolerated, no error",
    (REMOVED,),
    profiles=("default",),
    origin="kit",
)
async def removed_subjects(kit: ReceiverKit, run: ModuleRun) -> None:
    _contacted(kit)
    if not kit.succeeded("subject-remove"):
        run.skip(REMOVED, "the receiver removed no subject (SSF 8.1.3.3; an operator may remove one)")
        return
    sent = [e for e in kit.removed if e.done.is_set()]
    if not sent:
        run.skip(REMOVED, "no SET could be sent after the removal (the stream went away first)")
        return
    refused = [f"{e.jti[:8]}: {_answer(e)}" for e in sent if not e.accepted]
    run.expect(
        REMOVED, not refused, f"SET for a removed subject: {', '.join(refused)}", f"{len(sent)} accepted"
    )


# ---- iss of stream configurations ----------------------------------------------------------------

ISS = check(
    "rx.stream-iss.checked",
    "SSF 8.1.1.1",
    F,
    "a stream configuration whose iss is not the discovered issuer is not used"
    " (no verification, poll, update, status or subject call follows)",
)

#: Calls that use a stream. Reads, a DELETE and new creates are allowed after a wrong ``iss``.
USE = frozenset({"verify", "poll", "update", "replace", "status-update", "subject-add", "subject-remove"})


def _restartable(kit: ReceiverKit) -> None:
    if not kit.can_restart:
        raise SkipModule("needs --start-cmd and --stop-cmd: the receiver is started again at a second issuer")


@module(
    "kit-receiver-stream-iss",
    "receiver",
    "The receiver started at a second issuer whose stream configurations carry a foreign iss",
    (ISS,),
    origin="kit",
)
async def stream_iss(kit: ReceiverKit, run: ModuleRun) -> None:
    _restartable(kit)
    _contacted(kit)
    p = kit.iss_probe
    if p is None or not p.contacted:
        where = p.issuer if p else "the second issuer"
        run.skip(ISS, f"the receiver made no create call at {where}")
        return
    baseline = sorted({o.kind for o in kit.em.ops if o.kind in USE})
    if not baseline:
        run.skip(
            ISS, "with a correct iss the receiver did not use its stream either: refusal is not observable"
        )
        return
    used = [f"{o.method} {o.path} ({o.kind})" for o in p.ops if o.kind in USE]
    after = ", ".join(sorted({o.kind for o in p.ops})) or "nothing"
    run.expect(
        ISS,
        not used,
        f"after a create answered with iss {IMPOSTOR_ISS!r} the receiver went on: {', '.join(used[:4])}",
        f"create answered with iss {IMPOSTOR_ISS!r}: then only {after}"
        f" (with the right iss: {', '.join(baseline)})",
    )


# ---- TLS certificate validation ------------------------------------------------------------------

TLS_SELF_SIGNED = check(
    "rx.tls.self-signed",
    "CAEPIOP 2.1 / RFC 9110 4.3.4",
    W,
    "a transmitter whose TLS certificate is self-signed is refused: no request is sent to it",
    caep=F,
)
TLS_WRONG_HOST = check(
    "rx.tls.wrong-host",
    "CAEPIOP 2.1 / RFC 9110 4.3.4 / RFC 6125 6",
    W,
    "a certificate from a trusted CA but for another host name is refused: no request is sent",
    caep=F,
)


def _judge_tls(run: ModuleRun, c: Check, p: ProbeSession | None, what: str) -> None:
    if p is None:
        return
    seen = p.front.describe() if p.front else ""
    if not p.contacted:
        run.skip(c, f"the receiver never connected to {p.issuer}")
        return
    run.expect(
        c,
        not p.ops,
        f"{what}: the receiver went on and sent {', '.join(p.requests()[:3])} ({seen})",
        f"{what}: refused, no request sent ({seen})",
    )


@module(
    "kit-receiver-tls",
    "receiver",
    "The receiver started at an https issuer with a self-signed, then a wrong-host certificate",
    (TLS_SELF_SIGNED, TLS_WRONG_HOST),
    origin="kit",
)
async def tls(kit: ReceiverKit, run: ModuleRun) -> None:
    _restartable(kit)
    _contacted(kit)
    probes = kit.tls_probes
    trusted = probes.get("trusted")
    if trusted is not None:
        run.note(
            f"control with a certificate from the kit's CA ({kit.ca_file}): {len(trusted.ops)} request(s)"
        )
    _judge_tls(run, TLS_SELF_SIGNED, probes.get("self-signed"), "self-signed certificate for the right host")
    if "wrong-host" in probes:
        _judge_tls(run, TLS_WRONG_HOST, probes["wrong-host"], "CA-signed certificate for another host")
    else:
        run.skip(
            TLS_WRONG_HOST,
            f"the receiver sent nothing even with a certificate from the kit's CA: trust {kit.ca_file}"
            " ({ca_file} in --start-cmd) to judge host-name checks",
        )
