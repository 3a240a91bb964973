"""The bad-SET corpus: SETs a receiver must refuse, each with the error code it should
answer (RFC 8935 §2.3-2.4, SSF §4.1, §8.1.4.1), and proof that a refusal left no trace.

"No state change" is judged on the wire: after each refused SET, a *valid* SET reusing
the refused one's ``jti`` must be accepted. Had the receiver recorded the refused SET,
the valid one would be "a different SET reusing a seen jti" and be refused.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from joserfc.jwk import RSAKey

from conformance.registry import Check, ModuleRun, Severity, SkipModule, check, module
from conformance.rx.context import ReceiverKit
from conformance.rx.emulator import Exchange
from conformance.tx.suite_verification import event_payload
from ssf import uris
from ssf.keys import generate_signing_key

F, W = Severity.FAILURE, Severity.WARNING

KEY_ERRS = frozenset({"invalid_key", "authentication_failed"})
REQ = frozenset({"invalid_request"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    check: Check
    errs: frozenset[str]
    #: builds (jti, compact) from the kit; None jti when the SET has none
    build: Callable[[ReceiverKit], tuple[str | None, str]]
    push_only: bool = False
    content_type: str = uris.SET_MEDIA_TYPE
    statuses: frozenset[int] = frozenset({400})
    authorization: str | bool | None = True


@dataclass(slots=True)
class CaseResult:
    case: Case
    exchange: Exchange
    probe: Exchange | None = None


def _claims(kit: ReceiverKit, **changes: Any) -> dict[str, Any]:
    em = kit.em
    c = em.claims(kit.opts.corpus_event, event_payload(kit.opts.corpus_event))
    for k, v in changes.items():
        if v is _DROP:
            c.pop(k, None)
        else:
            c[k] = v
    return c


_DROP = object()


def _signed(kit: ReceiverKit, header: dict[str, Any] | None = None, **changes: Any) -> tuple[str | None, str]:
    c = _claims(kit, **changes)
    return c.get("jti"), kit.em.sign(c, header=header)


def _bad_signature(kit: ReceiverKit) -> tuple[str | None, str]:
    jti, compact = _signed(kit)
    head, payload, sig = compact.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return jti, f"{head}.{payload}.{_b64(bytes(raw))}"


def _unknown_kid(kit: ReceiverKit) -> tuple[str | None, str]:
    stranger = generate_signing_key("ES256", kid=f"kit-unknown-{uuid.uuid4().hex[:6]}")
    c = _claims(kit)
    return c["jti"], kit.em.sign(c, key=stranger)


def _alg_none(kit: ReceiverKit) -> tuple[str | None, str]:
    c = _claims(kit)
    head = {"alg": "none", "typ": uris.SET_TYP}
    return c["jti"], f"{_b64(json.dumps(head).encode())}.{_b64(json.dumps(c).encode())}."


def _hmac_public(kit: ReceiverKit) -> tuple[str | None, str]:
    import hashlib
    import hmac

    c = _claims(kit)
    head = {"alg": "HS256", "typ": uris.SET_TYP, "kid": kit.em.rsa.kid}
    key = kit.em.rsa.key
    assert isinstance(key, RSAKey)
    secret = key.as_pem(private=False)
    signing_input = f"{_b64(json.dumps(head).encode())}.{_b64(json.dumps(c).encode())}"
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return c["jti"], f"{signing_input}.{_b64(sig)}"


def _malformed(kit: ReceiverKit) -> tuple[str | None, str]:
    return None, "this.is-not-a.jwt!"


def _oversized(kit: ReceiverKit) -> tuple[str | None, str]:
    return _signed(kit, padding="x" * (1024 * 1024))


def _two_events(kit: ReceiverKit) -> tuple[str | None, str]:
    c = _claims(kit)
    c["events"][uris.CAEP_BASE + "session-presented"] = {}
    return c["jti"], kit.em.sign(c)


def _wrong_state(kit: ReceiverKit) -> tuple[str | None, str]:
    sid = kit.em.stream["stream_id"] if kit.em.stream else "unknown"
    c = kit.em.claims(uris.VERIFICATION, {"state": f"never-requested-{uuid.uuid4().hex}"})
    c["sub_id"] = {"format": "opaque", "id": sid}
    return c["jti"], kit.em.sign(c)


def _future_iat(kit: ReceiverKit) -> tuple[str | None, str]:
    return _signed(kit, iat=int(time.time()) + 86400)


def c_(name: str, requirement: str, title: str, severity: Severity = F) -> Check:
    return check(f"corpus.{name}", requirement, severity, title)


CASES: tuple[Case, ...] = (
    Case(
        "bad-signature",
        c_(
            "bad-signature",
            "RFC 8935 2.3-2.4",
            "a SET whose signature fails is refused (invalid_key / authentication_failed)",
        ),
        KEY_ERRS,
        _bad_signature,
    ),
    Case(
        "unknown-kid",
        c_("unknown-kid", "RFC 8935 2.4 / SSF 7.1", "a SET signed by a key not in the JWKS is refused"),
        KEY_ERRS,
        _unknown_kid,
    ),
    Case(
        "alg-none",
        c_("alg-none", "SSF 4.1 / RFC 8935 2.4", "an unsigned SET (alg none) is refused"),
        KEY_ERRS | REQ,
        _alg_none,
    ),
    Case(
        "hmac-with-public-key",
        c_("hmac-public-key", "RFC 8935 2.4", "HS256 keyed with the RSA public key is refused"),
        KEY_ERRS | REQ,
        _hmac_public,
    ),
    Case(
        "wrong-typ",
        c_("wrong-typ", "SSF 4.1.1", "typ other than secevent+jwt is refused (invalid_request)"),
        REQ,
        lambda k: _signed(k, header={"typ": "JWT"}),
    ),
    Case(
        "wrong-iss",
        c_("wrong-iss", "SSF 4.1.6", "a SET from another issuer is refused (invalid_issuer)"),
        frozenset({"invalid_issuer"}),
        lambda k: _signed(k, iss="https://impostor.example.com"),
    ),
    Case(
        "wrong-aud",
        c_("wrong-aud", "SSF 4.1.8", "a SET for another audience is refused (invalid_audience)"),
        frozenset({"invalid_audience"}),
        lambda k: _signed(k, aud="https://someone-else.example.com"),
    ),
    Case(
        "sub-present",
        c_("sub-present", "SSF 4.1.2", "a SET carrying sub is refused (invalid_request)"),
        REQ,
        lambda k: _signed(k, sub="someone"),
    ),
    Case(
        "exp-present",
        c_("exp-present", "SSF 4.1.7", "a SET carrying exp is refused (invalid_request)"),
        REQ,
        lambda k: _signed(k, exp=int(time.time()) + 600),
    ),
    Case(
        "no-sub-id",
        c_("no-sub-id", "SSF 3.1", "a SET without sub_id is refused (invalid_request)"),
        REQ,
        lambda k: _signed(k, sub_id=_DROP),
    ),
    Case(
        "iat-future",
        c_("iat-future", "RFC 8417 2.2", "a SET issued a day in the future is refused (invalid_request)"),
        REQ,
        _future_iat,
    ),
    Case(
        "malformed",
        c_("malformed", "RFC 8935 2.3", "a body that is not a JWT is refused (invalid_request)"),
        REQ,
        _malformed,
    ),
    Case(
        "two-events",
        c_(
            "two-events",
            "SSF 4.1 / RFC 8417 2.2",
            "two independent events in one SET are refused (invalid_request)",
        ),
        REQ,
        _two_events,
    ),
    Case(
        "wrong-state",
        c_(
            "wrong-state",
            "SSF 8.1.4.1",
            "a verification SET with a state never requested gets invalid_state",
            W,
        ),
        frozenset({"invalid_state"}),
        _wrong_state,
    ),
    Case(
        "wrong-content-type",
        c_(
            "wrong-content-type",
            "RFC 8935 2.1",
            "a push not typed application/secevent+jwt is refused (400 / 415)",
        ),
        REQ,
        lambda k: _signed(k),
        push_only=True,
        content_type="application/json",
        statuses=frozenset({400, 415}),
    ),
    Case(
        "oversized",
        c_("oversized", "RFC 8935 2.3", "a 1 MiB SET is refused (400 / 413)"),
        REQ,
        _oversized,
        push_only=True,
        statuses=frozenset({400, 413}),
    ),
    Case(
        "no-authorization",
        c_(
            "push-no-authorization",
            "SSF 6.1.1 / RFC 8935 2.3",
            "a push without the configured Authorization is refused",
        ),
        frozenset({"authentication_failed", "access_denied"}),
        lambda k: _signed(k),
        push_only=True,
        statuses=frozenset({400, 401, 403}),
        authorization=None,
    ),
    Case(
        "wrong-authorization",
        c_(
            "push-wrong-authorization",
            "SSF 6.1.1 / RFC 8935 2.3",
            "a push with a wrong Authorization is refused",
        ),
        frozenset({"authentication_failed", "access_denied"}),
        lambda k: _signed(k),
        push_only=True,
        statuses=frozenset({400, 401, 403}),
        authorization="Bearer kit-wrong-credential",
    ),
)

VALID = c_("valid-accepted", "RFC 8935 2.2", "a valid SET is accepted (202, or acknowledged)")
RESEND = c_("identical-resend", "RFC 8935 2", "a byte-identical re-send of an accepted SET is accepted again")
REUSE = c_(
    "jti-reuse", "RFC 8417 2.2", "a different SET reusing an accepted SET's jti is refused (invalid_request)"
)
ERROR_BODY = c_(
    "error-body", "RFC 8935 2.3", "refusals carry Content-Type application/json and {err, description}"
)
NO_STATE = c_(
    "no-state-change",
    "RFC 8935 2 / RFC 8417 2.2",
    "a refused SET leaves no trace: a valid SET reusing its jti is accepted",
)
CORPUS_CHECKS = (VALID, RESEND, REUSE, ERROR_BODY, NO_STATE, *(c.check for c in CASES))


def _target(kit: ReceiverKit) -> tuple[str, str | None, str | None]:
    """(via, push url, authorization) for the corpus."""
    if kit.opts.push_url:
        return "push", kit.opts.push_url, kit.opts.push_auth
    d = (kit.em.stream or {}).get("delivery") or {}
    if d.get("method") == uris.PUSH:
        return "push", str(d.get("endpoint_url")), d.get("authorization_header")
    return "poll", None, None


async def _deliver(
    kit: ReceiverKit, jti: str | None, compact: str, kind: str, case: Case | None = None
) -> Exchange:
    via, url, authz = _target(kit)
    ex = Exchange(jti or f"kit-nojti-{uuid.uuid4().hex}", kind, compact, via)
    if via == "poll":
        return await kit.em.send(ex, timeout=kit.opts.event_timeout)
    authorization: str | bool | None = authz
    if case is not None and case.authorization is not True:
        authorization = case.authorization
    return await kit.em.send(
        ex,
        url=url,
        authorization=authorization if isinstance(authorization, str) else False,
        content_type=case.content_type if case else uris.SET_MEDIA_TYPE,
        timeout=kit.opts.event_timeout,
    )


async def run_corpus(kit: ReceiverKit) -> list[Any]:
    via, _, authz = _target(kit)
    results: list[Any] = []
    jti, compact = _signed(kit)
    first = await _deliver(kit, jti, compact, "corpus-valid")
    again = await _deliver(kit, jti, compact, "corpus-resend")
    reuse_jti, reuse = _signed(kit, jti=jti, txn="kit-different-set")
    other = await _deliver(kit, reuse_jti, reuse, "corpus-reuse")
    results.append(("control", first, again, other))
    cases = [
        c
        for c in CASES
        if not (c.push_only and via != "push")
        and not (c.name in ("no-authorization", "wrong-authorization") and not authz)
    ]

    async def one(case: Case) -> CaseResult:
        cjti, ccompact = case.build(kit)
        ex = await _deliver(kit, cjti, ccompact, "corpus", case)
        probe = None
        if cjti is not None and not ex.accepted:
            pc = _claims(kit, jti=cjti)
            probe = await _deliver(kit, cjti, kit.em.sign(pc), "corpus-probe")
        return CaseResult(case, ex, probe)

    if via == "poll":  # a poll round trip per SET would be slow: queue them together
        results.extend(await asyncio.gather(*(one(c) for c in cases)))
    else:
        for case in cases:
            results.append(await one(case))
    return results


def _refused(ex: Exchange, statuses: frozenset[int], errs: frozenset[str]) -> tuple[bool, str]:
    if ex.via == "poll":
        if ex.set_err is None:
            return False, "acknowledged" if ex.acked else "neither acknowledged nor reported in setErrs"
        return ex.err in errs, f"setErrs err {ex.err!r}"
    if ex.status is None:
        return False, f"no answer ({ex.body.decode(errors='replace')[:80]})"
    if ex.status not in statuses:
        return False, f"HTTP {ex.status}"
    if ex.status == 400 and ex.err not in errs:
        return False, f"HTTP 400 with err {ex.err!r}, expected {' or '.join(sorted(errs))}"
    return True, f"HTTP {ex.status} {ex.err or ''}".strip()


def _error_body_ok(ex: Exchange) -> bool:
    if ex.via != "push" or ex.status != 400:
        return True
    ctype = ex.headers.get("content-type", "").split(";")[0].strip()
    try:
        data = json.loads(ex.body)
    except ValueError:
        return False
    return ctype == "application/json" and isinstance(data, dict) and isinstance(data.get("err"), str)


@module(
    "kit-receiver-bad-set-corpus",
    "receiver",
    "SETs a receiver must refuse, each with its err code, and no trace left by a refusal",
    CORPUS_CHECKS,
    origin="kit",
)
async def corpus_module(kit: ReceiverKit, run: ModuleRun) -> None:
    if not kit.corpus:
        raise SkipModule("no corpus was delivered (no stream created and no --push-url)")
    control, *cases = kit.corpus
    _, first, again, other = control
    run.expect(VALID, first.accepted, f"valid SET: {_describe(first)}", "accepted", stop=True)
    run.expect(RESEND, again.accepted, f"identical re-send: {_describe(again)}", "accepted again")
    ok, why = _refused(other, frozenset({400}), REQ)
    run.expect(REUSE, ok, f"different SET with a seen jti: {why}", why)
    for res in cases:
        assert isinstance(res, CaseResult)
        ok, why = _refused(res.exchange, res.case.statuses, res.case.errs)
        run.expect(res.case.check, ok, f"{res.case.name}: {why}", why)
        run.expect(
            ERROR_BODY, _error_body_ok(res.exchange), f"{res.case.name}: 400 without a JSON err body", "ok"
        )
        if res.probe is not None:
            run.expect(
                NO_STATE,
                res.probe.accepted,
                f"after refusing {res.case.name}, a valid SET with its jti got {_describe(res.probe)}",
                "no trace",
            )


def _describe(ex: Exchange) -> str:
    if ex.via == "poll":
        return "acknowledged" if ex.acked else f"setErrs {ex.set_err}" if ex.set_err else "no answer"
    return f"HTTP {ex.status} {ex.body[:100].decode(errors='replace')}"
