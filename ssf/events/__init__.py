"""Event types of SSF, CAEP 1.0 and RISC 1.0, and the registry that maps URIs to them."""

from ssf.events.base import Event, GenericEvent
from ssf.events.caep import (
    AssuranceLevelChange,
    CredentialChange,
    DeviceComplianceChange,
    RiskLevelChange,
    SessionEstablished,
    SessionPresented,
    SessionRevoked,
    TokenClaimsChange,
)
from ssf.events.registry import (
    CAEP_EVENTS,
    EVENT_MODELS,
    RISC_EVENTS,
    SSF_EVENTS,
    STANDARD_EVENTS,
    example_payload,
    is_standard,
    model_for,
    parse_event,
)
from ssf.events.ssf_events import StreamUpdated, Verification

__all__ = [
    "CAEP_EVENTS",
    "EVENT_MODELS",
    "RISC_EVENTS",
    "SSF_EVENTS",
    "STANDARD_EVENTS",
    "AssuranceLevelChange",
    "CredentialChange",
    "DeviceComplianceChange",
    "Event",
    "GenericEvent",
    "RiskLevelChange",
    "SessionEstablished",
    "SessionPresented",
    "SessionRevoked",
    "StreamUpdated",
    "TokenClaimsChange",
    "Verification",
    "example_payload",
    "is_standard",
    "model_for",
    "parse_event",
]
