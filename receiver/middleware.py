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
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any, Final

from receiver.core import Receiver
from receiver.policy import Decision, DefaultPolicy, Policy, RequestContext
from receiver.tokens import CachedToken, Principal, TokenInvalid, TokenUnavailable

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
    policy runs. ``exclude`` lists paths served without a token, with everything under them (health checks).
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
        # Whole path segments: "/healthz" opens /healthz and /healthz/…, never /healthz-admin.
        self._open_paths = frozenset(p.rstrip("/") or "/" for p in self.exclude)
        self._open_prefixes = tuple(p.rstrip("/") + "/" for p in self.exclude)
        self.realm = realm or receiver.settings.realm
        self.leeway = receiver.settings.token_leeway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if (kind != "http" and kind != "websocket") or (
            self.exclude
            and ((path := scope["path"]) in self._open_paths or path.startswith(self._open_prefixes))
        ):
            await self.app(scope, receive, send)
            return
        outcome = await self.authorize(scope)
        stats = self.receiver.stats
        if isinstance(outcome, Decision):
            stats["request_refused:" + (outcome.error or "no_token")] += 1
            if kind == "websocket":
                # RFC 6455 §7.4.1: 1008 policy violation (the handshake is refused).
                await send({"type": "websocket.close", "code": 1008, "reason": outcome.description or ""})
            elif outcome.status == 503:
                await self._unavailable(send)
            else:
                await self._refuse(send, outcome)
            return
        stats["request_authorized"] += 1
        st = scope.get("state")
        if st is None:
            scope["state"] = {"principal": outcome}
        else:
            st["principal"] = outcome
        scope["ssf.principal"] = outcome
        await self.app(scope, receive, send)

    async def authorize(self, scope: Scope) -> Principal | Decision:
        """The principal for this request, or the refusal to send (no I/O on a cached token)."""
        token = None
        user_agent = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if value[:7].lower() == b"bearer ":
                    token = value[7:].strip().decode("latin-1")
            elif name == b"user-agent":
                user_agent = value.decode("latin-1")
        if not token:
            return _MISSING
        rcv = self.receiver
        entry = rcv.tokens.get(token)
        now = time.time()
        if entry is None or now >= entry.valid_until:
            try:
                entry = await self._validate(token)
            except TokenInvalid as exc:
                return Decision.deny(exc.description)
            except TokenUnavailable:
                return _UNAVAILABLE
        if not entry.active:
            return _INACTIVE
        if entry.exp is not None and now > entry.exp + self.leeway:
            rcv.tokens.evict(token)
            return _EXPIRED
        state = rcv.state
        if entry.gen != state.generation:
            entry.refresh(state)
        principal = entry.principal
        assert principal is not None
        view = entry.state
        if view.revoked:
            return _REVOKED
        if view.disabled:
            return _DISABLED
        client = scope.get("client")
        ctx = RequestContext(
            scope.get("method", "GET"),
            scope["path"],
            client[0] if client else None,
            user_agent,
            scope["headers"],
        )
        decision = self.policy(principal.claims, ctx, view)
        return principal if decision.allow else decision

    async def _validate(self, token: str) -> CachedToken:
        rcv = self.receiver
        if rcv.token_validator is None:
            raise TokenInvalid("this resource has no access-token validation configured")
        entry = await rcv.token_validator.validate(token)
        if rcv.settings.prune_state and entry.active and not _has_iat(entry.claims):
            # Its age cannot be told, so no pruned cutoff can be known not to have refused it.
            raise TokenInvalid("the token has no iat (required while PRUNE_STATE is on)")
        rcv.tokens.put(entry)
        return entry

    async def _refuse(self, send: Send, d: Decision) -> None:
        params: list[tuple[str, str]] = []
        if d is _MISSING:  # RFC 6750 §3.1: no error code when no credentials were sent
            await self._send(send, 401, [], "", body_description=d.description)
            return
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


def _has_iat(claims: Mapping[str, Any]) -> bool:
    iat = claims.get("iat")
    return isinstance(iat, int | float) and not isinstance(iat, bool) and math.isfinite(iat)


_MISSING: Final = Decision.deny("a bearer token is required")
_UNAVAILABLE: Final = Decision(False, 503, "temporarily_unavailable", "the token cannot be checked now")
_INACTIVE: Final = Decision.deny("the token is not active")
_EXPIRED: Final = Decision.deny("the token expired")
_REVOKED: Final = Decision.deny("the token was revoked")
_DISABLED: Final = Decision.deny("the account is disabled")
