"""Security Event Tokens (RFC 8417) as profiled by SSF 1.0 §4: build, sign, decode, verify.

Header: ``typ: secevent+jwt`` and ``kid`` always. Claims: ``iss``, ``iat``, ``jti``, ``aud``,
``sub_id``, ``events`` (exactly one), optional ``txn``/``toe``; never ``sub`` or ``exp``
(SSF §4.1.2, §4.1.7). Unknown claims are ignored on input (SSF §4.2.3).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import math
import os
import secrets
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

from joserfc.errors import JoseError
from joserfc.jwk import OctKey
from pydantic_core import from_json

from ssf._jws import (
    ALG_MODELS,
    HMAC_ALGORITHMS,
    REGISTRY,
    Verify,
    b64url_decode,
    b64url_decode_segments,
    b64url_encode,
    header_segment,
    is_set_typ,
    signer,
    verifier,
)
from ssf.errors import (
    AuthenticationFailed,
    InvalidAudience,
    InvalidEvent,
    InvalidIssuer,
    InvalidKey,
    InvalidRequest,
    InvalidSubject,
    KeyMaterialError,
    SETTooLarge,
)
from ssf.events.base import Event
from ssf.events.registry import EVENT_MODELS, is_standard, parse_event
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
MAX_SET_BYTES: Final = 64 * 1024
DEFAULT_IAT_SKEW: Final = 300


@dataclass(frozen=True)
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
        toe: int | float | None = None,
        jti: str | None = None,
        iat: int | None = None,
    ) -> SecurityEventToken:
        """A new SET: fresh ``jti``, ``iat`` now (never ahead of real time). The event's
        subject-format rule (RISC §2.5/2.6) holds on output as it does on input."""
        audience = aud if isinstance(aud, str) else tuple(aud)
        if type(iss) is not str or not iss:
            raise InvalidRequest("'iss' is required")
        if not audience or (type(audience) is tuple and not all(type(a) is str and a for a in audience)):
            raise InvalidRequest("'aud' must be a non-empty string or array of non-empty strings")
        if txn is not None and type(txn) is not str:
            raise InvalidRequest("'txn' must be a string")
        etype = event_type or event.event_type
        if not etype:
            raise InvalidRequest("an event type URI is required")
        model = EVENT_MODELS.get(etype)
        if model is not None and type(event) is not model:  # a registered type has one model
            raise InvalidEvent(f"a {type(event).__name__} payload cannot go out as '{etype}'")
        if toe is not None and not _is_number(toe):
            raise InvalidRequest("'toe' must be a finite NumericDate")
        allowed = type(event).subject_formats
        if allowed is not None and sub_id.format not in allowed:
            raise InvalidSubject(f"event '{etype}' needs a subject of format {sorted(allowed)}")
        issued = int(time.time()) if iat is None else iat
        jti = jti or _new_jti()
        if cls is not SecurityEventToken:  # a subclass may define its own __init__
            return cls(
                iss=iss,
                jti=jti,
                iat=issued,
                aud=audience,
                sub_id=sub_id,
                event_type=etype,
                event=event,
                txn=txn,
                toe=toe,
            )
        return _token(iss, jti, issued, audience, sub_id, etype, event, txn, toe, {})

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
        out["sub_id"] = self.sub_id._wire_form()
        out["events"] = {self.event_type: self.event.payload()}
        return out

    def claims_json(self) -> str:
        """:meth:`claims` as compact ASCII JSON, byte for byte what ``json.dumps`` gives,
        assembled from the subject's and the event's cached encodings."""
        aud = self.aud
        optional = ""
        if self.txn is not None:
            optional = ',"txn":' + _json_str(self.txn)
        if self.toe is not None:
            optional += ',"toe":' + _json_num(self.toe)
        return '{"iss":%s,"jti":%s,"iat":%s,"aud":%s%s,"sub_id":%s,"events":{%s:%s}}' % (  # noqa: UP031
            _json_str(self.iss),
            _json_str(self.jti),
            _json_num(self.iat),
            _json_str(aud) if isinstance(aud, str) else "[" + ",".join(map(_json_str, aud)) + "]",
            optional,
            self.sub_id.to_json(),
            _json_str(self.event_type),
            self.event.payload_json(),
        )


_json_str: Final[Callable[[str], str]] = json.encoder.encode_basestring_ascii


def _json_num(value: float) -> str:
    return int.__repr__(value) if type(value) is int else json.dumps(value, allow_nan=False)


class _JTISource:
    """Unique ``jti`` values, cheaply: a 128-bit random prefix per process (renewed in a
    forked child) and a counter. RFC 8417 §2.2 asks for uniqueness, not unpredictability."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = secrets.token_urlsafe(16)  # 22 characters, so prefix+counter is unique
        self.counter = itertools.count(1)

    def __call__(self) -> str:
        return self.prefix + str(next(self.counter))


