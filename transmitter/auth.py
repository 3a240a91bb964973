"""OAuth 2.0 for the management API: built-in clients and tokens, and external JWT tokens.

CAEP interop (resource server): bearer tokens in the Authorization header only (RFC 6750
§2.1), validity/integrity/expiry/revocation checked, RFC 6750 §3.1 errors. Built-in tokens are
HS256 JWTs (key derived from the master secret, so they survive restarts and are shared by
instances); revocation = deleting the client. External tokens are JWTs of a configured
authorization server checked against its JWKS, issuer and audience.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Final

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet as JoseKeySet, OctKey
from sqlalchemy import delete, select
from sqlalchemy.engine import Engine

from transmitter.db import begin, client_t
from transmitter.secrets_box import SecretBox
from transmitter.settings import TransmitterSettings
from transmitter.streams import storable

__all__ = [
    "ADMIN",
    "MANAGE",
    "PUBLISH",
    "READ",
    "AuthError",
    "Authenticator",
    "ClientInfo",
    "NeedsIO",
    "Principal",
]

READ: Final = "ssf.read"
MANAGE: Final = "ssf.manage"
PUBLISH: Final = "ssf.publish"
#: The admin console shows and acts on every stream (not only the client's own) for this scope.
ADMIN: Final = "ssf.admin"
KNOWN_SCOPES: Final = frozenset({READ, MANAGE, PUBLISH, ADMIN})
_BUILTIN_KID: Final = "ssf-transmitter-builtin"


class AuthError(Exception):
    """An RFC 6750 §3.1 / RFC 6749 §5.2 error with its status code."""

    def __init__(self, status: int, error: str, description: str, scope: str | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.scope = scope

    def www_authenticate(self) -> str:
        parts = ['Bearer realm="ssf"']
        if self.error != "missing_token":
            parts.append(f'error="{self.error}"')
            parts.append(f'error_description="{self.description}"')
        if self.scope:
            parts.append(f'scope="{self.scope}"')
        return ", ".join(parts)


class NeedsIO(Exception):
    """Raised by ``verify(io=False)`` when only a database or network look-up can decide."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who called: ``owner`` keys the streams it may see."""

    owner: str
    scopes: frozenset[str]
    audience: str


@dataclass(frozen=True, slots=True)
class ClientInfo:
    client_id: str
    name: str
    scopes: tuple[str, ...]
    audience: str


