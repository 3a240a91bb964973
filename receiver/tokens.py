"""Access tokens at the protected resource: validation (RFC 9068 JWTs, RFC 7662 introspection)
and a bounded LRU cache that events evict at once.

A cached token keeps its claims, the subject keys it speaks for (:class:`TokenSubjects`) and
its last state evaluation stamped with the state's ``generation``: while no event arrives
the per-request state check is one integer comparison.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeGuard

import httpx
from joserfc import jws
from joserfc.errors import JoseError

from receiver.jwks import JWKSCache
from receiver.state import CLEAR, RevocationState, SubjectState, TokenSubjects, subject_key
from ssf.subjects import Subject

__all__ = [
    "AccessTokenValidator",
    "CachedToken",
    "CompositeValidator",
    "IntrospectionValidator",
    "JWTAccessTokenValidator",
    "Principal",
    "TokenCache",
    "TokenInvalid",
    "TokenUnavailable",
]

log = logging.getLogger("receiver.tokens")
AT_TYPES: Final = frozenset({"at+jwt", "application/at+jwt"})
MAX_TOKEN_BYTES: Final = 16 * 1024


class TokenInvalid(Exception):
    """The bearer token is not acceptable (RFC 6750 ``invalid_token``)."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class TokenUnavailable(Exception):
    """The token could not be checked right now (introspection or JWKS down)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who the request acts for; handed to the route as ``request.state.principal``."""

    sub: str | None
    iss: str | None
    sid: str | None
    acr: str | None
    device: str | None
    scope: str | None
    client_id: str | None
    claims: Mapping[str, Any]
    state: SubjectState
    kind: str

    def to_json(self) -> dict[str, Any]:
        return {
            "sub": self.sub,
            "iss": self.iss,
            "sid": self.sid,
            "acr": self.acr,
            "device": self.device,
            "scope": self.scope,
            "client_id": self.client_id,
            "claims": dict(self.claims),
        }


def _s(value: object) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(slots=True, eq=False)
class CachedToken:
    token: str
    claims: dict[str, Any]
    subjects: TokenSubjects
    iat: float
    exp: float | None
    #: Until when the cache may use this entry without re-validating (introspection TTL).
    valid_until: float = math.inf
    kind: str = "jwt"
    #: False: a negative cache entry (introspection said inactive).
    active: bool = True
    gen: int = -1
    state: SubjectState = CLEAR
    principal: Principal | None = field(default=None)

    def refresh(self, state: RevocationState) -> None:
        """Re-evaluate against the current state (only when its generation moved)."""
        view = state.evaluate(self.subjects, self.iat)
        self.state = view
        self.gen = state.generation
        claims = self.claims
        if view.claims:
            claims = {**claims, **view.claims}
        self.principal = Principal(
            sub=_s(claims.get("sub")),
            iss=_s(claims.get("iss")),
            sid=_s(claims.get("sid")),
            acr=_s(claims.get("acr")),
            device=_s(claims.get("device_id")),
            scope=_s(claims.get("scope")),
            client_id=_s(claims.get("client_id")),
            claims=claims,
            state=view,
            kind=self.kind,
        )


def make_entry(
    token: str,
    claims: dict[str, Any],
    *,
    kind: str,
    valid_until: float = math.inf,
    max_lifetime: float | None = None,
    now: float | None = None,
) -> CachedToken:
    """``max_lifetime``: a token expires that long after its ``iat`` at the latest, so a
    revocation entry older than that refuses no live token and may be forgotten.

    ``now`` (the validation time): no token was issued after it was presented, so an ``iat``
    ahead of it counts as ``now``. A future ``iat`` would otherwise pass every cutoff of its
    subject and stretch the lifetime bound."""
    iat = claims.get("iat")
    if now is not None and _num(iat) and iat > now:
        iat = now
    exp: float | None = float(claims["exp"]) if _num(claims.get("exp")) else None
    if max_lifetime is not None and _num(iat):
        exp = float(iat) + max_lifetime if exp is None else min(exp, float(iat) + max_lifetime)
    return CachedToken(
        token=token,
        claims=claims,
        subjects=TokenSubjects.from_claims(claims),
        # No iat: treat as issued long ago, so every cutoff refuses it (fail closed).
        iat=float(iat) if _num(iat) else 0.0,
        exp=exp,
        valid_until=valid_until,
        kind=kind,
    )


