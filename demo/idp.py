"""A small demo identity provider: JWT access tokens for demo users, and SSF events when things change.

It is what a real identity provider does, reduced to what the demo needs:

* it signs RFC 9068 JWT access tokens (header ``typ: at+jwt``) with its own key and serves
  the public key at ``/jwks.json``, so a resource server can validate them offline; each
  token names the session (``sid``), the authentication assurance (``acr``) and the device
  it was issued to (``device_id``);
* when a session ends, a device changes compliance or a user's assurance level changes, it
  tells its SSF transmitter through the publish API (:mod:`demo.publisher`), and every
  receiver subscribed to that transmitter hears of it.

It is not part of the transmitter's API and is not meant for production: there are no
passwords, and the ``/login`` and ``/admin/*`` routes of its HTTP face (:mod:`demo.idp_http`)
are unauthenticated (loopback only).
"""

from __future__ import annotations

import functools
import itertools
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from joserfc import jwt

from demo.publisher import PublishResult, TransmitterPublisher
from ssf.events import AssuranceLevelChange, DeviceComplianceChange, SessionRevoked
from ssf.keys import KeySet, SigningKey, generate_signing_key
from ssf.subjects import Subject

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = [
    "ACCESS_TOKEN_TYP",
    "ASSURANCE_LEVELS",
    "DEFAULT_USERS",
    "DemoIdP",
    "DemoUser",
    "IdPError",
    "IssuedToken",
    "OAuthClient",
    "Session",
]

#: RFC 9068 §2.1: JWT access tokens carry ``typ: at+jwt``.
ACCESS_TOKEN_TYP: Final = "at+jwt"
#: CAEP §3.4 assurance namespace used by the demo, weakest first.
ASSURANCE_NAMESPACE: Final = "NIST-AAL"
ASSURANCE_LEVELS: Final = ("nist-aal1", "nist-aal2", "nist-aal3")
Compliance = Literal["compliant", "not-compliant"]


class IdPError(ValueError):
    """A request the identity provider cannot honour (unknown user, session, device or level)."""

    def __init__(self, description: str, status_code: int = 400) -> None:
        super().__init__(description)
        self.description = description
        self.status_code = status_code


@dataclass(frozen=True, slots=True)
class DemoUser:
    username: str
    sub: str
    email: str
    name: str


DEFAULT_USERS: Final = (
    DemoUser("ada", "248289761001", "ada@example.com", "Ada Lovelace"),
    DemoUser("grace", "248289761002", "grace@example.com", "Grace Hopper"),
)


@dataclass(slots=True)
class Session:
    """One sign-in: the tokens issued in it all carry its ``sid``."""

    sid: str
    user: DemoUser
    device_id: str
    acr: str
    active: bool = True


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    claims: dict[str, Any]
    session: Session
    expires_in: int


@dataclass(frozen=True, slots=True)
class OAuthClient:
    """A machine client of the identity provider's token endpoint (client credentials grant)."""

    client_id: str
    secret: str
    scopes: tuple[str, ...]
    #: The ``aud`` of its tokens: the resource they are for (e.g. the transmitter).
    audience: str


@dataclass(slots=True)
class _State:
    sessions: dict[str, Session] = field(default_factory=dict)
    devices: dict[str, Compliance] = field(default_factory=dict)
    assurance: dict[str, str] = field(default_factory=dict)


