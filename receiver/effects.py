"""What each event means for access: SET → state mutations (CAEP 1.0 §3, RISC 1.0 §2).

| event | effect on matching tokens |
| --- | --- |
| session-revoked, session subject (opaque ``sid``, ``jwt_id`` or complex with ``session``) | all refused |
| session-revoked, other subjects (user, user + device …) | issued at or before ``event_timestamp`` refused |
| credential-change, account-credential-change-required, credential-compromise, | issued at or |
| account-purged, identifier-recycled, RISC sessions-revoked | before the event time refused |
| account-disabled / account-enabled | all refused / accepted again |
| device-compliance-change | refused while ``current_status`` is ``not-compliant`` |
| token-claims-change | ``claims`` laid over the token's own claims |
| assurance-level-change, risk-level-change | recorded for the policy |

The event time is ``event_timestamp`` when the event carries one, else the SET's ``iat``.
Tokens issued in the same second as a cutoff are refused too (``iat <= cutoff``): token
``iat`` is whole seconds, so a strict comparison could let a token minted just before the
event through.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

from receiver.state import ASSURANCE, CLAIMS, CUTOFF, DISABLED, NONCOMPLIANT, RISK, Mutation
from ssf.events import (
    AssuranceLevelChange,
    CredentialChange,
    DeviceComplianceChange,
    RiskLevelChange,
    SessionRevoked,
    TokenClaimsChange,
    risc,
)
from ssf.events.base import Event
from ssf.set import SecurityEventToken
from ssf.subjects import Subject

__all__ = ["ACTED_ON", "CUTOFF_EVENTS", "event_time", "mutations_for"]

#: Events whose effect is a per-subject cutoff at the event time.
CUTOFF_EVENTS: Final = frozenset(
    {
        CredentialChange.event_type,
        risc.AccountCredentialChangeRequired.event_type,
        risc.CredentialCompromise.event_type,
        risc.AccountPurged.event_type,
        risc.IdentifierRecycled.event_type,
        risc.SessionsRevoked.event_type,
    }
)


def event_time(set_: SecurityEventToken) -> float:
    ts = getattr(set_.event, "event_timestamp", None)
    if isinstance(ts, int | float) and not isinstance(ts, bool) and math.isfinite(ts):
        return float(ts)
    return float(set_.iat)


def _is_session_subject(subject: Subject) -> bool:
    if subject.is_complex:
        return subject.member("session") is not None
    return subject.format in ("opaque", "jwt_id")


def _session_revoked(subject: Subject, event: Event, at: float) -> list[Mutation]:
    cutoff = math.inf if _is_session_subject(subject) else at
    return [Mutation(subject, CUTOFF, cutoff, at)]


def _cutoff(subject: Subject, event: Event, at: float) -> list[Mutation]:
    return [Mutation(subject, CUTOFF, at, at)]


def _disabled(subject: Subject, event: Event, at: float) -> list[Mutation]:
    return [Mutation(subject, DISABLED, True, at)]


def _enabled(subject: Subject, event: Event, at: float) -> list[Mutation]:
    return [Mutation(subject, DISABLED, False, at)]


def _compliance(subject: Subject, event: Event, at: float) -> list[Mutation]:
    assert isinstance(event, DeviceComplianceChange)
    return [Mutation(subject, NONCOMPLIANT, event.current_status == "not-compliant", at)]


def _claims(subject: Subject, event: Event, at: float) -> list[Mutation]:
    assert isinstance(event, TokenClaimsChange)
    return [Mutation(subject, CLAIMS, dict(event.claims), at)]


def _assurance(subject: Subject, event: Event, at: float) -> list[Mutation]:
    assert isinstance(event, AssuranceLevelChange)
    value = {"namespace": event.namespace, "level": event.current_level}
    if event.change_direction:
        value["direction"] = event.change_direction
    return [Mutation(subject, ASSURANCE, value, at)]


def _risk(subject: Subject, event: Event, at: float) -> list[Mutation]:
    assert isinstance(event, RiskLevelChange)
    return [Mutation(subject, RISK, {"level": event.current_level, "principal": event.principal}, at)]


_Handler = Callable[[Subject, Event, float], list[Mutation]]
_HANDLERS: Final[dict[str, _Handler]] = {
    SessionRevoked.event_type: _session_revoked,
    risc.AccountDisabled.event_type: _disabled,
    risc.AccountEnabled.event_type: _enabled,
    DeviceComplianceChange.event_type: _compliance,
    TokenClaimsChange.event_type: _claims,
    AssuranceLevelChange.event_type: _assurance,
    RiskLevelChange.event_type: _risk,
    **dict.fromkeys(CUTOFF_EVENTS, _cutoff),
}
#: Event types that change access state; every other valid SET is accepted and recorded only.
ACTED_ON: Final = frozenset(_HANDLERS)


def mutations_for(set_: SecurityEventToken) -> list[Mutation]:
    """The state changes one validated SET asks for (``[]`` for events we only record)."""
    handler = _HANDLERS.get(set_.event_type)
    if handler is None:
        return []
    return handler(set_.sub_id, set_.event, event_time(set_))