#: Claims that tie a token to a session, device, tenant or user the events name: one of the
#: wrong type would leave the token out of that subject's revocations, so it is refused.
_SUBJECT_CLAIMS = ("sid", "device_id", "tenant", "tid", "email")


def _malformed_subject_claim(claims: dict[str, Any]) -> str | None:
    for name in _SUBJECT_CLAIMS:
        value = claims.get(name)
        if value is not None and not (isinstance(value, str) and value):
            return name
    return None


def _num(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class TokenCache:
    """Bounded LRU of validated tokens, indexed by subject key for eviction by events."""

    def __init__(self, max_size: int = 100_000) -> None:
        self.max_size = max_size
        self._entries: OrderedDict[str, CachedToken] = OrderedDict()
        self._by_key: dict[str, set[str]] = {}
        self.evictions = 0

    def get(self, token: str) -> CachedToken | None:
        entry = self._entries.get(token)
        if entry is not None:
            self._entries.move_to_end(token)
        return entry

    def put(self, entry: CachedToken) -> None:
        self.evict(entry.token)
        self._entries[entry.token] = entry
        for key in entry.subjects.keys:
            self._by_key.setdefault(key, set()).add(entry.token)
        while len(self._entries) > self.max_size:
            oldest = next(iter(self._entries))
            self.evict(oldest)

    def evict(self, token: str) -> bool:
        entry = self._entries.pop(token, None)
        if entry is None:
            return False
        for key in entry.subjects.keys:
            tokens = self._by_key.get(key)
            if tokens is not None:
                tokens.discard(token)
                if not tokens:
                    del self._by_key[key]
        return True

    def evict_subject(self, subject: Subject, state: RevocationState) -> int:
        """Drop every cached token an event about ``subject`` concerns (SSF §8.1.3.1)."""
        if not self._by_key:
            return 0  # nothing cached: a receiver taking SETs faster than requests (or none)
        if subject.is_complex:
            candidates: set[str] = set()
            for member in subject.members().values():
                candidates |= self._by_key.get(subject_key(member), set())
            victims = [
                t for t in candidates if (e := self._entries.get(t)) and state.affects(subject, e.subjects)
            ]
        else:
            victims = list(self._by_key.get(subject_key(subject), ()))
        for token in victims:
            self.evict(token)
        self.evictions += len(victims)
        return len(victims)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, token: object) -> bool:
        return token in self._entries


class AccessTokenValidator(Protocol):
    async def validate(self, token: str) -> CachedToken:
        """A fresh cache entry for ``token``; raises TokenInvalid / TokenUnavailable."""


def _b64json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


