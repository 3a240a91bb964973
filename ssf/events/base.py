"""What every event type shares: a typed, strictly validated payload with its URI."""

from __future__ import annotations

import json
import weakref
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
    """Base of every typed event. Unknown members are kept (SSF §4.2.3: ignore, never lose).

    Events are immutable values: the model is frozen, and the members they carry (including
    unknown ones) must not be mutated after construction — the encoded payload is cached.
    """

    model_config = ConfigDict(
        extra="allow", strict=True, frozen=True, populate_by_name=True, allow_inf_nan=False
    )

    event_type: ClassVar[str] = ""
    #: Subject formats this event allows (None = any); RISC §2.5/2.6 restrict some.
    subject_formats: ClassVar[frozenset[str] | None] = None

    def payload(self) -> dict[str, Any]:
        """The event object as it goes on the wire (declared members that are None are left
        out; unknown members are kept as they came, nulls included)."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        extra = self.model_extra
        if extra:
            for name, value in extra.items():
                if value is None:
                    data[name] = None
        return data

    def payload_json(self) -> str:
        """:meth:`payload` as compact ASCII JSON, encoded once per event (an event fans out
        to one SET per receiver). The cache lives beside the model, not in it, so it costs
        nothing on validation and never takes part in equality."""
        key = id(self)
        text = _PAYLOAD_JSON.get(key)
        if text is None:
            text = json.dumps(self.payload(), separators=(",", ":"), allow_nan=False)
            _PAYLOAD_JSON[key] = text
            weakref.finalize(self, _PAYLOAD_JSON.pop, key, None)
        return text


#: id(event) → its encoded payload; an entry leaves with its event (weakref finalizer), so
#: an id is never reused while its entry lives.
_PAYLOAD_JSON: dict[int, str] = {}


class GenericEvent(Event):
    """An event type this codebase has no model for; its members survive untouched."""

    def payload(self) -> dict[str, Any]:
        return dict(self.model_extra or {})
