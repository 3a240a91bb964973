"""Checks on the SETs a transmitter delivers and on the push requests that carry them.

These are the suite's per-SET conditions (digest 11.3, verification modules) plus the
SSF / CAEP / RISC member rules it leaves out (digest 13 rows 1-11, 58-63).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

from conformance.registry import ModuleRun, Severity, check
from ssf import uris
from ssf.errors import SSFError
from ssf.events import SSF_EVENTS, parse_event
from ssf.events.caep import CREDENTIAL_TYPES
from ssf.keys import PublicKeys
from ssf.set import decode_unverified
from ssf.subjects import parse_subject

F, W, INFO = Severity.FAILURE, Severity.WARNING, Severity.INFO

SET_SIGNATURE = check(
    "set.signature", "SSF 7.1 / RFC 7515", W, "SET signature verifies against jwks_uri (by kid)"
)
SET_TYP = check("set.typ", "SSF 4.1.1", F, "JOSE header typ is secevent+jwt")
SET_ONE_EVENT = check(
    "set.single-event", "SSF 4.1 / CAEPIOP 2.8.1", W, "events holds exactly one event", caep=F
)
SET_NO_SUB = check("set.no-sub", "SSF 4.1.2", F, "SET carries no sub claim")
SET_NO_EXP = check("set.no-exp", "SSF 4.1.7", F, "SET carries no exp claim")
SET_ISS = check(
    "set.iss", "SSF 4.1.6 / 7.2.4", F, "iss is byte-identical to the metadata issuer and stream iss"
)
SET_IAT = check("set.iat", "RFC 8417 2.2", F, "iat present, numeric, not in the future")
SET_JTI = check("set.jti", "RFC 8417 2.2", F, "jti present and unique per SET")
SET_AUD = check("set.aud", "SSF 4.1.8", F, "aud is a string or an array of strings")
SET_AUD_SUBSET = check("set.aud-subset", "SSF 4.1.8", W, "aud values are within the stream's aud")
SET_TXN = check("set.txn", "SSF 4.1.9", INFO, "txn present (SHOULD) and a string")
SET_SUB_ID = check("set.sub-id", "SSF 3.1", F, "top-level sub_id is a valid subject identifier")
SET_NO_EVENT_SUBJECT = check(
    "set.no-event-subject", "SSF 3.1.2", F, "SSF event types never carry events.<uri>.subject"
)
SET_RS256 = check("set.rs256", "CAEPIOP 2.6", F, "signed with RS256 by an RSA key of at least 2048 bits")
SET_EVENT_VALID = check(
    "set.event-valid",
    "CAEP 2-3 / RISC 2 / SSF 8.1.4-8.1.5",
    F,
    "event members match the event type's definition",
)
SET_CRED_VALUES = check(
    "set.credential-change-values", "CAEP 3.3", W, "credential_type is one of the standard values"
)
SET_CAEP_REASON_ADMIN = check(
    "set.caep-reason-admin",
    "CAEPIOP 3",
    F,
    "session-revoked / credential-change carry a non-empty reason_admin",
)
SET_RISC_SUBJECT = check(
    "set.risc-identifier-subject", "RISC 2.5-2.6", F, "identifier-changed/-recycled subject is email or phone"
)
SET_NO_SUBJECT_TYPE = check("set.no-subject-type", "RISC 3", F, "no legacy subject_type in subjects")
SET_NO_SESSIONS_REVOKED = check(
    "set.no-sessions-revoked", "RISC 2.11", W, "the deprecated RISC sessions-revoked is not emitted"
)
VERIFICATION_SUB_ID = check(
    "verification.sub-id", "SSF 8.1.4.1", F, "verification sub_id is {format: opaque, id: stream_id}"
)
STREAM_UPDATED_SHAPE = check(
    "stream-updated.shape", "SSF 8.1.5", F, "stream-updated has status and sub_id opaque = stream_id"
)
PUSH_AUTHORIZATION = check(
    "push.authorization", "SSF 6.1.1", F, "every push carries the configured authorization_header verbatim"
)
PUSH_NO_AUTHORIZATION = check(
    "push.no-authorization", "SSF 6.1.1", W, "no Authorization header when none was configured"
)
PUSH_CONTENT_TYPE = check(
    "push.content-type", "RFC 8935 2.1", F, "push Content-Type is application/secevent+jwt"
)
PUSH_ACCEPT = check("push.accept", "RFC 8935 2.1", W, "push sends Accept: application/json")
PUSH_ONE_SET = check("push.one-set", "RFC 8935 2.1", F, "the push body is exactly one compact SET")

SET_CHECKS = (
    SET_SIGNATURE,
    SET_TYP,
    SET_ONE_EVENT,
    SET_NO_SUB,
    SET_NO_EXP,
    SET_ISS,
    SET_IAT,
    SET_JTI,
    SET_AUD,
    SET_AUD_SUBSET,
    SET_TXN,
    SET_SUB_ID,
    SET_NO_EVENT_SUBJECT,
    SET_RS256,
    SET_EVENT_VALID,
    SET_CRED_VALUES,
    SET_CAEP_REASON_ADMIN,
    SET_RISC_SUBJECT,
    SET_NO_SUBJECT_TYPE,
    SET_NO_SESSIONS_REVOKED,
    VERIFICATION_SUB_ID,
    STREAM_UPDATED_SHAPE,
)
PUSH_CHECKS = (PUSH_AUTHORIZATION, PUSH_NO_AUTHORIZATION, PUSH_CONTENT_TYPE, PUSH_ACCEPT, PUSH_ONE_SET)

#: Allowance for clock granularity between the kit's host and the transmitter's.
IAT_SKEW = 5.0


@dataclass(slots=True)
class Received:
    """One SET as the kit received it (push request or poll response)."""

    compact: str
    via: str
    headers: Mapping[str, str] | None = None
    body: bytes = b""
    at: float = field(default_factory=time.time)
    header: dict[str, Any] = field(default_factory=dict)
    claims: dict[str, Any] = field(default_factory=dict)
    decoded: bool = False

    def decode(self) -> bool:
        try:
            self.header, self.claims = decode_unverified(self.compact)
            self.decoded = True
        except SSFError:
            self.decoded = False
        return self.decoded

    @property
    def jti(self) -> str | None:
        v = self.claims.get("jti")
        return v if isinstance(v, str) else None

    @property
    def events(self) -> dict[str, Any]:
        ev = self.claims.get("events")
        return ev if isinstance(ev, dict) else {}

    @property
    def event_type(self) -> str | None:
        return next(iter(self.events), None)

    def event(self, uri: str) -> dict[str, Any] | None:
        ev = self.events.get(uri)
        return ev if isinstance(ev, dict) else None

    @property
    def state(self) -> str | None:
        ev = self.event(uris.VERIFICATION)
        if ev is None:
            return None
        s = ev.get("state")
        return s if isinstance(s, str) else None

    def is_verification(self) -> bool:
        return uris.VERIFICATION in self.events


def check_push_request(run: ModuleRun, rec: Received, expected_authorization: str | None) -> None:
    """RFC 8935 §2.1 / SSF §6.1.1 on one push request."""
    headers = rec.headers or {}
    got = headers.get("authorization")
    if expected_authorization is not None:
        run.expect(
            PUSH_AUTHORIZATION,
            got == expected_authorization,
            "Authorization header missing"
            if got is None
            else "Authorization header differs from the configured value",
            "configured Authorization header present",
        )
    else:
        run.expect(
            PUSH_NO_AUTHORIZATION,
            got is None,
            "an Authorization header was sent though the stream configured none",
            "no Authorization header",
        )
    ctype = headers.get("content-type", "")
    run.expect(
        PUSH_CONTENT_TYPE,
        ctype.split(";")[0].strip().lower() == uris.SET_MEDIA_TYPE,
        f"Content-Type is {ctype!r}",
        "application/secevent+jwt",
    )
    accept = headers.get("accept", "")
    run.expect(PUSH_ACCEPT, "application/json" in accept.lower(), f"Accept is {accept!r}", "Accept ok")
    body = rec.body.strip()
    run.expect(
        PUSH_ONE_SET,
        body.count(b".") == 2
        and b"\n" not in body
        and b" " not in body
        and not body.startswith((b"{", b"[")),
        "the body is not a single compact JWS",
        "one compact SET",
    )


class SETInspector:
    """Applies the per-SET checks; keeps the jtis seen in the run to judge uniqueness."""

    def __init__(self, issuer: str, profile: str) -> None:
        self.issuer = issuer
        self.profile = profile
        self.seen: dict[str, str] = {}
        self.keys: PublicKeys | None = None
        self.keys_error: str | None = None

    def inspect(
        self,
        run: ModuleRun,
        rec: Received,
        *,
        stream_id: str | None,
        stream_aud: str | list[str] | None,
        stream_iss: str | None = None,
    ) -> bool:
        """Run every applicable check on one SET; False when it could not be decoded."""
        if not rec.decode():
            run.record(SET_TYP, False, "the SET is not a decodable compact JWS")
            return False
        header, claims = rec.header, rec.claims
        self._signature(run, rec)
        run.expect(
            SET_TYP, header.get("typ") == uris.SET_TYP, f"typ is {header.get('typ')!r}", "secevent+jwt"
        )
        if self.profile == "caep-interop":
            self._rs256(run, rec)
        events = claims.get("events")
        run.expect(
            SET_ONE_EVENT,
            isinstance(events, dict) and len(events) == 1,
            f"events holds {len(events) if isinstance(events, dict) else 'no object'} event(s)",
            "one event",
        )
        run.expect(SET_NO_SUB, "sub" not in claims, "SET carries 'sub'", "no sub")
        run.expect(SET_NO_EXP, "exp" not in claims, "SET carries 'exp'", "no exp")
        iss = claims.get("iss")
        ok_iss = iss == self.issuer and (stream_iss is None or iss == stream_iss)
        run.expect(SET_ISS, ok_iss, f"iss {iss!r} is not the issuer {self.issuer!r}", "iss ok")
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or isinstance(iat, bool):
            run.record(SET_IAT, False, "iat missing or not a NumericDate")
        else:
            run.expect(SET_IAT, iat <= time.time() + IAT_SKEW, f"iat {iat} is in the future", "iat ok")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            run.record(SET_JTI, False, "jti missing or not a string")
        else:
            prior = self.seen.get(jti)
            run.expect(
                SET_JTI,
                prior is None or prior == rec.compact,
                f"jti {jti} reused by a different SET",
                "jti unique",
            )
            self.seen[jti] = rec.compact
        aud = claims.get("aud")
        aud_ok = (isinstance(aud, str) and aud != "") or (
            isinstance(aud, list) and bool(aud) and all(isinstance(a, str) for a in aud)
        )
        run.expect(SET_AUD, aud_ok, f"aud is {aud!r}", "aud ok")
        if aud_ok and stream_aud is not None:
            mine = {stream_aud} if isinstance(stream_aud, str) else set(stream_aud)
            theirs = {aud} if isinstance(aud, str) else set(aud or [])
            run.expect(
                SET_AUD_SUBSET, theirs <= mine, f"aud {sorted(theirs)} not within {sorted(mine)}", "aud ok"
            )
        txn = claims.get("txn")
        run.expect(
            SET_TXN,
            isinstance(txn, str),
            "no txn (SHOULD be set)" if txn is None else "txn is not a string",
            "txn",
        )
        self._subject_and_event(run, rec, stream_id)
        return True

    def _signature(self, run: ModuleRun, rec: Received) -> None:
        if self.keys is None:
            run.record(SET_SIGNATURE, False, f"no usable JWKS: {self.keys_error or 'jwks_uri missing'}")
            return
        alg = rec.header.get("alg")
        kid = rec.header.get("kid")
        if not isinstance(alg, str) or alg.lower() == "none":
            run.record(SET_SIGNATURE, False, "the SET is unsigned (alg none)")
            return
        key = self.keys.find(kid if isinstance(kid, str) else None, alg)
        if key is None:
            run.record(SET_SIGNATURE, False, f"no key in the JWKS for kid {kid!r} / alg {alg}")
            return
        try:
            jws.deserialize_compact(rec.compact, key, algorithms=[alg])
        except (JoseError, ValueError, TypeError) as exc:
            run.record(SET_SIGNATURE, False, f"signature does not verify ({type(exc).__name__})")
            return
        run.record(SET_SIGNATURE, True, f"verified with kid {kid}")

    def _rs256(self, run: ModuleRun, rec: Received) -> None:
        alg = rec.header.get("alg")
        if alg != "RS256":
            run.record(SET_RS256, False, f"alg is {alg!r}")
            return
        kid = rec.header.get("kid")
        key = self.keys.find(kid if isinstance(kid, str) else None, "RS256") if self.keys else None
        if isinstance(key, RSAKey) and key.raw_value.key_size < 2048:
            run.record(SET_RS256, False, f"RSA key is {key.raw_value.key_size} bits")
            return
        run.record(SET_RS256, True, "RS256")

    def _subject_and_event(self, run: ModuleRun, rec: Received, stream_id: str | None) -> None:
        claims = rec.claims
        raw = claims.get("sub_id")
        subject = None
        if raw is None:
            run.record(SET_SUB_ID, False, "no top-level sub_id")
        else:
            try:
                subject = parse_subject(raw)
                run.record(SET_SUB_ID, True, f"sub_id format {subject.format}")
            except SSFError as exc:
                run.record(SET_SUB_ID, False, f"sub_id invalid: {exc.description}")
        if _has_subject_type(raw):
            run.record(SET_NO_SUBJECT_TYPE, False, "a subject carries subject_type")
        elif raw is not None:
            run.record(SET_NO_SUBJECT_TYPE, True, "no subject_type")
        for uri, payload in rec.events.items():
            if not isinstance(payload, dict):
                run.record(SET_EVENT_VALID, False, f"event {uri} is not an object")
                continue
            if uri in SSF_EVENTS:
                run.expect(
                    SET_NO_EVENT_SUBJECT,
                    "subject" not in payload,
                    f"{uri.rsplit('/', 1)[-1]} carries events.<uri>.subject",
                    "no event subject",
                )
            body = {k: v for k, v in payload.items() if k != "subject"}
            try:
                parse_event(uri, body)
                run.record(SET_EVENT_VALID, True, f"{uri.rsplit('/', 1)[-1]} valid")
            except SSFError as exc:
                run.record(SET_EVENT_VALID, False, exc.description)
            self._event_rules(run, uri, payload, raw, stream_id)

    def _event_rules(
        self, run: ModuleRun, uri: str, payload: dict[str, Any], raw: Any, stream_id: str | None
    ) -> None:
        name = uri.rsplit("/", 1)[-1]
        opaque_ok = (
            isinstance(raw, dict)
            and raw.get("format") == "opaque"
            and (stream_id is None or raw.get("id") == stream_id)
        )
        if uri == uris.VERIFICATION:
            run.expect(VERIFICATION_SUB_ID, opaque_ok, f"verification sub_id is {raw!r}", "opaque stream id")
        elif uri == uris.STREAM_UPDATED:
            run.expect(
                STREAM_UPDATED_SHAPE,
                opaque_ok and payload.get("status") in ("enabled", "paused", "disabled"),
                f"stream-updated sub_id {raw!r} / status {payload.get('status')!r}",
                "stream-updated ok",
            )
        elif uri == uris.CAEP_BASE + "credential-change":
            ct = payload.get("credential_type")
            run.expect(
                SET_CRED_VALUES, ct in CREDENTIAL_TYPES, f"credential_type {ct!r} is not standard", "standard"
            )
        if self.profile == "caep-interop" and name in ("session-revoked", "credential-change"):
            ra = payload.get("reason_admin")
            run.expect(
                SET_CAEP_REASON_ADMIN,
                isinstance(ra, dict) and bool(ra) and all(isinstance(v, str) and v for v in ra.values()),
                f"{name} reason_admin is {ra!r}",
                "reason_admin ok",
            )
        if uri in (uris.RISC_BASE + "identifier-changed", uris.RISC_BASE + "identifier-recycled"):
            fmt = raw.get("format") if isinstance(raw, dict) else None
            run.expect(
                SET_RISC_SUBJECT, fmt in ("email", "phone_number", "phone"), f"subject format {fmt!r}", "ok"
            )
        if uri == uris.RISC_BASE + "sessions-revoked":
            run.record(SET_NO_SESSIONS_REVOKED, False, "deprecated RISC sessions-revoked emitted")


def _has_subject_type(raw: Any) -> bool:
    if isinstance(raw, dict):
        return "subject_type" in raw or any(_has_subject_type(v) for v in raw.values())
    if isinstance(raw, list):
        return any(_has_subject_type(v) for v in raw)
    return False