class Authenticator:
    def __init__(self, engine: Engine, box: SecretBox, settings: TransmitterSettings) -> None:
        self._engine = engine
        self._box = box
        self._settings = settings
        self._key = OctKey.import_key(box.token_key)
        self._cache: dict[str, tuple[float, ClientInfo | None]] = {}
        self._lock = threading.Lock()
        #: Verified tokens (signature and claims) by their text; bounded, expiry re-checked.
        self._verified: dict[str, tuple[float, Principal]] = {}
        self._expiry: dict[str, float] = {}
        self._ext_keys: JoseKeySet | None = None
        self._ext_fetched = 0.0

    # --- clients ------------------------------------------------------------------------
    def add_client(
        self, name: str, scopes: list[str] | None = None, audience: str | None = None
    ) -> tuple[ClientInfo, str]:
        """Register a client; returns it and its secret (shown once, stored hashed)."""
        wanted = scopes or [READ, MANAGE]
        unknown = set(wanted) - KNOWN_SCOPES
        if unknown:
            raise ValueError(f"unknown scopes: {sorted(unknown)}")
        client_id = "c_" + secrets.token_urlsafe(12)
        secret = secrets.token_urlsafe(32)
        info = ClientInfo(client_id, name, tuple(wanted), audience or client_id)
        with begin(self._engine) as conn:
            if conn.execute(select(client_t.c.client_id).where(client_t.c.name == name)).first():
                raise ValueError(f"a client named {name!r} exists")
            conn.execute(
                client_t.insert().values(
                    client_id=client_id,
                    name=name,
                    secret_hash=self._box.hash_client_secret(secret),
                    scopes=" ".join(wanted),
                    audience=info.audience,
                    created_at=int(time.time()),
                )
            )
        return info, secret

    def remove_client(self, name: str) -> bool:
        with begin(self._engine) as conn:
            res = conn.execute(delete(client_t).where(client_t.c.name == name))
        with self._lock:
            self._cache.clear()
        return bool(res.rowcount)

    def clients(self) -> list[ClientInfo]:
        with begin(self._engine) as conn:
            rows = conn.execute(select(client_t).order_by(client_t.c.name)).all()
        return [ClientInfo(r.client_id, r.name, tuple(r.scopes.split()), r.audience) for r in rows]

    def client_by_name(self, name: str) -> ClientInfo | None:
        return next((c for c in self.clients() if c.name == name), None)

    def _client_fresh(self, client_id: str) -> bool:
        with self._lock:
            hit = self._cache.get(client_id)
        return hit is not None and hit[0] > time.monotonic()

    def _client(self, client_id: str) -> ClientInfo | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(client_id)
            if hit and hit[0] > now:
                return hit[1]
        with begin(self._engine) as conn:
            r = conn.execute(select(client_t).where(client_t.c.client_id == client_id)).first()
        info = ClientInfo(r.client_id, r.name, tuple(r.scopes.split()), r.audience) if r else None
        with self._lock:
            self._cache[client_id] = (now + 2.0, info)
        return info

    # --- token endpoint -----------------------------------------------------------------
    def authenticate_client(self, client_id: str, secret: str) -> ClientInfo:
        if not storable(client_id):
            raise AuthError(401, "invalid_client", "client authentication failed")
        with begin(self._engine) as conn:
            r = conn.execute(select(client_t).where(client_t.c.client_id == client_id)).first()
        if r is None or not self._box.check_client_secret(secret, r.secret_hash):
            raise AuthError(401, "invalid_client", "client authentication failed")
        return ClientInfo(r.client_id, r.name, tuple(r.scopes.split()), r.audience)

    def issue_token(self, client: ClientInfo, scope: str | None) -> dict[str, Any]:
        """RFC 6749 §4.4.3: a client-credentials token of at most ``token_lifetime`` seconds."""
        allowed = set(client.scopes)
        if scope is None or not scope.strip():
            granted = sorted(allowed)
        else:
            asked = set(scope.split())
            if not asked <= allowed:
                raise AuthError(400, "invalid_scope", "the requested scope exceeds the client's scopes")
            granted = sorted(asked)
        now = int(time.time())
        life = self._settings.token_lifetime
        claims = {
            "iss": self._settings.issuer,
            "aud": self._settings.issuer,
            "sub": client.client_id,
            "client_id": client.client_id,
            "scope": " ".join(granted),
            "iat": now,
            "exp": now + life,
            "jti": secrets.token_urlsafe(12),
        }
        token = jwt.encode({"alg": "HS256", "typ": "at+jwt", "kid": _BUILTIN_KID}, claims, self._key)
        return {"access_token": token, "token_type": "Bearer", "expires_in": life, "scope": " ".join(granted)}

    # --- resource server ----------------------------------------------------------------
    def verify(self, authorization: str | None, required: str, *, io: bool = True) -> Principal:
        """Check the Authorization header and that the token grants ``required``.

        With ``io=False`` (on the event loop) only cached knowledge is used; when the answer
        needs the database or a JWKS fetch, :class:`NeedsIO` is raised to retry on a thread.
        """
        if not authorization:
            raise AuthError(401, "missing_token", "a bearer token is required", required)
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError(401, "invalid_token", "the Authorization header must be 'Bearer <token>'")
        principal = self._principal(token, io)
        # CAEP interop: all management operations accept ssf.manage; reads accept ssf.read.
        ok = required in principal.scopes or (required == READ and MANAGE in principal.scopes)
        if not ok:
            raise AuthError(403, "insufficient_scope", f"this call needs scope {required}", required)
        return principal

    def _principal(self, token: str, io: bool = True) -> Principal:
        hit = self._verified.get(token)
        now = time.time()
        if hit is not None and hit[0] > now:
            principal = hit[1]
            if not principal.owner.startswith("ext:"):
                if not io and not self._client_fresh(principal.owner):
                    raise NeedsIO
                if self._client(principal.owner) is None:
                    raise AuthError(401, "invalid_token", "the access token has been revoked")
            return principal
        if not io:
            raise NeedsIO
        principal = self._verify_token(token)
        if len(self._verified) >= 10_000:
            self._verified.clear()
        self._verified[token] = (self._expiry.pop(token, now + 60), principal)
        return principal

    def _verify_token(self, token: str) -> Principal:
        try:
            header = json.loads(_b64(token.split(".", 1)[0]))
        except (ValueError, IndexError):
            raise AuthError(401, "invalid_token", "the access token is malformed") from None
        if not isinstance(header, dict):
            raise AuthError(401, "invalid_token", "the access token is malformed")
        if header.get("kid") == _BUILTIN_KID:
            return self._builtin(token)
        if self._settings.external_jwks_url:
            return self._external(token)
        raise AuthError(401, "invalid_token", "the access token is not valid")

    def _builtin(self, token: str) -> Principal:
        try:
            tok = jwt.decode(token, self._key, algorithms=["HS256"])
        except (JoseError, ValueError, TypeError):
            raise AuthError(401, "invalid_token", "the access token is not valid") from None
        c = tok.claims
        if c.get("iss") != self._settings.issuer or c.get("aud") != self._settings.issuer:
            raise AuthError(401, "invalid_token", "the access token is not for this transmitter")
        if not isinstance(c.get("exp"), int) or c["exp"] <= time.time():
            raise AuthError(401, "invalid_token", "the access token has expired")
        client = self._client(str(c.get("sub")))
        if client is None:
            raise AuthError(401, "invalid_token", "the access token has been revoked")
        scopes = frozenset(str(c.get("scope", "")).split()) & frozenset(client.scopes)
        self._expiry[token] = float(c["exp"])
        return Principal(client.client_id, scopes, client.audience)

    def _external_keys(self, refresh: bool = False) -> JoseKeySet:
        url = self._settings.external_jwks_url
        assert url is not None
        now = time.monotonic()
        wait = self._settings.external_jwks_refetch_interval
        if self._ext_keys is None or (refresh and now - self._ext_fetched > wait):
            resp = httpx.get(url, timeout=5)
            resp.raise_for_status()
            self._ext_keys = JoseKeySet.import_key_set(resp.json())
            self._ext_fetched = now
        return self._ext_keys

    def _external(self, token: str) -> Principal:
        try:
            try:
                tok = jwt.decode(
                    token, self._external_keys(), algorithms=["RS256", "PS256", "ES256", "EdDSA"]
                )
            except JoseError:
                tok = jwt.decode(
                    token, self._external_keys(refresh=True), algorithms=["RS256", "PS256", "ES256", "EdDSA"]
                )
        except (JoseError, ValueError, TypeError, httpx.HTTPError):
            raise AuthError(401, "invalid_token", "the access token is not valid") from None
        c = tok.claims
        s = self._settings
        if s.external_issuer and c.get("iss") != s.external_issuer:
            raise AuthError(401, "invalid_token", "the access token has the wrong issuer")
        if s.external_audience:
            aud = c.get("aud")
            auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if s.external_audience not in auds:
                raise AuthError(401, "invalid_token", "the access token has the wrong audience")
        exp = c.get("exp")
        if not isinstance(exp, int | float) or exp <= time.time():
            raise AuthError(401, "invalid_token", "the access token has expired")
        owner = c.get("client_id") or c.get("azp") or c.get("sub")
        if not isinstance(owner, str) or not owner or not storable(owner):
            raise AuthError(401, "invalid_token", "the access token names no client")
        raw = c.get("scope", c.get("scp", ""))
        scopes = frozenset(raw.split() if isinstance(raw, str) else [str(x) for x in raw or []])
        self._expiry[token] = float(exp)
        return Principal("ext:" + owner, scopes, owner)


def _b64(segment: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
