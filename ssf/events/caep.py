"""CAEP 1.0 event types (CAEP §3.1–3.8), with the common members of CAEP §2."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import Field, StrictStr

from ssf.events.base import Event, InitiatingEntity, LanguageMap, NumericDate
from ssf.uris import CAEP_BASE

__all__ = [
    "CREDENTIAL_TYPES",
    "AssuranceLevelChange",
    "CAEPEvent",
    "CredentialChange",
    "DeviceComplianceChange",
    "RiskLevelChange",
    "SessionEstablished",
    "SessionPresented",
    "SessionRevoked",
    "TokenClaimsChange",
]

#: CAEP §3.3 standard credential types; bilaterally agreed others are allowed.
CREDENTIAL_TYPES: Final = frozenset(
    {
        "password",
        "pin",
        "x509",
        "fido2-platform",
        "fido2-roaming",
        "fido-u2f",
        "verifiable-credential",
        "phone-voice",
        "phone-sms",
        "app",
    }
)
NonEmptyStr = Annotated[StrictStr, Field(min_length=1)]
ComplianceStatus = Literal["compliant", "not-compliant"]
RiskLevel = Literal["LOW", "MEDIUM", "HIGH"]


class CAEPEvent(Event):
    """CAEP §2: optional members common to every CAEP event."""

    event_timestamp: NumericDate | None = None
    initiating_entity: InitiatingEntity | None = None
    reason_admin: LanguageMap | None = None
    reason_user: LanguageMap | None = None


class SessionRevoked(CAEPEvent):
    event_type: ClassVar[str] = CAEP_BASE + "session-revoked"


class TokenClaimsChange(CAEPEvent):
    event_type: ClassVar[str] = CAEP_BASE + "token-claims-change"
    claims: Annotated[dict[str, Any], Field(min_length=1)]


class CredentialChange(CAEPEvent):
    event_type: ClassVar[str] = CAEP_BASE + "credential-change"
    credential_type: NonEmptyStr
    change_type: Literal["create", "revoke", "update", "delete"]
    friendly_name: StrictStr | None = None
    x509_issuer: StrictStr | None = None
    x509_serial: StrictStr | None = None
    fido2_aaguid: StrictStr | None = None


class AssuranceLevelChange(CAEPEvent):
    event_type: ClassVar[str] = CAEP_BASE + "assurance-level-change"
    namespace: NonEmptyStr
    current_level: NonEmptyStr
    previous_level: StrictStr | None = None
    change_direction: Literal["increase", "decrease"] | None = None


class DeviceComplianceChange(CAEPEvent):
    event_type: ClassVar[str] = CAEP_BASE + "device-compliance-change"
    previous_status: ComplianceStatus
    current_status: ComplianceStatus


class SessionEstablished(CAEPEvent):
    event_type: ClassVar[str] = CAEP_BASE + "session-established"
    fp_ua: StrictStr | None = None
    acr: StrictStr | None = None
    amr: list[StrictStr] | None = None
    ext_id: StrictStr | None = None


class SessionPresented(CAEPEvent):
    event_type: ClassVar[str] = CAEP_BASE + "session-presented"
    fp_ua: StrictStr | None = None
    ext_id: StrictStr | None = None


class RiskLevelChange(CAEPEvent):
    event_type: ClassVar[str] = CAEP_BASE + "risk-level-change"
    principal: NonEmptyStr
    current_level: RiskLevel
    previous_level: RiskLevel | None = None
    risk_reason: StrictStr | None = None
