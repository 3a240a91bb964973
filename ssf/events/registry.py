"""The one map from event-type URI to its model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from pydantic import ValidationError

from ssf.errors import InvalidEvent
from ssf.events import caep, risc, ssf_events
from ssf.events.base import Event, GenericEvent

_MODELS: tuple[type[Event], ...] = (
    ssf_events.Verification,
    ssf_events.StreamUpdated,
    caep.SessionRevoked,
    caep.TokenClaimsChange,
    caep.CredentialChange,
    caep.AssuranceLevelChange,
    caep.DeviceComplianceChange,
    caep.SessionEstablished,
    caep.SessionPresented,
    caep.RiskLevelChange,
    risc.AccountCredentialChangeRequired,
    risc.AccountPurged,
    risc.AccountDisabled,
    risc.AccountEnabled,
    risc.IdentifierChanged,
    risc.IdentifierRecycled,
    risc.CredentialCompromise,
    risc.OptIn,
    risc.OptOutInitiated,
    risc.OptOutCancelled,
    risc.OptOutEffective,
    risc.RecoveryActivated,
    risc.RecoveryInformationChanged,
    risc.SessionsRevoked,
)

EVENT_MODELS: Final[Mapping[str, type[Event]]] = {m.event_type: m for m in _MODELS}
SSF_EVENTS: Final = frozenset({ssf_events.Verification.event_type, ssf_events.StreamUpdated.event_type})
CAEP_EVENTS: Final = frozenset(u for u in EVENT_MODELS if "/caep/" in u)
RISC_EVENTS: Final = frozenset(u for u in EVENT_MODELS if "/risc/" in u)
#: What a transmitter offers by default: every CAEP and RISC type except the deprecated one.
STANDARD_EVENTS: Final = frozenset(EVENT_MODELS) - {risc.SessionsRevoked.event_type}


def model_for(event_type: str) -> type[Event] | None:
    return EVENT_MODELS.get(event_type)


def parse_event(event_type: str, payload: object) -> Event:
    """Validate an event object against its type's model; unknown types stay generic."""
    if type(payload) is not dict and not isinstance(payload, Mapping):  # (the ABC check is slow)
        raise InvalidEvent(f"event '{event_type}' must be a JSON object")
    model = EVENT_MODELS.get(event_type, GenericEvent)
    try:
        return model.__pydantic_validator__.validate_python(payload)  # type: ignore[no-any-return]
    except ValidationError as exc:
        raise InvalidEvent(f"event '{event_type}': {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "(event)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def is_standard(event_type: str) -> bool:
    return event_type in EVENT_MODELS


def example_payload(event_type: str) -> dict[str, Any]:
    """A minimal valid payload for a type, for tests, demos and the conformance kit."""
    return dict(_EXAMPLES.get(event_type, {}))


_EXAMPLES: Final[dict[str, dict[str, Any]]] = {
    ssf_events.StreamUpdated.event_type: {"status": "enabled"},
    caep.TokenClaimsChange.event_type: {"claims": {"role": "ro-admin"}},
    caep.CredentialChange.event_type: {"credential_type": "password", "change_type": "update"},
    caep.AssuranceLevelChange.event_type: {"namespace": "NIST-AAL", "current_level": "nist-aal1"},
    caep.DeviceComplianceChange.event_type: {
        "previous_status": "compliant",
        "current_status": "not-compliant",
    },
    caep.RiskLevelChange.event_type: {"principal": "USER", "current_level": "HIGH"},
    risc.CredentialCompromise.event_type: {"credential_type": "password"},
}
