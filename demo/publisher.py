"""The identity provider's side of the transmitter's publish API.

A real identity provider holds a client at its SSF transmitter with the ``ssf.publish``
scope. It gets a bearer token by OAuth 2.0 client credentials (RFC 6749 §4.4) from the
token endpoint named in the transmitter's RFC 8414 metadata, and calls ``POST /events``;
the call returns once the event is durable, with the ``jti`` of the SET made for each
stream that will carry it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import httpx

__all__ = ["PUBLISH_SCOPE", "PublishError", "PublishResult", "TransmitterPublisher"]

PUBLISH_SCOPE: Final = "ssf.publish"
#: Renew the bearer token this long before it expires.
_RENEW_MARGIN: Final = 30.0


class PublishError(RuntimeError):
    """The transmitter refused or could not be reached; the message says why."""


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What the transmitter answered: the SET ``jti`` per stream it was routed to."""

    jti: dict[str, str]
    txn: str | None
    #: Seconds the publish call took, from request to the durable answer.
    duration: float
    #: Wall-clock time (``time.time()``) at which the transmitter's answer arrived.
    returned_at: float


class TransmitterPublisher:
    """Publishes events to an SSF transmitter as its identity provider."""

    def __init__(
        self,
        transmitter_url: str,
        client_id: str,
        client_secret: str,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
        token_endpoint: str | None = None,
    ) -> None:
        self.transmitter_url = transmitter_url.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        #: The HTTP client to publish with; None makes one per call (safe across event loops).
        self.client = client
        self._timeout = timeout
        self._token: str | None = None
        self._token_expires = 0.0
        #: None: discovered from the transmitter's RFC 8414 metadata. An identity provider that is
        #: itself the transmitter's authorization server names its own token endpoint here.
        self._token_endpoint: str | None = token_endpoint

    async def publish(
        self,
        subject: Mapping[str, Any],
        event_type: str,
        payload: Mapping[str, Any],
        *,
        txn: str | None = None,
    ) -> PublishResult:
        """``POST /events``; answers once the transmitter holds the event durably."""
        body: dict[str, Any] = {"subject": dict(subject), "events": {event_type: dict(payload)}}
        if txn is not None:
            body["txn"] = txn
        async with self._session() as http:
            token = await self._bearer(http)
            started = time.perf_counter()
            try:
                resp = await http.post(
                    f"{self.transmitter_url}/events",
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                )
            except httpx.HTTPError as exc:
                raise PublishError(f"transmitter unreachable: {exc!r}") from exc
            duration = time.perf_counter() - started
            returned_at = time.time()
        if resp.status_code not in (200, 201, 202):
            raise PublishError(f"publish refused: HTTP {resp.status_code} {resp.text[:300]}")
        data = resp.json()
        jti = data.get("jti") if isinstance(data, dict) else None
        if not isinstance(jti, dict):
            raise PublishError(f"publish answer has no jti map: {resp.text[:300]}")
        return PublishResult({str(k): str(v) for k, v in jti.items()}, txn, duration, returned_at)

    def _session(self) -> _Session:
        return _Session(self.client, self._timeout)

    async def _bearer(self, http: httpx.AsyncClient) -> str:
        if self._token is not None and time.monotonic() < self._token_expires - _RENEW_MARGIN:
            return self._token
        endpoint = await self._discover_token_endpoint(http)
        try:
            resp = await http.post(
                endpoint,
                data={"grant_type": "client_credentials", "scope": PUBLISH_SCOPE},
                auth=(self._client_id, self._client_secret),
            )
        except httpx.HTTPError as exc:
            raise PublishError(f"token endpoint unreachable: {exc!r}") from exc
        if resp.status_code != 200:
            raise PublishError(f"token request refused: HTTP {resp.status_code} {resp.text[:300]}")
        data = resp.json()
        token = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str):
            raise PublishError("token endpoint answered without an access_token")
        expires_in = data.get("expires_in", 300)
        self._token = token
        self._token_expires = time.monotonic() + float(expires_in if isinstance(expires_in, int) else 300)
        return token

    async def _discover_token_endpoint(self, http: httpx.AsyncClient) -> str:
        if self._token_endpoint is not None:
            return self._token_endpoint
        url = f"{self.transmitter_url}/.well-known/oauth-authorization-server"
        try:
            resp = await http.get(url)
        except httpx.HTTPError as exc:
            raise PublishError(f"transmitter unreachable: {exc!r}") from exc
        meta = resp.json() if resp.status_code == 200 else None
        endpoint = meta.get("token_endpoint") if isinstance(meta, dict) else None
        if not isinstance(endpoint, str):
            raise PublishError(f"no token_endpoint in {url} (HTTP {resp.status_code})")
        self._token_endpoint = endpoint
        return endpoint


class _Session:
    """Use the injected client, or a short-lived one bound to the running event loop."""

    def __init__(self, client: httpx.AsyncClient | None, timeout: float) -> None:
        self._given = client
        self._own: httpx.AsyncClient | None = None
        self._timeout = timeout

    async def __aenter__(self) -> httpx.AsyncClient:
        if self._given is not None:
            return self._given
        self._own = httpx.AsyncClient(timeout=self._timeout)
        return self._own

    async def __aexit__(self, *exc: object) -> None:
        if self._own is not None:
            await self._own.aclose()