class JWTAccessTokenValidator:
    """RFC 9068 JWT access tokens: signature by the AS's JWKS, ``typ``, ``iss``, ``aud``, times."""

    def __init__(
        self,
        *,
        issuer: str,
        jwks: JWKSCache,
        audience: str | None = None,
        algorithms: Collection[str] = ("RS256", "PS256", "ES256", "EdDSA"),
        require_typ: bool = True,
        leeway: int = 30,
        max_lifetime: float | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self.max_lifetime = max_lifetime
        self.jwks = jwks
        self.audience = audience
        self.algorithms = frozenset(algorithms) - {"none"}
        self.require_typ = require_typ
        self.leeway = leeway
        self.now = now
        self._registry = jws.JWSRegistry(algorithms=list(self.algorithms))

    async def validate(self, token: str) -> CachedToken:
        if len(token) > MAX_TOKEN_BYTES or not looks_like_jwt(token):
            raise TokenInvalid("malformed token")
        try:
            header = _b64json(token[: token.index(".")])
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise TokenInvalid("malformed token") from None
        if not isinstance(header, dict):
            raise TokenInvalid("malformed token")
        typ, alg, kid = header.get("typ"), header.get("alg"), header.get("kid")
        if self.require_typ and (not isinstance(typ, str) or typ.lower() not in AT_TYPES):
            raise TokenInvalid("not an RFC 9068 access token")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise TokenInvalid("token algorithm not accepted")
        if kid is not None and not isinstance(kid, str):
            raise TokenInvalid("malformed token")
        key = self.jwks.keys.find(kid, alg)
        if key is None and await self.jwks.refresh():
            key = self.jwks.keys.find(kid, alg)
        if key is None:
            raise TokenInvalid("token signing key unknown")
        try:
            obj = jws.deserialize_compact(token, key, registry=self._registry)
            claims = json.loads(obj.payload)
        except (JoseError, ValueError, TypeError, UnicodeDecodeError):
            raise TokenInvalid("token signature or payload invalid") from None
        if not isinstance(claims, dict):
            raise TokenInvalid("token payload invalid")
        now = self.now()
        self._check(claims, now)
        return make_entry(token, claims, kind="jwt", max_lifetime=self.max_lifetime, now=now)

    def _check(self, claims: dict[str, Any], now: float) -> None:
        if claims.get("iss") != self.issuer:
            raise TokenInvalid("token issuer not accepted")
        if self.audience is not None:
            aud = claims.get("aud")
            auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if self.audience not in auds:
                raise TokenInvalid("token audience not accepted")
        exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
        if not _num(exp):
            raise TokenInvalid("token has no expiry")
        if now > float(exp) + self.leeway:
            raise TokenInvalid("token expired")
        if nbf is not None and (not _num(nbf) or float(nbf) > now + self.leeway):
            raise TokenInvalid("token not yet valid")
        if iat is not None and not _num(iat):
            raise TokenInvalid("token iat invalid")
        if not isinstance(claims.get("sub"), str):
            raise TokenInvalid("token has no subject")
        if (name := _malformed_subject_claim(claims)) is not None:
            raise TokenInvalid(f"token claim {name} is not a non-empty string")


class IntrospectionValidator:
    """RFC 7662: ask the AS; cache the answer for ``ttl`` (never past the token's ``exp``)."""

    def __init__(
        self,
        *,
        url: str,
        http: httpx.AsyncClient,
        client_id: str | None = None,
        client_secret: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        ttl: float = 60.0,
        negative_ttl: float = 5.0,
        max_lifetime: float | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.audience = audience
        self.max_lifetime = max_lifetime
        self.http = http
        self.auth = httpx.BasicAuth(client_id, client_secret or "") if client_id else None
        self.issuer = issuer
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.now = now
        self.calls = 0

    async def validate(self, token: str) -> CachedToken:
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenInvalid("malformed token")
        self.calls += 1
        try:
            resp = await self.http.post(
                self.url,
                data={"token": token, "token_type_hint": "access_token"},
                auth=self.auth if self.auth is not None else httpx.USE_CLIENT_DEFAULT,
                headers={"Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise TokenUnavailable("introspection endpoint unreachable") from exc
        if resp.status_code != 200:
            raise TokenUnavailable(f"introspection answered {resp.status_code}")
        try:
            body = resp.json()
        except ValueError:
            raise TokenUnavailable("introspection answer is not JSON") from None
        now = self.now()
        if (
            not isinstance(body, dict)
            or body.get("active") is not True
            or not self._for_us(body)
            or _malformed_subject_claim(body) is not None
        ):
            entry = make_entry(token, {}, kind="introspection", valid_until=now + self.negative_ttl)
            entry.active = False
            return entry
        claims = dict(body)
        if self.issuer and "iss" not in claims:
            claims["iss"] = self.issuer
        exp = claims.get("exp")
        until = now + self.ttl
        if _num(exp):
            until = min(until, float(exp))
        return make_entry(
            token, claims, kind="introspection", valid_until=until, max_lifetime=self.max_lifetime, now=now
        )

    def _for_us(self, answer: dict[str, Any]) -> bool:
        """RFC 7662 §2.2: an answer naming its ``aud`` must name this API (when one is set)."""
        aud = answer.get("aud")
        if self.audience is None or aud is None:
            return True
        return self.audience in ([aud] if isinstance(aud, str) else aud if isinstance(aud, list) else [])


class CompositeValidator:
    """JWT-shaped tokens to the JWT validator, everything else to introspection."""

    def __init__(
        self, jwt: JWTAccessTokenValidator | None, introspection: IntrospectionValidator | None
    ) -> None:
        self.jwt = jwt
        self.introspection = introspection

    async def validate(self, token: str) -> CachedToken:
        if self.jwt is not None and (self.introspection is None or looks_like_jwt(token)):
            try:
                return await self.jwt.validate(token)
            except TokenInvalid:
                if self.introspection is None:
                    raise
        if self.introspection is not None:
            return await self.introspection.validate(token)
        raise TokenInvalid("no access-token validation is configured")
