"""Poll delivery wire models (RFC 8936 §2)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

__all__ = ["PollRequest", "PollResponse", "SetError"]


class SetError(BaseModel):
    """One ``setErrs`` value: the RFC 8935 error object for a refused SET."""

    model_config = ConfigDict(extra="allow")
    err: StrictStr
    description: StrictStr = ""


class PollRequest(BaseModel):
    """All members optional; ``maxEvents: 0`` is an acknowledge-only request."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    max_events: StrictInt | None = Field(default=None, alias="maxEvents", ge=0)
    return_immediately: StrictBool = Field(default=False, alias="returnImmediately")
    ack: list[StrictStr] = Field(default_factory=list)
    set_errs: dict[StrictStr, SetError] = Field(default_factory=dict, alias="setErrs")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"returnImmediately": self.return_immediately}
        if self.max_events is not None:
            out["maxEvents"] = self.max_events
        if self.ack:
            out["ack"] = list(self.ack)
        if self.set_errs:
            out["setErrs"] = {k: v.model_dump(exclude_none=True) for k, v in self.set_errs.items()}
        return out


class PollResponse(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    sets: dict[StrictStr, StrictStr]
    more_available: StrictBool = Field(default=False, alias="moreAvailable")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sets": dict(self.sets)}
        if self.more_available:
            out["moreAvailable"] = True
        return out
