"""Security Event Tokens (RFC 8417) as profiled by SSF 1.0 §4: build, sign, decode, verify.

Header: ``typ: secevent+jwt`` and ``kid`` always. Claims: ``iss``, ``iat``, ``jti``, ``aud``,
``sub_id``, ``events`` (exactly one), optional ``txn``/``toe``; never ``sub`` or ``exp``
(SSF §4.1.2, §4.1.7). Unknown claims are ignored on input (SSF §4.2.3).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError, UnsupportedAlgorithmError
from joserfc.jwk import OctKey

from ssf import uris
from ssf.errors import (
    AuthenticationFailed,
    InvalidAudience,
    InvalidIssuer,
    InvalidKey,
    InvalidRequest,
    SETError,
    SETTooLarge,
)
from ssf.events.base import Event
from ssf.events.registry import parse_event
from ssf.keys import AnyKey, PublicKeys, SigningKey
from ssf.subjects import Subject, parse_subject

__all__ = [
    "DEFAULT_ALGORITHMS",
    "MAX_SET_BYTES",
    "SETVerifier",
    "SecurityEventToken",
    "UnknownKeyID",
    "decode_unverified",
    "parse_claims",
    "sign_set",
]

#: Asymmetric algorithms accepted by default; HMAC only with an out-of-band secret.
DEFAULT_ALGORITHMS: Final = ("RS256", "PS256", "ES256", "EdDSA")
HMAC_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512"})
MAX_SET_BYTES: Final = 64 * 1024
DEFAULT_IAT_SKEW: Final = 300
_FORBIDDEN_CLAIMS: Final = ("sub", "exp")


@dataclass(frozen=True, slots=True)
class SecurityEventToken:
    """One SET, one event. ``extra`` keeps unknown claims of a decoded SET (never re-emitted)."""

    iss: str
    jti: str
    iat: int | float
    aud: str | tuple[str, ...]
    sub_id: Subject
    event_type: str
    event: Event
    txn: str | None = None
    toe: int | float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        *,
        iss: str,
        aud: str | Collection[str],
        sub_id: Subject,
        event: Event,
        event_type: str | None = None,
        txn: str | None = None,
        jti: str | None = None,
        iat: int | None = None,
    ) -> SecurityEventToken:
        """A new SET: fresh ``jti``, ``iat`` now (never ahead of real time)."""
        audience = aud if isinstance(aud, str) else tuple(aud)
        etype = event_type or event.event_type
        if not etype:
            raise InvalidRequest("an event type URI is required")
        issued = int(time.time()) if iat is None else iat
        return cls(
            iss=iss,
            jti=jti or secrets.token_urlsafe(16),
            iat=issued,
            aud=audience,
            sub_id=sub_id,
            event_type=etype,
            event=event,
            txn=txn,
        )

    @property
    def audiences(self) -> tuple[str, ...]:
        return (self.aud,) if isinstance(self.aud, str) else self.aud

    def claims(self) -> dict[str, Any]:
        """The SSF 1.0 claims object as it is signed."""
        out: dict[str, Any] = {
            "iss": self.iss,
            "jti": self.jti,
            "iat": self.iat,
            "aud": self.aud if isinstance(self.aud, str) else list(self.aud),
        }
        if self.txn is not None:
            out["txn"] = self.txn
        if self.toe is not None:
            out["toe"] = self.toe
        out["sub_id"] = self.sub_id.to_dict()
        out["events"] = {self.event_type: self.event.payload()}
        return out


def sign_set(token: SecurityEventToken, key: SigningKey) -> str:
    """Sign as compact JWS with ``typ: secevent+jwt`` and the key's ``kid``."""
    header = {"alg": key.alg, "typ": uris.SET_TYP, "kid": key.kid}
    payload = json.dumps(token.claims(), separators=(",", ":"), ensure_ascii=False).encode()
    return jws.serialize_compact(header, payload, key.key, algorithms=[key.alg])


