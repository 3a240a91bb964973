"""The transmitter's management API (SSF §8.1), poll endpoint (RFC 8936) and our credentials.

Rules kept here, once: a request body never carries a transmitter-supplied property
(SSF §8.1.1.1); every stream configuration answer must name the discovered issuer in
``iss`` (SSF §8.1.1.x); reads and deletes name the stream with ``?stream_id=``; a 401
from the transmitter renews the access token and retries once.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import httpx
from pydantic import ValidationError

from receiver.transport import describe
from ssf.metadata import TransmitterMetadata
from ssf.models import describe_validation_error
from ssf.poll import PollRequest
from ssf.stream import TRANSMITTER_SUPPLIED, StreamConfiguration, StreamStatus
from ssf.subjects import Subject

__all__ = [
    "ClientCredentials",
    "StaticToken",
    "StreamConflict",
    "TokenProvider",
    "TransmitterClient",
    "TransmitterError",
    "retry_after_seconds",
]


class TransmitterError(Exception):
    """The transmitter answered something we cannot use."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class StreamConflict(TransmitterError):
    """409 on create: the transmitter holds a stream for us already."""


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """RFC 9110 §10.2.3: delay-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class TokenProvider:
    async def token(self) -> str:
        raise NotImplementedError

    def invalidate(self) -> None:
        return None


class StaticToken(TokenProvider):
    def __init__(self, token: str) -> None:
        self._token = token

    async def token(self) -> str:
        return self._token


class ClientCredentials(TokenProvider):
    """RFC 6749 §4.4 with ``scope=ssf.read ssf.manage``, renewed before it expires."""

    def __init__(
        self, http: httpx.AsyncClient, token_endpoint: str, client_id: str, client_secret: str, scope: str
    ) -> None:
        self.http = http
        self.token_endpoint = token_endpoint
        self.client_id = client_id
        self.client_secret = client_secret
        self.scope = scope
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0

    def invalidate(self) -> None:
        self._token = None

    async def token(self) -> str:
        if self._token is not None and time.monotonic() < self._renew_at:
            return self._token
        async with self._lock:
            if self._token is not None and time.monotonic() < self._renew_at:
                return self._token
            self.fetches += 1
            try:
                resp = await self.http.post(
                    self.token_endpoint,
                    data={"grant_type": "client_credentials", "scope": self.scope},
                    auth=httpx.BasicAuth(self.client_id, self.client_secret),
                    headers={"Accept": "application/json"},
                )
            except httpx.HTTPError as exc:
                raise TransmitterError(f"token endpoint unreachable: {describe(exc)}") from exc
            if resp.status_code != 200:
                raise TransmitterError(
                    f"token endpoint answered {resp.status_code}{_oauth_error(resp)}", status=resp.status_code
                )
            try:
                body = resp.json()
            except ValueError:
                raise TransmitterError("token endpoint answer is not JSON") from None
            token = body.get("access_token") if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise TransmitterError("token endpoint answer has no access_token")
            lifetime = body.get("expires_in")
            life = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else 300.0
            # Renew at 80 % of the lifetime, and at least 5 s before expiry.
            self._renew_at = time.monotonic() + max(0.0, min(life * 0.8, life - 5))
            self._token = token
            return token


def _oauth_error(resp: httpx.Response) -> str:
    """RFC 6749 §5.2's ``error`` (and description), which says whether the id or the secret is
    wrong (``invalid_client``) or the scope (``invalid_scope``); bounded, one line."""
    try:
        body = resp.json()
    except ValueError:
        return ""
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return ""
    text = body["error"]
    if isinstance(body.get("error_description"), str):
        text += ": " + body["error_description"]
    return " (" + " ".join(text.split())[:200] + ")"


def _clean(body: Mapping[str, Any]) -> dict[str, Any]:
    """Never send transmitter-supplied properties (stream_id is the one a PATCH/PUT needs)."""
    return {k: v for k, v in body.items() if k == "stream_id" or k not in TRANSMITTER_SUPPLIED}


class TransmitterClient:
    def __init__(self, metadata: TransmitterMetadata, http: httpx.AsyncClient, auth: TokenProvider) -> None:
        self.metadata = metadata
        self.http = http
        self.auth = auth
        #: The last management/poll calls made (method, url), for status and tests.
        self.calls: deque[tuple[str, str]] = deque(maxlen=256)

    # --- plumbing -------------------------------------------------------------------
    def _endpoint(self, name: str) -> str:
        url = getattr(self.metadata, name, None)
        if not isinstance(url, str):
            raise TransmitterError(f"the transmitter publishes no {name}")
        return url

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        for attempt in (0, 1):
            headers = {"Authorization": f"Bearer {await self.auth.token()}", "Accept": "application/json"}
            kwargs: dict[str, Any] = {"headers": headers, "params": params}
            if json is not None:
                kwargs["json"] = json
            if timeout is not None:
                kwargs["timeout"] = timeout
            try:
                resp = await self.http.request(method, url, **kwargs)
            except httpx.HTTPError as exc:
                raise TransmitterError(f"{method} {url} failed: {describe(exc)}") from exc
            self.calls.append((method, url))
            if resp.status_code == 401 and attempt == 0:
                self.auth.invalidate()
                continue
            return resp
        raise AssertionError("unreachable")

    def _fail(self, resp: httpx.Response, what: str) -> TransmitterError:
        detail = ""
        try:
            body = resp.json()
            if isinstance(body, dict):
                detail = str(
                    body.get("description") or body.get("error_description") or body.get("err") or ""
                )
        except ValueError:
            pass
        return TransmitterError(
            f"{what}: {resp.status_code} {detail}".strip(),
            status=resp.status_code,
            retry_after=retry_after_seconds(resp.headers.get("Retry-After")),
        )

    def _config(self, data: object) -> StreamConfiguration:
        try:
            cfg = StreamConfiguration.model_validate(data)
        except ValidationError as exc:
            raise TransmitterError(
                f"stream configuration invalid: {describe_validation_error(exc)}"
            ) from None
        if cfg.iss != self.metadata.issuer:
            # SSF §8.1.1.1: the receiver MUST check 'iss' is the discovered issuer.
            raise TransmitterError("stream configuration 'iss' is not the discovered issuer")
        return cfg

    def _json(self, resp: httpx.Response) -> Any:
        try:
            return resp.json()
        except ValueError:
            raise TransmitterError("the transmitter answered invalid JSON") from None

    # --- stream configuration (SSF §8.1.1) ------------------------------------------
    async def create(self, body: Mapping[str, Any]) -> StreamConfiguration:
        # The transmitter assigns the stream_id (SSF §8.1.1.1): a create never names one.
        fresh = {k: v for k, v in _clean(body).items() if k != "stream_id"}
        resp = await self.request("POST", self._endpoint("configuration_endpoint"), json=fresh)
        if resp.status_code == 409:
            raise StreamConflict("a stream exists already", status=409)
        if resp.status_code not in (200, 201):
            raise self._fail(resp, "create stream")
        return self._config(self._json(resp))

    async def read(self, stream_id: str) -> StreamConfiguration | None:
        resp = await self.request(
            "GET", self._endpoint("configuration_endpoint"), params={"stream_id": stream_id}
        )
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise self._fail(resp, "read stream")
        data = self._json(resp)
        if isinstance(data, list):  # some transmitters answer a one-element array
            data = next((d for d in data if isinstance(d, dict) and d.get("stream_id") == stream_id), None)
            if data is None:
                return None
        return self._config(data)

    async def list(self) -> list[StreamConfiguration]:
        resp = await self.request("GET", self._endpoint("configuration_endpoint"))
        if resp.status_code != 200:
            raise self._fail(resp, "list streams")
        data = self._json(resp)
        items = data if isinstance(data, list) else [data]
        return [self._config(d) for d in items if isinstance(d, dict)]

    async def update(self, stream_id: str, changes: Mapping[str, Any]) -> StreamConfiguration | None:
        """PATCH; None when the transmitter answers 202 (pending)."""
        body = {**_clean(changes), "stream_id": stream_id}
        resp = await self.request("PATCH", self._endpoint("configuration_endpoint"), json=body)
        if resp.status_code == 202:
            return None
        if resp.status_code != 200:
            raise self._fail(resp, "update stream")
        return self._config(self._json(resp))

    async def replace(self, stream_id: str, config: Mapping[str, Any]) -> StreamConfiguration | None:
        """PUT with every receiver-supplied property; None on 202."""
        body = {**_clean(config), "stream_id": stream_id}
        resp = await self.request("PUT", self._endpoint("configuration_endpoint"), json=body)
        if resp.status_code == 202:
            return None
        if resp.status_code != 200:
            raise self._fail(resp, "replace stream")
        return self._config(self._json(resp))

    async def delete(self, stream_id: str) -> None:
        resp = await self.request(
            "DELETE", self._endpoint("configuration_endpoint"), params={"stream_id": stream_id}
        )
        if resp.status_code not in (200, 204):
            raise self._fail(resp, "delete stream")

    # --- status, subjects, verification (SSF §8.1.2-8.1.4) --------------------------
    async def get_status(self, stream_id: str) -> StreamStatus:
        resp = await self.request("GET", self._endpoint("status_endpoint"), params={"stream_id": stream_id})
        if resp.status_code != 200:
            raise self._fail(resp, "read status")
        try:
            return StreamStatus.model_validate(self._json(resp))
        except ValidationError as exc:
            raise TransmitterError(f"status invalid: {describe_validation_error(exc)}") from None

    async def set_status(self, stream_id: str, status: str, reason: str | None = None) -> StreamStatus | None:
        body: dict[str, Any] = {"stream_id": stream_id, "status": status}
        if reason:
            body["reason"] = reason
        resp = await self.request("POST", self._endpoint("status_endpoint"), json=body)
        if resp.status_code == 202:
            return None
        if resp.status_code != 200:
            raise self._fail(resp, "update status")
        try:
            return StreamStatus.model_validate(self._json(resp))
        except ValidationError as exc:
            raise TransmitterError(f"status invalid: {describe_validation_error(exc)}") from None

    async def add_subject(self, stream_id: str, subject: Subject, *, verified: bool | None = None) -> None:
        body: dict[str, Any] = {"stream_id": stream_id, "subject": subject.to_dict()}
        if verified is not None:
            body["verified"] = verified
        resp = await self.request("POST", self._endpoint("add_subject_endpoint"), json=body)
        if not 200 <= resp.status_code < 300:
            raise self._fail(resp, "add subject")

    async def remove_subject(self, stream_id: str, subject: Subject) -> None:
        body = {"stream_id": stream_id, "subject": subject.to_dict()}
        resp = await self.request("POST", self._endpoint("remove_subject_endpoint"), json=body)
        if not 200 <= resp.status_code < 300:
            raise self._fail(resp, "remove subject")

    async def verify(self, stream_id: str, state: str | None = None) -> None:
        body: dict[str, Any] = {"stream_id": stream_id}
        if state is not None:
            body["state"] = state
        resp = await self.request("POST", self._endpoint("verification_endpoint"), json=body)
        if not 200 <= resp.status_code < 300:
            raise self._fail(resp, "verification request")

    # --- poll (RFC 8936) --------------------------------------------------------------
    async def poll(self, endpoint_url: str, request: PollRequest, *, timeout: float) -> dict[str, Any]:
        """One poll; the endpoint URL is used verbatim (its query string is kept)."""
        resp = await self.request("POST", endpoint_url, json=request.to_json(), timeout=timeout)
        if resp.status_code != 200:
            raise self._fail(resp, "poll")
        data = self._json(resp)
        if not isinstance(data, dict):
            raise TransmitterError("poll answer is not a JSON object")
        return data
