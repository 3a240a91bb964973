"""Receiver configuration: one typed object read once from ``SSF_RECEIVER_*`` variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ssf.events import CAEP_EVENTS, RISC_EVENTS
from ssf.events.risc import SessionsRevoked
from ssf.set import DEFAULT_ALGORITHMS

__all__ = ["DEFAULT_EVENTS", "ReceiverSettings", "normalize_database_url"]

#: Everything the receiver acts on or records: CAEP and RISC, minus the deprecated RISC
#: sessions-revoked (still applied when it arrives). SSF's own verification and
#: stream-updated events arrive without being requested (SSF §8.1.4, §8.1.5).
DEFAULT_EVENTS: tuple[str, ...] = tuple(sorted((CAEP_EVENTS | RISC_EVENTS) - {SessionsRevoked.event_type}))


def normalize_database_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (SQLAlchemy would pick psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class ReceiverSettings(BaseSettings):
    """Every knob of the receiver. Defaults suit one resource server with SQLite."""

    model_config = SettingsConfigDict(env_prefix="SSF_RECEIVER_", extra="ignore")

    # --- the transmitter -------------------------------------------------------------
    #: The transmitter's Issuer; discovery inserts the well-known path (SSF §7.2).
    transmitter_issuer: str | None = None
    #: Allows an http:// issuer and http:// endpoints (never in production).
    dev_mode: bool = False
    #: Stream made out of band by an operator: discover metadata + JWKS only, no management.
    out_of_band: bool = False
    #: Pin an existing stream (out of band, or to reuse a known one).
    stream_id: str | None = None
    delivery: Literal["push", "poll"] = "push"
    #: The public URL of this receiver's ``POST /ssf/push`` (push delivery).
    push_url: str | None = None
    #: The Authorization value the transmitter must send on pushes; random when unset.
    push_authorization: SecretStr | None = None
    #: Encrypts a generated push credential in the store (instances sharing a store share it).
    secret_key: SecretStr | None = None
    #: Where a generated secret is kept when ``secret_key`` is unset; default: beside a
    #: SQLite database file (``<file>.secret``), else ``ssf-receiver.secret``.
    secret_file: Path | None = None
    events: list[str] = Field(default_factory=lambda: list(DEFAULT_EVENTS))
    description: str | None = "ssf-stack receiver"
    #: Expected SET ``aud``; when unset, the stream's ``aud`` once known.
    audience: str | None = None
    #: Verify the stream with a fresh ``state`` on start (SSF §8.1.4.2).
    verify_on_start: bool = True

    # --- authorization at the transmitter ---------------------------------------------
    client_id: str | None = None
    client_secret: SecretStr | None = None
    #: OAuth token endpoint; discovered from RFC 8414 metadata at the issuer when unset.
    token_endpoint: str | None = None
    scope: str = "ssf.read ssf.manage"
    #: A fixed bearer token instead of client credentials.
    static_token: SecretStr | None = None

    # --- storage ---------------------------------------------------------------------
    database_url: str = "sqlite:///ssf-receiver.db"
    #: A shared backend for several instances (state keys + pub/sub fan-out).
    redis_url: str | None = None
    redis_namespace: str = "ssf-receiver"
    #: How long a seen ``jti`` is remembered (dedupe of re-sent SETs survives restarts).
    jti_retention: int = Field(default=7 * 86400, ge=60)
    #: Seconds a cutoff or revoked session is kept after its event time; unset:
    #: ``token_max_lifetime + token_leeway``, past which every token it could refuse has
    #: expired (or is refused as too old). Never less than that.
    state_retention: int | None = Field(default=None, ge=60)
    #: Forget cutoffs and revoked sessions older than the retention. While on, an access
    #: token without ``iat`` is refused (``invalid_token``): the receiver cannot tell its age,
    #: so no pruned entry can be known not to have refused it (RFC 9068 JWTs carry ``iat``;
    #: an introspection answer may not). A revoked session's age counts from its receipt
    #: when its event time is older. Off by default: a kept entry can only refuse, while a
    #: pruned revoked session trusts its ``sid`` never to be used again.
    prune_state: bool = False
    #: Seconds between attempts to store changes the store refused (it was down).
    store_retry_interval: float = Field(default=1.0, gt=0)
    #: Seen jtis kept in memory; older ones are looked up in the store when needed.
    jti_memory: int = Field(default=1_000_000, ge=1)

    # --- SET validation --------------------------------------------------------------
    set_algorithms: list[str] = Field(default_factory=lambda: list(DEFAULT_ALGORITHMS))
    clock_skew: int = Field(default=300, ge=0)
    max_set_bytes: int = Field(default=64 * 1024, ge=1024)
    #: Failed push authentications per client address within the window before 429.
    push_auth_failure_limit: int = Field(default=20, ge=1)
    push_auth_failure_window: float = Field(default=60.0, gt=0)
    #: Minimum seconds between two JWKS fetches caused by unknown ``kid``s.
    jwks_min_refresh_interval: float = Field(default=10.0, ge=0)
    #: Complex-subject members this receiver can process (SSF §3.6 critical members).
    understood_subject_members: list[str] = Field(
        default_factory=lambda: ["user", "session", "device", "tenant"]
    )

    # --- access tokens at the protected resource -------------------------------------
    #: RFC 9068 JWT access tokens: the authorization server's issuer, JWKS and audience (this
    #: API's identifier, required with the JWKS).
    token_issuer: str | None = None
    token_jwks_url: str | None = None
    token_audience: str | None = None
    token_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "PS256", "ES256", "EdDSA"])
    #: RFC 9068 §4: refuse JWTs whose ``typ`` is not ``at+jwt``.
    token_require_typ: bool = True
    #: RFC 7662 introspection for opaque tokens.
    introspection_url: str | None = None
    introspection_client_id: str | None = None
    introspection_client_secret: SecretStr | None = None
    introspection_ttl: float = Field(default=60.0, gt=0)
    introspection_negative_ttl: float = Field(default=5.0, ge=0)
    token_leeway: int = Field(default=30, ge=0)
    #: The longest access-token lifetime accepted: a token older than this (by its ``iat``)
    #: is refused as expired whatever its ``exp``; bounds how long revocations are kept.
    token_max_lifetime: int = Field(default=86400, ge=60)
    token_cache_size: int = Field(default=100_000, ge=1)

    # --- policy ----------------------------------------------------------------------
    #: A minimum ``acr`` for every request; lower ⇒ RFC 9470 step-up challenge.
    required_acr: str | None = None
    #: Assurance levels from lowest to highest, for comparisons.
    acr_order: list[str] = Field(
        default_factory=lambda: ["0", "1", "2", "3", "nist-aal1", "nist-aal2", "nist-aal3"]
    )
    step_up_max_age: int | None = Field(default=None, ge=0)
    #: Risk levels (risk-level-change) that are refused outright, e.g. ["HIGH"].
    deny_risk_levels: list[str] = Field(default_factory=list)
    realm: str = "ssf-receiver"

    # --- HTTP and poll ---------------------------------------------------------------
    http_timeout: float = Field(default=10.0, gt=0)
    #: Client timeout for a long poll: above the transmitter's own hold time.
    poll_timeout: float = Field(default=40.0, gt=0)
    poll_max_events: int = Field(default=1000, ge=1)
    poll_return_immediately: bool = False
    #: Pause between short polls that returned nothing.
    poll_interval: float = Field(default=1.0, ge=0)
    backoff_base: float = Field(default=0.5, gt=0)
    backoff_max: float = Field(default=60.0, gt=0)
    #: Seconds of start-up attempts to reach the transmitter before going on without it.
    startup_timeout: float = Field(default=30.0, gt=0)
    #: Fail start-up when the transmitter stays unreachable (else serve and keep retrying).
    require_transmitter: bool = False

    @model_validator(mode="after")
    def _retention_covers_token_lifetime(self) -> ReceiverSettings:
        floor = self.token_max_lifetime + self.token_leeway
        if self.state_retention is not None and self.state_retention < floor:
            raise ValueError(
                f"STATE_RETENTION ({self.state_retention}) must be at least TOKEN_MAX_LIFETIME + "
                f"TOKEN_LEEWAY ({floor}): a shorter one forgets revocations of live tokens"
            )
        return self

    @model_validator(mode="after")
    def _jwt_tokens_need_an_audience(self) -> ReceiverSettings:
        if self.token_issuer and self.token_jwks_url and not self.token_audience:
            # RFC 9068 §4: the resource server MUST check that ``aud`` names it; without one,
            # a token the authorization server issued for any other API would be accepted.
            raise ValueError("TOKEN_AUDIENCE is required with TOKEN_JWKS_URL (RFC 9068 §4: check aud)")
        return self

    @model_validator(mode="after")
    def _issuer_is_https(self) -> ReceiverSettings:
        # Caught here, not at discovery: start-up would retry a setting that can never work.
        issuer = self.transmitter_issuer
        if issuer:
            parts = urlsplit(issuer)
            allowed = ("https", "http") if self.dev_mode else ("https",)
            if parts.scheme not in allowed or not parts.netloc:
                hint = "" if self.dev_mode else " (DEV_MODE=true allows http, for development only)"
                raise ValueError(f"TRANSMITTER_ISSUER must be an https URL{hint}")
        return self

    @model_validator(mode="after")
    def _out_of_band_is_push(self) -> ReceiverSettings:
        if self.out_of_band and self.delivery == "poll":
            # Nothing would ever poll: the poll loop needs the stream's endpoint_url and a
            # management token, which an out-of-band stream does not give the receiver.
            raise ValueError("OUT_OF_BAND streams are received by push: set DELIVERY=push")
        return self

    @property
    def effective_state_retention(self) -> int:
        """How long revocation entries are kept (see ``state_retention``)."""
        if self.state_retention is not None:
            return self.state_retention
        return self.token_max_lifetime + self.token_leeway

    @field_validator("transmitter_issuer")
    @classmethod
    def _strip(cls, value: str | None) -> str | None:
        if value and value.count("/") > 2:
            return value.rstrip("/")
        return value

    @field_validator("database_url")
    @classmethod
    def _normalise_db(cls, value: str) -> str:
        return normalize_database_url(value)
