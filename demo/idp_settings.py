"""Configuration of the demo identity provider when it runs on its own (``python -m demo.idp_serve``)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from demo.idp import OAuthClient

__all__ = ["IdPSettings"]


class IdPSettings(BaseSettings):
    """Read from ``SSF_DEMO_IDP_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="SSF_DEMO_IDP_", extra="ignore")

    #: The identity provider's public URL: ``iss`` of its tokens.
    issuer: str = "http://127.0.0.1:9000"
    #: ``aud`` of the users' access tokens: the API protected by the SSF receiver.
    audience: str = "https://api.example.com"
    token_lifetime: int = Field(default=3600, ge=60, le=86400)
    #: The SSF transmitter to publish to; None: changes are not published.
    transmitter_url: str | None = None
    #: How the identity provider authenticates to the publish API.
    publisher_client_id: str | None = None
    publisher_client_secret: SecretStr | None = None
    #: Token endpoint for the publisher's client; None: the transmitter's (RFC 8414 discovery).
    publisher_token_endpoint: str | None = None
    #: Machine clients of this identity provider's own token endpoint, as a JSON object
    #: ``{"client_id": {"secret": "...", "scope": "ssf.read ssf.manage", "audience": "..."}}``.
    oauth_clients: SecretStr | None = None

    def clients(self) -> tuple[OAuthClient, ...]:
        if self.oauth_clients is None:
            return ()
        raw: Any = json.loads(self.oauth_clients.get_secret_value())
        if not isinstance(raw, dict):
            raise ValueError("SSF_DEMO_IDP_OAUTH_CLIENTS must be a JSON object")
        made = []
        for client_id, spec in raw.items():
            if not isinstance(spec, dict) or not isinstance(spec.get("secret"), str):
                raise ValueError(f"OAuth client {client_id!r} needs a 'secret'")
            scopes = str(spec.get("scope", "")).split()
            made.append(
                OAuthClient(str(client_id), spec["secret"], tuple(scopes), str(spec.get("audience", "")))
            )
        return tuple(made)
