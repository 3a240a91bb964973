"""Stream management wire models (SSF §8.1.1-8.1.4)."""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from ssf import uris
from ssf.models import SubjectField

__all__ = [
    "RECEIVER_SUPPLIED",
    "TRANSMITTER_SUPPLIED",
    "AddSubjectRequest",
    "Delivery",
    "RemoveSubjectRequest",
    "StreamConfiguration",
    "StreamRequest",
    "StreamStatus",
    "StreamStatusValue",
    "VerificationRequest",
]

StreamStatusValue = Literal["enabled", "paused", "disabled"]
#: SSF §8.1.1: who supplies which stream-configuration property.
RECEIVER_SUPPLIED: Final = frozenset({"events_requested", "delivery", "description"})
TRANSMITTER_SUPPLIED: Final = frozenset(
    {
        "stream_id",
        "iss",
        "aud",
        "events_supported",
        "events_delivered",
        "min_verification_interval",
        "inactivity_timeout",
    }
)


#: Pre-1.0 RISC delivery-object member names (Google's RISC API still uses them), input only.
_LEGACY_DELIVERY_MEMBERS: Final = (("delivery_method", "method"), ("url", "endpoint_url"))


class Delivery(BaseModel):
    """``method`` plus its parameters. Legacy RISC method URIs, and the legacy member names
    ``delivery_method``/``url``, are normalised to SSF 1.0 on input."""

    model_config = ConfigDict(extra="allow")

    method: StrictStr
    endpoint_url: StrictStr | None = None
    authorization_header: StrictStr | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_members(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(old in data for old, _ in _LEGACY_DELIVERY_MEMBERS):
            data = dict(data)
            for old, new in _LEGACY_DELIVERY_MEMBERS:
                if old in data:
                    data.setdefault(new, data.pop(old))  # the 1.0 name wins if both came
        return data

    @field_validator("method")
    @classmethod
    def _normalise(cls, value: str) -> str:
        return uris.normalize_delivery_method(value)


class StreamConfiguration(BaseModel):
    """The full stream configuration object a transmitter returns."""

    model_config = ConfigDict(extra="allow")

    stream_id: StrictStr
    iss: StrictStr
    aud: StrictStr | list[StrictStr]
    events_supported: list[StrictStr] | None = None
    events_requested: list[StrictStr] | None = None
    events_delivered: list[StrictStr]
    delivery: Delivery
    min_verification_interval: StrictInt | None = None
    description: StrictStr | None = None
    inactivity_timeout: StrictInt | None = None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class StreamRequest(BaseModel):
    """A create / PATCH / PUT body. Transmitter-supplied members may appear and are
    checked by the transmitter against current values (SSF §8.1.1.3)."""

    model_config = ConfigDict(extra="allow")

    stream_id: StrictStr | None = None
    events_requested: list[StrictStr] | None = None
    delivery: Delivery | None = None
    description: StrictStr | None = None
    iss: StrictStr | None = None
    aud: StrictStr | list[StrictStr] | None = None
    events_supported: list[StrictStr] | None = None
    events_delivered: list[StrictStr] | None = None
    min_verification_interval: StrictInt | None = None
    inactivity_timeout: StrictInt | None = None

    def receiver_supplied(self) -> dict[str, Any]:
        """Receiver-supplied members present in the body (explicit nulls included)."""
        return {k: getattr(self, k) for k in RECEIVER_SUPPLIED if k in self.model_fields_set}

    def transmitter_supplied(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in TRANSMITTER_SUPPLIED if k in self.model_fields_set}


class StreamStatus(BaseModel):
    """SSF §8.1.2: read response and update request."""

    model_config = ConfigDict(extra="allow")

    stream_id: StrictStr
    status: StreamStatusValue
    reason: StrictStr | None = None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class AddSubjectRequest(BaseModel):
    """SSF §8.1.3.2; an absent ``verified`` means the transmitter assumes verified."""

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)

    stream_id: StrictStr
    subject: SubjectField
    verified: StrictBool | None = None


class RemoveSubjectRequest(BaseModel):
    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)

    stream_id: StrictStr
    subject: SubjectField


class VerificationRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    stream_id: StrictStr
    state: StrictStr | None = Field(default=None, max_length=1024)