class DemoIdP:
    """Issues access tokens and publishes what changes to an SSF transmitter."""

    def __init__(
        self,
        issuer: str,
        *,
        audience: str,
        publisher: TransmitterPublisher | None = None,
        users: tuple[DemoUser, ...] = DEFAULT_USERS,
        key: SigningKey | None = None,
        token_lifetime: int = 3600,
        client_id: str = "demo-web-app",
        oauth_clients: tuple[OAuthClient, ...] = (),
        trust_env: bool = True,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.publisher = publisher
        self.users = {u.username: u for u in users}
        self.keys = KeySet(
            [key or generate_signing_key("RS256", kid="demo-idp-1", created_at=int(time.time()))]
        )
        self.token_lifetime = token_lifetime
        self.client_id = client_id
        self.oauth_clients = {c.client_id: c for c in oauth_clients}
        #: False: publish without the environment's proxy settings (all-loopback demo).
        self.trust_env = trust_env
        self._state = _State()
        self._sid_counter = itertools.count(1)

    # -- tokens ----------------------------------------------------------------------------

    def jwks(self) -> dict[str, Any]:
        return self.keys.jwks()

    def login(self, username: str, *, device_id: str, acr: str = "nist-aal2") -> IssuedToken:
        """Sign ``username`` in on ``device_id`` at assurance ``acr``: a new session and its token."""
        user = self._user(username)
        if acr not in ASSURANCE_LEVELS:
            raise IdPError(f"acr must be one of {', '.join(ASSURANCE_LEVELS)}")
        if self._state.devices.get(device_id, "compliant") != "compliant":
            raise IdPError(f"device {device_id} is not compliant: sign-in refused", 403)
        sid = f"s-{next(self._sid_counter):03d}-{secrets.token_hex(3)}"
        session = Session(sid, user, device_id, acr)
        self._state.sessions[sid] = session
        self._state.devices.setdefault(device_id, "compliant")
        self._state.assurance[username] = acr
        return self.issue(session)

    def issue(self, session: Session) -> IssuedToken:
        """An RFC 9068 JWT access token for an active session."""
        if not session.active:
            raise IdPError(f"session {session.sid} has ended", 409)
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": session.user.sub,
            "aud": self.audience,
            "exp": now + self.token_lifetime,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "client_id": self.client_id,
            "scope": "openid profile",
            "sid": session.sid,
            "acr": session.acr,
            "auth_time": now,
            "device_id": session.device_id,
            "email": session.user.email,
        }
        return IssuedToken(self._sign(claims), claims, session, self.token_lifetime)

    def client_token(self, client_id: str, scope: str | None = None) -> dict[str, Any]:
        """RFC 6749 §4.4.3: a client-credentials access token (RFC 9068 JWT) for a known client."""
        client = self.oauth_clients.get(client_id)
        if client is None:
            raise IdPError(f"no OAuth client {client_id!r}", 401)
        granted = tuple(client.scopes) if not scope else tuple(scope.split())
        if not set(granted) <= set(client.scopes):
            raise IdPError("the requested scope exceeds the client's scopes", 400)
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": client.client_id,
            "aud": client.audience,
            "exp": now + self.token_lifetime,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "client_id": client.client_id,
            "scope": " ".join(granted),
        }
        return {
            "access_token": self._sign(claims),
            "token_type": "Bearer",
            "expires_in": self.token_lifetime,
            "scope": " ".join(granted),
        }

    def _sign(self, claims: dict[str, Any]) -> str:
        signing = self.keys.active
        header = {"alg": signing.alg, "typ": ACCESS_TOKEN_TYP, "kid": signing.kid}
        return jwt.encode(header, claims, signing.key, algorithms=[signing.alg])

    # -- subjects (SSF §3.3 complex subjects, RFC 9493 formats) ------------------------------

    def user_subject(self, user: DemoUser) -> Subject:
        return Subject.iss_sub(self.issuer, user.sub)

    def session_subject(self, session: Session) -> Subject:
        return Subject.complex(user=self.user_subject(session.user), session=Subject.opaque(session.sid))

    def device_subject(self, user: DemoUser, device_id: str) -> Subject:
        return Subject.complex(user=self.user_subject(user), device=Subject.opaque(device_id))

    # -- changes that a real identity provider would publish --------------------------------

    async def end_session(self, sid: str, *, initiating_entity: str = "admin") -> PublishResult:
        """The session is over (sign-out, admin action): CAEP session-revoked."""
        session = self._state.sessions.get(sid)
        if session is None:
            raise IdPError(f"no session {sid}", 404)
        session.active = False
        event = SessionRevoked.model_validate(
            {
                "event_timestamp": _now(),
                "initiating_entity": initiating_entity,
                "reason_admin": {"en": "Session ended at the identity provider"},
            }
        )
        return await self._publish(self.session_subject(session), event.event_type, event.payload())

    async def set_device_compliance(self, username: str, device_id: str, status: str) -> PublishResult:
        """The device management system reports a new posture: CAEP device-compliance-change."""
        user = self._user(username)
        if status not in ("compliant", "not-compliant"):
            raise IdPError("status must be 'compliant' or 'not-compliant'")
        current: Compliance = "compliant" if status == "compliant" else "not-compliant"
        previous = self._state.devices.get(device_id, "compliant")
        self._state.devices[device_id] = current
        event = DeviceComplianceChange.model_validate(
            {
                "event_timestamp": _now(),
                "initiating_entity": "policy",
                "previous_status": previous,
                "current_status": current,
                "reason_admin": {"en": f"Device {device_id} reported {current} by device management"},
            }
        )
        return await self._publish(self.device_subject(user, device_id), event.event_type, event.payload())

    async def set_assurance_level(self, username: str, level: str) -> PublishResult:
        """The user's authentication assurance changed: CAEP assurance-level-change."""
        user = self._user(username)
        if level not in ASSURANCE_LEVELS:
            raise IdPError(f"level must be one of {', '.join(ASSURANCE_LEVELS)}")
        previous = self._state.assurance.get(username)
        self._state.assurance[username] = level
        data: dict[str, Any] = {
            "event_timestamp": _now(),
            "initiating_entity": "policy",
            "namespace": ASSURANCE_NAMESPACE,
            "current_level": level,
        }
        if previous is not None and previous != level:
            data["previous_level"] = previous
            up = ASSURANCE_LEVELS.index(level) > ASSURANCE_LEVELS.index(previous)
            data["change_direction"] = "increase" if up else "decrease"
        event = AssuranceLevelChange.model_validate(data)
        return await self._publish(self.user_subject(user), event.event_type, event.payload())

    async def _publish(self, subject: Subject, event_type: str, payload: dict[str, Any]) -> PublishResult:
        if self.publisher is None:
            raise IdPError("this identity provider has no transmitter to publish to", 503)
        return await self.publisher.publish(subject.to_dict(), event_type, payload)

    def _user(self, username: str) -> DemoUser:
        user = self.users.get(username)
        if user is None:
            raise IdPError(f"no user {username!r}", 404)
        return user

    # -- HTTP ------------------------------------------------------------------------------

    @functools.cached_property
    def app(self) -> Starlette:
        """The identity provider's HTTP face (:mod:`demo.idp_http`)."""
        from demo.idp_http import build_app  # that module builds on this one, not the reverse

        return build_app(self)


def _now() -> float:
    # Millisecond precision: a token issued earlier in the same second is still "before" the change.
    return round(time.time(), 3)
