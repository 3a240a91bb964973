"""RISC 1.0 event types (RISC §2.1–2.11)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Final, Literal

from pydantic import Field, StrictStr

from ssf.events.base import Event, LanguageMap, NumericDate
from ssf.uris import RISC_BASE

_IDENTIFIER_FORMATS: Final = frozenset({"email", "phone_number"})


class AccountCredentialChangeRequired(Event):
    event_type: ClassVar[str] = RISC_BASE + "account-credential-change-required"


class AccountPurged(Event):
    event_type: ClassVar[str] = RISC_BASE + "account-purged"


class AccountDisabled(Event):
    event_type: ClassVar[str] = RISC_BASE + "account-disabled"
    reason: Literal["hijacking", "bulk-account"] | None = None


class AccountEnabled(Event):
    event_type: ClassVar[str] = RISC_BASE + "account-enabled"


class IdentifierChanged(Event):
    """The subject carries the OLD identifier (RISC §2.5)."""

    event_type: ClassVar[str] = RISC_BASE + "identifier-changed"
    subject_formats: ClassVar[frozenset[str] | None] = _IDENTIFIER_FORMATS
    new_value: StrictStr | None = Field(default=None, alias="new-value")


class IdentifierRecycled(Event):
    event_type: ClassVar[str] = RISC_BASE + "identifier-recycled"
    subject_formats: ClassVar[frozenset[str] | None] = _IDENTIFIER_FORMATS


class CredentialCompromise(Event):
    """RISC leaves the reason members' type open: a string or a CAEP language map."""

    event_type: ClassVar[str] = RISC_BASE + "credential-compromise"
    credential_type: Annotated[StrictStr, Field(min_length=1)]
    event_timestamp: NumericDate | None = None
    reason_admin: StrictStr | LanguageMap | None = None
    reason_user: StrictStr | LanguageMap | None = None


class OptIn(Event):
    event_type: ClassVar[str] = RISC_BASE + "opt-in"


class OptOutInitiated(Event):
    event_type: ClassVar[str] = RISC_BASE + "opt-out-initiated"


class OptOutCancelled(Event):
    event_type: ClassVar[str] = RISC_BASE + "opt-out-cancelled"


class OptOutEffective(Event):
    event_type: ClassVar[str] = RISC_BASE + "opt-out-effective"


class RecoveryActivated(Event):
    event_type: ClassVar[str] = RISC_BASE + "recovery-activated"


class RecoveryInformationChanged(Event):
    event_type: ClassVar[str] = RISC_BASE + "recovery-information-changed"


class SessionsRevoked(Event):
    """Deprecated by RISC 1.0 in favour of CAEP session-revoked; accepted on input."""

    event_type: ClassVar[str] = RISC_BASE + "sessions-revoked"
