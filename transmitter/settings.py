"""Transmitter configuration: one typed object read once from ``SSF_TRANSMITTER_*`` variables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["TransmitterSettings", "normalize_database_url"]


def normalize_database_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3 here (SQLAlchemy defaults to psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class TransmitterSettings(BaseSettings):
    """Every knob of the transmitter. Defaults suit one machine with SQLite.

    Paused-stream retention (SSF §8.1.2.1, CAEP interop: documented offline): a paused stream
    keeps at most ``paused_max_events`` events and none older than ``paused_retention_seconds``;
    the oldest go first, so the per-subject generation order of what is kept is unchanged.
    """

    model_config = SettingsConfigDict(env_prefix="SSF_TRANSMITTER_", extra="ignore")

    issuer: str = "http://127.0.0.1:8080"
    database_url: str = "sqlite:///ssf-transmitter.db"
    #: PostgreSQL only: the schema to use (created if missing); isolates tests and tenants.
    database_schema: str | None = None
    dev_mode: bool = False

    # secrets and keys
    #: Encrypts push authorization headers and private keys at rest, signs built-in tokens.
    secret_key: SecretStr | None = None
    #: Where a generated secret is kept when ``secret_key`` is not set.
    secret_file: Path = Path("ssf-transmitter.secret")
    signing_alg: Literal["RS256", "PS256", "ES256", "EdDSA"] = "RS256"
    #: An operator-provided private key (PEM, JWK or private JWKS) imported on start.
    signing_key_file: Path | None = None
    key_overlap_seconds: int = Field(default=7 * 86400, ge=0)
    #: Rotate automatically every N seconds (APScheduler); None = only `keys rotate`.
    key_rotation_interval: int | None = Field(default=None, ge=1)

    # OAuth 2.0
    token_lifetime: int = Field(default=3600, ge=1, le=3600)
    external_jwks_url: str | None = None
    external_issuer: str | None = None
    external_audience: str | None = None
    #: A token signed with a key the cached external JWKS lacks re-fetches it at most this
    #: often (seconds): key rotation is picked up, a flood of bad tokens cannot hammer the server.
    external_jwks_refetch_interval: float = Field(default=30.0, ge=0)

    # streams
    max_streams_per_client: int = Field(default=10, ge=1)
    default_subjects: Literal["ALL", "NONE"] = "ALL"
    min_verification_interval: int = Field(default=1, ge=0)
    #: Seconds without receiver activity before the stream is paused; None = never.
    inactivity_timeout: int | None = Field(default=30 * 86400, ge=1)
    inactivity_action: Literal["paused", "disabled"] = "paused"
    paused_retention_seconds: int = Field(default=7 * 86400, ge=1)
    paused_max_events: int = Field(default=100_000, ge=1)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    #: Deepest nesting of arrays/objects accepted in a JSON request body (400 past it).
    max_json_depth: int = Field(default=32, ge=4)
    #: Management API calls per client: sustained rate per second and burst (429 past it).
    management_rate: float = Field(default=50.0, gt=0)
    management_burst: int = Field(default=100, ge=1)
    #: SSF §8.1.3.2: a subject added with ``verified: false`` starts no events unless "include".
    unverified_subjects: Literal["ignore", "include"] = "ignore"
    #: Delivered, refused and expired outbox rows are kept this long for inspection.
    outbox_keep_seconds: int = Field(default=86400, ge=0)

    # push delivery
    #: Hosts or CIDR networks push may reach even if private or loopback (SSRF guard).
    #: From the environment as a JSON array or a comma-separated list.
    allowed_push_destinations: Annotated[list[str], NoDecode] = Field(default_factory=list)
    push_timeout: float = Field(default=10.0, gt=0)
    push_concurrency: int = Field(default=64, ge=1)
    push_batch: int = Field(default=256, ge=1)
    retry_base_seconds: float = Field(default=0.5, gt=0)
    retry_max_seconds: float = Field(default=300.0, gt=0)
    #: A receiver's 429/503 ``Retry-After`` is honoured up to this many seconds.
    retry_after_max_seconds: float = Field(default=3600.0, gt=0)
    #: Past this many seconds of failing, the stream is paused with a stream-updated event.
    retry_cap_seconds: float = Field(default=3600.0, gt=0)
    lease_seconds: float = Field(default=30.0, gt=0)
    worker_poll_interval: float = Field(default=1.0, gt=0)
    maintenance_interval: float = Field(default=5.0, gt=0)
    instance_id: str | None = None

    # poll delivery
    long_poll_timeout: float = Field(default=30.0, ge=0)
    max_poll_events: int = Field(default=1000, ge=1)
    #: Long polls waiting at once on one stream (per instance); more get 429.
    max_poll_connections_per_stream: int = Field(default=4, ge=1)

    @field_validator("issuer")
    @classmethod
    def _strip_issuer(cls, value: str) -> str:
        return value.rstrip("/") if value.count("/") > 2 else value

    @field_validator("allowed_push_destinations", mode="before")
    @classmethod
    def _split_destinations(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _normalise_db(cls, value: str) -> str:
        return normalize_database_url(value)

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")
