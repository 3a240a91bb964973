"""Transmitter discovery (SSF §7.2): path insertion, legacy RISC fallback, issuer check."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from receiver.transport import describe
from ssf.metadata import TransmitterMetadata, well_known_url

__all__ = ["DiscoveryError", "check_url", "discover", "discover_token_endpoint"]


class DiscoveryError(Exception):
    """The transmitter's metadata could not be found or failed validation (SSF §7.2.4)."""


def check_url(url: str, *, dev_mode: bool, what: str) -> None:
    """SSF §7.1/§10.4: https everywhere; http only in development mode."""
    parts = urlsplit(url)
    allowed = ("https", "http") if dev_mode else ("https",)
    if parts.scheme not in allowed or not parts.netloc:
        raise DiscoveryError(f"{what} must be an https URL" + ("" if dev_mode else " (dev mode allows http)"))
    if what == "issuer" and (parts.query or parts.fragment):
        raise DiscoveryError("the issuer must have no query or fragment")


def _same_issuer(expected: str, actual: str) -> bool:
    # SSF §7.2.4 wants them identical; a trailing slash is the one difference tolerated.
    return expected == actual or expected.rstrip("/") == actual.rstrip("/")


async def discover(http: httpx.AsyncClient, issuer: str, *, dev_mode: bool = False) -> TransmitterMetadata:
    """GET ``/.well-known/ssf-configuration{path}``, falling back to ``risc-configuration``."""
    check_url(issuer, dev_mode=dev_mode, what="issuer")
    last = "no metadata found"
    for name in ("ssf-configuration", "risc-configuration"):
        url = well_known_url(issuer, name)
        try:
            resp = await http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise DiscoveryError(f"discovery at {url} failed: {describe(exc)}") from exc
        if resp.status_code != 200:
            last = f"{url} answered {resp.status_code}"
            continue
        try:
            meta = TransmitterMetadata.model_validate(resp.json())
        except (ValueError, ValidationError) as exc:
            raise DiscoveryError(f"metadata at {url} is not valid: {type(exc).__name__}") from exc
        if not _same_issuer(issuer, meta.issuer):
            raise DiscoveryError("metadata 'issuer' differs from the issuer used for discovery")
        for what, endpoint in meta.endpoints().items():
            check_url(endpoint, dev_mode=dev_mode, what=what)
        return meta
    raise DiscoveryError(last)


async def discover_token_endpoint(
    http: httpx.AsyncClient, issuer: str, *, dev_mode: bool | None = None
) -> str:
    """RFC 8414 authorization server metadata at the issuer, then OIDC discovery.

    The client secret goes to the endpoint found, so it must be https outside development
    mode (``None``: development mode when the issuer itself is http, which only passes
    :func:`discover` in it)."""
    dev = issuer.startswith("http://") if dev_mode is None else dev_mode
    for name in ("oauth-authorization-server", "openid-configuration"):
        url = well_known_url(issuer, name)
        try:
            resp = await http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError:
            continue
        if resp.status_code == 200:
            try:
                data = resp.json()
            except ValueError:
                continue
            endpoint = data.get("token_endpoint") if isinstance(data, dict) else None
            if isinstance(endpoint, str) and endpoint:
                check_url(endpoint, dev_mode=dev, what="token_endpoint")
                return endpoint
    raise DiscoveryError("no token endpoint: set SSF_RECEIVER_TOKEN_ENDPOINT or a static token")