def _b64json(segment: str) -> Any:
    pad = "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(segment + pad))


def decode_unverified(token: str | bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a compact JWS, unchecked: for display and diagnosis only."""
    text = token.decode("ascii", "replace") if isinstance(token, bytes) else token
    parts = text.strip().split(".")
    if len(parts) != 3:
        raise InvalidRequest("a SET is a compact JWS of three dot-separated parts")
    try:
        header, claims = _b64json(parts[0]), _b64json(parts[1])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("SET header or payload is not base64url JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidRequest("SET header and payload must be JSON objects")
    return header, claims


def parse_claims(claims: Mapping[str, Any]) -> SecurityEventToken:
    """Validate the claim set of a SET and normalise legacy dialects to the SSF 1.0 form."""
    for name in _FORBIDDEN_CLAIMS:
        if name in claims:
            raise InvalidRequest(f"an SSF SET must not carry '{name}'")
    iss, jti, iat, aud = claims.get("iss"), claims.get("jti"), claims.get("iat"), claims.get("aud")
    if not isinstance(iss, str) or not iss:
        raise InvalidRequest("'iss' is required")
    if not isinstance(jti, str) or not jti:
        raise InvalidRequest("'jti' is required")
    if not isinstance(iat, int | float) or isinstance(iat, bool):
        raise InvalidRequest("'iat' is required as a NumericDate")
    audience: str | tuple[str, ...]
    if isinstance(aud, str) and aud:
        audience = aud
    elif isinstance(aud, list) and aud and all(isinstance(a, str) and a for a in aud):
        audience = tuple(aud)
    else:
        raise InvalidRequest("'aud' must be a string or an array of strings")
    txn, toe = claims.get("txn"), claims.get("toe")
    if txn is not None and not isinstance(txn, str):
        raise InvalidRequest("'txn' must be a string")
    if toe is not None and not _is_number(toe):
        raise InvalidRequest("'toe' must be a NumericDate")
    events = claims.get("events")
    if not isinstance(events, dict) or not events:
        raise InvalidRequest("'events' must be a non-empty object")
    if len(events) != 1:
        raise InvalidRequest("an SSF SET carries exactly one event")
    ((event_type, payload),) = events.items()
    if not isinstance(payload, dict):
        raise InvalidRequest("the event must be a JSON object")
    raw_subject = claims.get("sub_id")
    if "subject" in payload:
        # Pre-1.0 CAEP/RISC put the subject inside the event (SSF §3.1.1); 1.0 wants sub_id.
        payload = dict(payload)
        legacy = payload.pop("subject")
        if raw_subject is None:
            raw_subject = legacy
    if raw_subject is None:
        raise InvalidRequest("'sub_id' is required")
    subject = parse_subject(raw_subject)
    event = parse_event(event_type, payload)
    allowed = type(event).subject_formats
    if allowed is not None and subject.format not in allowed:
        raise InvalidRequest(f"event '{event_type}' needs a subject of format {sorted(allowed)}")
    known = {"iss", "jti", "iat", "aud", "txn", "toe", "sub_id", "events"}
    extra = {k: v for k, v in claims.items() if k not in known}
    return SecurityEventToken(
        iss=iss,
        jti=jti,
        iat=iat,
        aud=audience,
        sub_id=subject,
        event_type=event_type,
        event=event,
        txn=txn,
        toe=toe,
        extra=extra,
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class UnknownKeyID(InvalidKey):
    """The SET names a key the verifier does not hold: refresh the JWKS, then retry once."""

    def __init__(self, kid: str | None) -> None:
        super().__init__("the SET's signing key is unknown")
        self.kid = kid


class SETVerifier:
    """Verifies SETs from one issuer: the receiver's hot path, so keys stay imported.

    Checks, in order: size, compact form, ``typ``, ``alg`` allow-list (never ``none``; HMAC
    only with an out-of-band secret, never a public key), key by ``kid``, signature, claims,
    ``iss``, ``aud``, ``iat`` not ahead of now by more than ``iat_skew``.
    """

    def __init__(
        self,
        *,
        issuer: str,
        keys: PublicKeys,
        audience: str | Collection[str] | None = None,
        algorithms: Collection[str] = DEFAULT_ALGORITHMS,
        hmac_secret: bytes | None = None,
        max_bytes: int = MAX_SET_BYTES,
        iat_skew: int = DEFAULT_IAT_SKEW,
        now: Callable[[], float] = time.time,
    ) -> None:
        algs = set(algorithms)
        if "none" in algs:
            raise ValueError("'none' is never an acceptable SET algorithm")
        if algs & HMAC_ALGORITHMS and not hmac_secret:
            raise ValueError("HMAC algorithms need a shared secret configured out of band")
        self.issuer = issuer
        self.keys = keys
        self.audience = frozenset([audience] if isinstance(audience, str) else audience or ())
        self.algorithms = frozenset(algs)
        self._hmac = OctKey.import_key(hmac_secret) if hmac_secret else None
        self.max_bytes = max_bytes
        self.iat_skew = iat_skew
        self.now = now
        self._registry = jws.JWSRegistry(algorithms=list(self.algorithms))

    def verify(self, token: str | bytes) -> SecurityEventToken:
        if len(token) > self.max_bytes:
            raise SETTooLarge(f"SET exceeds {self.max_bytes} bytes")
        if isinstance(token, bytes):
            try:
                token = token.decode("ascii")
            except UnicodeDecodeError:
                raise InvalidRequest("a SET is ASCII compact JWS") from None
        token = token.strip()
        if token.count(".") != 2:
            raise InvalidRequest("a SET is a compact JWS of three dot-separated parts")
        header = _header(token)
        alg, kid = header.get("alg"), header.get("kid")
        if header.get("typ") != uris.SET_TYP:
            raise InvalidRequest("JOSE header 'typ' must be 'secevent+jwt'")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise InvalidRequest("unsigned SETs are refused")
        if alg not in self.algorithms:
            raise InvalidKey(f"algorithm {alg} is not accepted")
        if kid is not None and not isinstance(kid, str):
            raise InvalidRequest("JOSE header 'kid' must be a string")
        if "crit" in header:
            raise InvalidRequest("critical JOSE header extensions are not understood")
        key: AnyKey | None
        if alg in HMAC_ALGORITHMS:
            key = self._hmac
        else:
            key = self.keys.find(kid, alg)
            if key is None:
                raise UnknownKeyID(kid)
        try:
            obj = jws.deserialize_compact(token, key, registry=self._registry)
        except BadSignatureError:
            raise AuthenticationFailed("SET signature does not verify") from None
        except UnsupportedAlgorithmError:
            raise InvalidKey(f"algorithm {alg} is not accepted") from None
        except (JoseError, ValueError, TypeError):
            raise InvalidRequest("SET is not a well-formed JWS") from None
        try:
            claims = json.loads(obj.payload)
        except (ValueError, UnicodeDecodeError):
            raise InvalidRequest("SET payload is not JSON") from None
        if not isinstance(claims, dict):
            raise InvalidRequest("SET payload must be a JSON object")
        return self.check_claims(parse_claims(claims))

    def check_claims(self, set_: SecurityEventToken) -> SecurityEventToken:
        """The issuer, audience and time rules (SSF §4.1.6, §4.1.8)."""
        if set_.iss != self.issuer:
            raise InvalidIssuer("'iss' is not the expected issuer")
        if self.audience and not self.audience.intersection(set_.audiences):
            raise InvalidAudience("'aud' does not name this receiver")
        if set_.iat > self.now() + self.iat_skew:
            raise InvalidRequest("'iat' is in the future")
        return set_


def _header(token: str) -> dict[str, Any]:
    try:
        header = _b64json(token[: token.index(".")])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("JOSE header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise InvalidRequest("JOSE header must be a JSON object")
    return header


# Re-exported so callers catch one family.
SETErrorType = SETError
