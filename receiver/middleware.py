"""Continuous authorization as pure ASGI middleware for Starlette and FastAPI apps.

Per request: the bearer token (RFC 6750 §2.1, header only) → the token cache (validated
once, then a dict hit) → the state check (one integer comparison while no event arrived;
a few dict lookups after one) → the policy. Refusals are RFC 6750 §3 ``WWW-Authenticate``
challenges: 401 ``invalid_token`` for revoked, disabled or unknown tokens, 401
``insufficient_user_authentication`` with ``acr_values``/``max_age`` for an RFC 9470
step-up, 403 ``insufficient_scope``. The authorized :class:`~receiver.tokens.Principal`
reaches the route as ``request.state.principal`` (and ``scope["ssf.principal"]``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from receiver.core import Receiver
from receiver.policy import Decision, DefaultPolicy, Policy, RequestContext
from receiver.tokens import CachedToken, TokenInvalid, TokenUnavailable

__all__ = ["ContinuousAuthMiddleware", "default_policy_for"]

log = logging.getLogger("receiver.middleware")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def default_policy_for(receiver: Receiver) -> DefaultPolicy:
    s = receiver.settings
    return DefaultPolicy(
        required_acr=s.required_acr,
        acr_order=s.acr_order,
        max_age=s.step_up_max_age,
        deny_risk_levels=s.deny_risk_levels,
    )


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ContinuousAuthMiddleware:
    """``app.add_middleware(ContinuousAuthMiddleware, receiver=receiver)``.

    ``policy``: a callable ``(claims, request_context, subject_state) -> Decision``; the
    default covers every event type. Revoked and disabled tokens are refused before any
    policy runs. ``exclude`` lists path prefixes served without a token (health checks).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        receiver: Receiver,
        policy: Policy | None = None,
        exclude: Iterable[str] = (),
        realm: str | None = None,
    ) -> None:
        self.app = app
        self.receiver = receiver
        self.policy: Policy = policy or default_policy_for(receiver)
        self.exclude = tuple(exclude)
        self.realm = realm or receiver.settings.realm
        self.leeway = receiver.settings.token_leeway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.exclude and scope["path"].startswith(self.exclude)):
            await self.app(scope, receive, send)
            return
        token = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if value[:7].lower() == b"bearer ":
                    token = value[7:].strip().decode("latin-1")
                break
        if not token:
            await self._challenge(send, 401, None, "a bearer token is required")
            return
        rcv = self.receiver
        entry = rcv.tokens.get(token)
        now = time.time()
        if entry is None or now >= entry.valid_until:
            try:
                entry = await self._validate(token)
            except TokenInvalid as exc:
                await self._challenge(send, 401, "invalid_token", exc.description)
                return
            except TokenUnavailable:
                await self._unavailable(send)
                return
        if not entry.active:
            await self._challenge(send, 401, "invalid_token", "the token is not active")
            return
        if entry.exp is not None and now > entry.exp + self.leeway:
            rcv.tokens.evict(token)
            await self._challenge(send, 401, "invalid_token", "the token expired")
            return
        state = rcv.state
        if entry.gen != state.generation:
            entry.refresh(state)
        principal = entry.principal
        assert principal is not None
        view = entry.state
        if view.revoked:
            await self._challenge(send, 401, "invalid_token", "the token was revoked")
            return
        if view.disabled:
            await self._challenge(send, 401, "invalid_token", "the account is disabled")
            return
        client = scope.get("client")
        ctx = RequestContext(
            scope["method"],
            scope["path"],
            client[0] if client else None,
            _ua(scope["headers"]),
            scope["headers"],
        )
        decision = self.policy(principal.claims, ctx, view)
        if not decision.allow:
            await self._refuse(send, decision)
            return
        st = scope.get("state")
        if st is None:
            scope["state"] = {"principal": principal}
        else:
            st["principal"] = principal
        scope["ssf.principal"] = principal
        await self.app(scope, receive, send)

    async def _validate(self, token: str) -> CachedToken:
        rcv = self.receiver
        if rcv.token_validator is None:
            raise TokenInvalid("this resource has no access-token validation configured")
        entry = await rcv.token_validator.validate(token)
        rcv.tokens.put(entry)
        return entry

    async def _refuse(self, send: Send, d: Decision) -> None:
        params: list[tuple[str, str]] = []
        if d.error:
            params.append(("error", d.error))
        if d.description:
            params.append(("error_description", d.description))
        if d.acr_values:
            params.append(("acr_values", d.acr_values))
        if d.scope:
            params.append(("scope", d.scope))
        extra = f", max_age={d.max_age}" if d.max_age is not None else ""
        await self._send(send, d.status or 401, params, extra)

    async def _challenge(self, send: Send, status: int, error: str | None, description: str) -> None:
        params = [("error", error), ("error_description", description)] if error else []
        await self._send(send, status, params, "", body_description=description)

    async def _send(
        self,
        send: Send,
        status: int,
        params: list[tuple[str, str]],
        extra: str,
        body_description: str | None = None,
    ) -> None:
        parts = [f"realm={_quote(self.realm)}"] + [f"{k}={_quote(v)}" for k, v in params]
        header = "Bearer " + ", ".join(parts) + extra
        body: dict[str, Any] = {}
        for k, v in params:
            body[k] = v
        if "error" not in body:
            body["error"] = "invalid_request" if status == 401 else "access_denied"
            body["error_description"] = body_description or ""
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"www-authenticate", header.encode("latin-1", "replace")),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _unavailable(self, send: Send) -> None:
        payload = b'{"error":"temporarily_unavailable","error_description":"the token cannot be checked now"}'
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"retry-after", b"1"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _ua(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    for k, v in headers:
        if k == b"user-agent":
            return v.decode("latin-1")
    return None
