"""Transmitter configuration metadata and its discovery (SSF §7)."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, StrictStr

from ssf import uris

__all__ = ["AuthorizationScheme", "TransmitterMetadata", "issuer_matches", "well_known_url"]


class AuthorizationScheme(BaseModel):
    model_config = ConfigDict(extra="allow")
    spec_urn: StrictStr


class TransmitterMetadata(BaseModel):
    """SSF §7.1. Arrays with zero elements are omitted on output (§7.2.3)."""

    model_config = ConfigDict(extra="allow")

    spec_version: StrictStr | None = None
    issuer: StrictStr
    jwks_uri: StrictStr | None = None
    delivery_methods_supported: list[StrictStr] | None = None
    configuration_endpoint: StrictStr | None = None
    status_endpoint: StrictStr | None = None
    add_subject_endpoint: StrictStr | None = None
    remove_subject_endpoint: StrictStr | None = None
    verification_endpoint: StrictStr | None = None
    critical_subject_members: list[StrictStr] | None = None
    authorization_schemes: list[AuthorizationScheme] | None = None
    default_subjects: Literal["ALL", "NONE"] | None = None

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude_none=True)
        return {k: v for k, v in data.items() if v != []}

    def delivery_methods(self) -> frozenset[str]:
        return frozenset(uris.normalize_delivery_method(m) for m in self.delivery_methods_supported or ())

    def endpoints(self) -> dict[str, str]:
        names = (
            "jwks_uri",
            "configuration_endpoint",
            "status_endpoint",
            "add_subject_endpoint",
            "remove_subject_endpoint",
            "verification_endpoint",
        )
        return {n: v for n in names if isinstance(v := getattr(self, n), str)}


def well_known_url(issuer: str, name: str = "ssf-configuration") -> str:
    """SSF §7.2.1: insert ``/.well-known/<name>`` between host and the issuer's path."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, f"/.well-known/{name}{path}", "", ""))


def issuer_matches(expected: str, actual: str) -> bool:
    """SSF §7.2.4: the metadata issuer must be identical to the one used for discovery."""
    return expected == actual
