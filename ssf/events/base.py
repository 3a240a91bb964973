"""What every event type shares: a typed, strictly validated payload with its URI."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

__all__ = [
    "Event",
    "GenericEvent",
    "InitiatingEntity",
    "LanguageMap",
    "NumericDate",
]

NumericDate = StrictInt | StrictFloat
#: BCP 47 language tag → text; CAEP §2 requires at least one pair.
LanguageMap = Annotated[dict[StrictStr, StrictStr], Field(min_length=1)]
InitiatingEntity = Literal["admin", "user", "policy", "system"]


class Event(BaseModel):
    """Base of every typed event. Unknown members are kept (SSF §4.2.3: ignore, never lose)."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True, populate_by_name=True)

    event_type: ClassVar[str] = ""
    #: Subject formats this event allows (None = any); RISC §2.5/2.6 restrict some.
    subject_formats: ClassVar[frozenset[str] | None] = None

    def payload(self) -> dict[str, Any]:
        """The event object as it goes on the wire."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class GenericEvent(Event):
    """An event type this codebase has no model for; its members survive untouched."""

    def payload(self) -> dict[str, Any]:
        return dict(self.model_extra or {})