_new_jti: Final = _JTISource()


def sign_set(token: SecurityEventToken, key: SigningKey) -> str:
    """Sign as compact JWS with ``typ: secevent+jwt`` and the key's ``kid``.

    The header segment is encoded once per (alg, kid); the signature comes from a signer
    prepared once per key (joserfc's key/algorithm checks run at preparation).
    """
    if key.alg not in ALG_MODELS:
        raise KeyMaterialError(f"unsupported signing algorithm {key.alg!r}")
    payload = b64url_encode(token.claims_json().encode())
    try:
        sign = signer(key.key, key.alg)
        signing_input = header_segment(key.alg, key.kid) + b"." + payload
        signature = sign(signing_input)
    except (JoseError, ValueError, TypeError) as exc:
        raise KeyMaterialError(f"the key cannot sign with {key.alg}: {exc}") from exc
    return (signing_input + b"." + b64url_encode(signature)).decode("ascii")


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
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise InvalidRequest("SET header or payload is not base64url JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidRequest("SET header and payload must be JSON objects")
    return header, claims


_KNOWN_CLAIMS: Final = frozenset({"iss", "jti", "iat", "aud", "txn", "toe", "sub_id", "events"})


def parse_claims(claims: Mapping[str, Any]) -> SecurityEventToken:
    """Validate the claim set of a SET and normalise legacy dialects to the SSF 1.0 form.

    A pre-1.0 subject inside the event object (SSF §3.1.1) is the fallback when ``sub_id``
    is absent; it is removed from the payload of known event types (output is SSF 1.0),
    while the payload of an event type without a model is kept untouched.
    """
    if "sub" in claims or "exp" in claims:
        raise InvalidRequest(f"an SSF SET must not carry '{'sub' if 'sub' in claims else 'exp'}'")
    iss, jti, iat, aud = claims.get("iss"), claims.get("jti"), claims.get("iat"), claims.get("aud")
    if type(iss) is not str or not iss:
        raise InvalidRequest("'iss' is required")
    if type(jti) is not str or not jti:
        raise InvalidRequest("'jti' is required")
    if type(iat) is not int and not _is_number(iat):
        raise InvalidRequest("'iat' is required as a NumericDate")
    audience: str | tuple[str, ...]
    if type(aud) is str and aud:
        audience = aud
    elif type(aud) is list and aud and all(type(a) is str and a for a in aud):
        audience = tuple(aud)
    else:
        raise InvalidRequest("'aud' must be a string or an array of strings")
    txn, toe = claims.get("txn"), claims.get("toe")
    if txn is not None and type(txn) is not str:
        raise InvalidRequest("'txn' must be a string")
    if toe is not None and not _is_number(toe):
        raise InvalidRequest("'toe' must be a NumericDate")
    events = claims.get("events")
    if type(events) is not dict or not events:
        raise InvalidRequest("'events' must be a non-empty object")
    if len(events) != 1:
        raise InvalidRequest("an SSF SET carries exactly one event")
    ((event_type, payload),) = events.items()
    if type(payload) is not dict:
        raise InvalidRequest("the event must be a JSON object")
    raw_subject = claims.get("sub_id")
    if "subject" in payload:
        # Pre-1.0 CAEP/RISC put the subject inside the event (SSF §3.1.1); 1.0 wants sub_id.
        if raw_subject is None:
            raw_subject = payload["subject"]
        if is_standard(event_type):
            payload = {k: v for k, v in payload.items() if k != "subject"}
    if raw_subject is None:
        raise InvalidRequest("'sub_id' is required")
    subject = parse_subject(raw_subject)
    event = parse_event(event_type, payload)
    allowed = type(event).subject_formats
    if allowed is not None and subject.format not in allowed:
        raise InvalidSubject(f"event '{event_type}' needs a subject of format {sorted(allowed)}")
    # iss jti iat aud events are present by now; count the optional known ones present
    known = 5 + ("sub_id" in claims) + (txn is not None) + (toe is not None)
    extra = {k: v for k, v in claims.items() if k not in _KNOWN_CLAIMS} if len(claims) > known else {}
    return _token(iss, jti, iat, audience, subject, event_type, event, txn, toe, extra)


_new_object: Final = object.__new__


def _token(
    iss: str,
    jti: str,
    iat: float,
    aud: str | tuple[str, ...],
    sub_id: Subject,
    event_type: str,
    event: Event,
    txn: str | None,
    toe: float | None,
    extra: Mapping[str, Any],
) -> SecurityEventToken:
    """``SecurityEventToken(...)`` without the generated frozen-dataclass ``__init__`` (ten
    stores into the fresh instance's own ``__dict__`` instead of ten ``object.__setattr__``
    calls, or of replacing ``__dict__``; hot path: one per SET)."""
    token: SecurityEventToken = _new_object(SecurityEventToken)
    members = token.__dict__
    members["iss"] = iss
    members["jti"] = jti
    members["iat"] = iat
    members["aud"] = aud
    members["sub_id"] = sub_id
    members["event_type"] = event_type
    members["event"] = event
    members["txn"] = txn
    members["toe"] = toe
    members["extra"] = extra
    return token


def _is_number(value: object) -> TypeGuard[int | float]:
    """A JSON number usable as a NumericDate: int or float, finite, never a bool."""
    kind = type(value)
    return kind is int or (kind is float and math.isfinite(value))  # type: ignore[arg-type]


class UnknownKeyID(InvalidKey):
    """The SET names a key the verifier does not hold: refresh the JWKS, then retry once."""

    def __init__(self, kid: str | None) -> None:
        super().__init__("the SET's signing key is unknown")
        self.kid = kid


#: Parsed header checks cached per verifier (header segments repeat: one per signing key).
_HEADER_CACHE_SIZE: Final = 256
_MAX_HEADER_SEGMENT: Final = 1024
_MAX_SIGNATURE_SEGMENT: Final = 1024


class SETVerifier:
    """Verifies SETs from one issuer: the receiver's hot path, so keys stay imported.

    Checks, in order: size, compact form, header (``typ`` ``secevent+jwt``, ``alg`` on the
    allow-list — never ``none``, HMAC only with an out-of-band secret and never a public
    key —, no ``crit``/unencoded payload, registered header members well-typed), key by
    ``kid``, signature, claims, ``iss``, ``aud``, ``iat`` not ahead of now by more than
    ``iat_skew``. The outcome of the header checks is cached per distinct header segment,
    together with the signature check prepared for the key it names (see ``ssf._jws``:
    joserfc's key/algorithm checks run once, at preparation). Replacing ``keys`` (after a
    JWKS refresh) takes effect on the next call.
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
        if any(a.lower() == "none" for a in algs):
            raise ValueError("'none' is never an acceptable SET algorithm")
        unknown = algs - set(ALG_MODELS)
        if unknown:
            raise ValueError(f"unsupported SET algorithms: {sorted(unknown)}")
        if algs & HMAC_ALGORITHMS and not hmac_secret:
            raise ValueError("HMAC algorithms need a shared secret configured out of band")
        if hmac_secret is not None and _looks_like_public_key(hmac_secret):
            raise ValueError("a public key is never an HMAC secret")
        self.issuer = issuer
        self.keys = keys
        self.audience = frozenset([audience] if isinstance(audience, str) else audience or ())
        self.algorithms = frozenset(algs)
        self._hmac = OctKey.import_key(hmac_secret) if hmac_secret else None
        self.max_bytes = max_bytes
        self.iat_skew = iat_skew
        self.now = now
        self._headers: dict[bytes, list[Any]] = {}

    def verify(self, token: str | bytes) -> SecurityEventToken:
        if len(token) > self.max_bytes:
            raise SETTooLarge(f"SET exceeds {self.max_bytes} bytes")
        if isinstance(token, str):
            try:
                raw = token.encode("ascii")
            except UnicodeEncodeError:
                raise InvalidRequest("a SET is ASCII compact JWS") from None
        else:
            raw = bytes(token)
            if not raw.isascii():
                raise InvalidRequest("a SET is ASCII compact JWS")
        raw = raw.strip()
        first, last = raw.find(_DOT), raw.rfind(_DOT)
        if first == last or raw.find(_DOT, first + 1, last) != -1:  # (no dot: both are -1)
            raise InvalidRequest("a SET is a compact JWS of three dot-separated parts")
        header_seg = raw[:first]
        entry = self._headers.get(header_seg)
        if entry is None:
            entry = self._check_header(header_seg)
        alg = entry[0]
        if alg not in self.algorithms:
            raise InvalidKey(f"algorithm {alg} is not accepted")
        keys = self.keys
        resolved = entry[2]
        if resolved is not None and resolved[0] is keys:
            check = resolved[1]
        else:  # first SET with this header, or verifier.keys was replaced since
            check = self._resolve(alg, entry[1])
            entry[2] = (keys, check)
        if len(raw) - last - 1 > _MAX_SIGNATURE_SEGMENT:
            raise InvalidRequest("SET signature is too long")
        try:
            payload, signature = b64url_decode_segments(raw[first + 1 :])
        except ValueError:
            raise InvalidRequest("SET is not base64url-encoded compact JWS") from None
        try:
            valid = check(raw[:last], signature)
        except (ValueError, TypeError):
            raise InvalidKey(f"the key cannot verify {alg}") from None
        if not valid:
            raise AuthenticationFailed("SET signature does not verify")
        try:
            claims = from_json(payload, allow_inf_nan=False, cache_strings="keys")
        except ValueError:
            raise InvalidRequest("SET payload is not JSON") from None
        if type(claims) is not dict:
            raise InvalidRequest("SET payload must be a JSON object")
        set_ = parse_claims(claims)
        # check_claims, inlined (hot path)
        if set_.iss != self.issuer:
            raise InvalidIssuer("'iss' is not the expected issuer")
        audience, aud = self.audience, set_.aud
        if audience and (aud not in audience if type(aud) is str else audience.isdisjoint(aud)):
            raise InvalidAudience("'aud' does not name this receiver")
        if set_.iat > self.now() + self.iat_skew:
            raise InvalidRequest("'iat' is in the future")
        return set_

    def _resolve(self, alg: str, kid: str | None) -> Verify:
        """The prepared verification for a header's ``alg``/``kid`` with the current keys."""
        key: AnyKey | None
        if alg in HMAC_ALGORITHMS:
            key = self._hmac
            if key is None:
                raise InvalidKey(f"algorithm {alg} is not accepted")
        else:
            key = self.keys.find(kid, alg)
            if key is None:
                raise UnknownKeyID(kid)
        try:
            return verifier(key, alg)
        except (JoseError, ValueError, TypeError):
            raise InvalidKey(f"the key cannot verify {alg}") from None

    def _check_header(self, segment: bytes) -> list[Any]:
        if len(segment) > _MAX_HEADER_SEGMENT:
            raise InvalidRequest("JOSE header is too long")
        try:
            header = from_json(b64url_decode(segment), allow_inf_nan=False)
        except ValueError:
            raise InvalidRequest("JOSE header is not base64url JSON") from None
        if type(header) is not dict:
            raise InvalidRequest("JOSE header must be a JSON object")
        alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
        if not is_set_typ(typ):
            raise InvalidRequest("JOSE header 'typ' must be 'secevent+jwt'")
        if type(alg) is not str or alg.lower() == "none":
            raise InvalidRequest("unsigned SETs are refused")
        if alg not in self.algorithms:
            raise InvalidKey(f"algorithm {alg} is not accepted")
        if kid is not None and type(kid) is not str:
            raise InvalidRequest("JOSE header 'kid' must be a string")
        if "crit" in header:
            raise InvalidRequest("critical JOSE header extensions are not understood")
        if header.get("b64", True) is not True:
            raise InvalidRequest("unencoded JWS payloads are refused")
        try:
            REGISTRY.check_header(header)
        except JoseError:
            raise InvalidRequest("JOSE header has a malformed registered member") from None
        entry: list[Any] = [alg, kid, None]  # [2]: (keys it was resolved with, prepared verify)
        if len(self._headers) >= _HEADER_CACHE_SIZE:
            self._headers.clear()
        self._headers[segment] = entry
        return entry

    def check_claims(self, set_: SecurityEventToken) -> SecurityEventToken:
        """The issuer, audience and time rules (SSF §4.1.6, §4.1.8)."""
        if set_.iss != self.issuer:
            raise InvalidIssuer("'iss' is not the expected issuer")
        audience, aud = self.audience, set_.aud
        if audience and (aud not in audience if type(aud) is str else audience.isdisjoint(aud)):
            raise InvalidAudience("'aud' does not name this receiver")
        if set_.iat > self.now() + self.iat_skew:
            raise InvalidRequest("'iat' is in the future")
        return set_


_DOT: Final = ord(".")  # an int needle: bytes.find goes straight to memchr
_PUBLIC_KEY_MARKERS: Final = (b"-----BEGIN", b"ssh-rsa ", b"ssh-ed25519 ", b"ecdsa-sha2-", b'{"kty"')


def _looks_like_public_key(secret: bytes) -> bool:
    """Key-confusion guard: PEM, OpenSSH or JWK text is key material, not an HMAC secret."""
    head = secret.lstrip()[:16]
    return any(head.startswith(m) for m in _PUBLIC_KEY_MARKERS) or b'"kty"' in secret
