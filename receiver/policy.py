"""Policies: plain callables ``(claims, request_context, subject_state) -> Decision``.

``claims`` are the token's claims with any token-claims-change laid over them;
``request_context`` is the request (method, path, client address, user agent, headers);
``subject_state`` is what the events say about the token's subjects now. The middleware
refuses revoked and disabled tokens before any policy runs; the default policy covers
device compliance, assurance (RFC 9470 step-up) and risk.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from receiver.state import SubjectState

__all__ = ["ALLOW", "DEFAULT_ACR_ORDER", "Decision", "DefaultPolicy", "Policy", "RequestContext"]

DEFAULT_ACR_ORDER: Final = ("0", "1", "2", "3", "nist-aal1", "nist-aal2", "nist-aal3")


@dataclass(frozen=True, slots=True)
class Decision:
    """``allow``, or the refusal the middleware renders (RFC 6750 §3, RFC 9470 §3)."""

    allow: bool
    status: int = 200
    error: str | None = None
    description: str | None = None
    acr_values: str | None = None
    max_age: int | None = None
    scope: str | None = None

    @classmethod
    def deny(cls, description: str, *, error: str = "invalid_token", status: int = 401) -> Decision:
        return cls(False, status, error, description)

    @classmethod
    def forbidden(cls, description: str, *, scope: str | None = None) -> Decision:
        """403 ``insufficient_scope`` (RFC 6750 §3.1)."""
        return cls(False, 403, "insufficient_scope", description, scope=scope)

    @classmethod
    def step_up(
        cls, acr_values: str, *, max_age: int | None = None, description: str | None = None
    ) -> Decision:
        """RFC 9470: 401 ``insufficient_user_authentication`` with ``acr_values``/``max_age``."""
        return cls(
            False,
            401,
            "insufficient_user_authentication",
            description or "a higher authentication level is required",
            acr_values=acr_values,
            max_age=max_age,
        )


ALLOW: Final = Decision(True)


@dataclass(frozen=True, slots=True)
class RequestContext:
    method: str
    path: str
    client: str | None
    user_agent: str | None
    headers: Sequence[tuple[bytes, bytes]] = ()

    def header(self, name: str) -> str | None:
        key = name.lower().encode("latin-1")
        for k, v in self.headers:
            if k == key:
                return v.decode("latin-1")
        return None


Policy = Callable[[Mapping[str, Any], RequestContext, SubjectState], Decision]


class DefaultPolicy:
    """Every event's effect: compliance, assurance step-up, risk.

    Step-up (RFC 9470) is asked when the subject's current assurance level (from
    assurance-level-change) is below the ``acr`` the token was issued with, or below
    ``required_acr``. Levels compare by their position in ``acr_order``; a level missing
    from the order compares as lower than any listed one when it differs (fail closed).
    """

    def __init__(
        self,
        *,
        required_acr: str | None = None,
        acr_order: Sequence[str] = DEFAULT_ACR_ORDER,
        max_age: int | None = None,
        deny_risk_levels: Sequence[str] = (),
    ) -> None:
        self.required_acr = required_acr
        self.rank = {level: i for i, level in enumerate(acr_order)}
        self.max_age = max_age
        self.deny_risk = frozenset(deny_risk_levels)

    def lower(self, have: str, want: str) -> bool:
        """Is level ``have`` below ``want``?"""
        if have == want:
            return False
        h, w = self.rank.get(have), self.rank.get(want)
        if h is None or w is None:
            return True
        return h < w

    def __call__(self, claims: Mapping[str, Any], ctx: RequestContext, state: SubjectState) -> Decision:
        if state.revoked:
            return Decision.deny("the token was revoked")
        if state.disabled:
            return Decision.deny("the account is disabled")
        if not state.device_compliant:
            return Decision.deny("the device is not compliant")
        if state.risk_level is not None and state.risk_level in self.deny_risk:
            return Decision.deny(f"risk level {state.risk_level} is refused")
        token_acr = claims.get("acr") if isinstance(claims.get("acr"), str) else None
        current = state.assurance_level or token_acr
        if state.assurance_level is not None and token_acr and self.lower(state.assurance_level, token_acr):
            return Decision.step_up(token_acr, max_age=self.max_age)
        if self.required_acr is not None and (current is None or self.lower(current, self.required_acr)):
            return Decision.step_up(self.required_acr, max_age=self.max_age)
        return ALLOW
