"""SSF §8.1.4 verification and §8.1.5 stream-updated events."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import StrictStr

from ssf import uris
from ssf.events.base import Event

StreamStatusValue = Literal["enabled", "paused", "disabled"]


class Verification(Event):
    """The `state` echoes the receiver's request; transmitter-initiated ones carry none."""

    event_type: ClassVar[str] = uris.VERIFICATION
    state: StrictStr | None = None


class StreamUpdated(Event):
    event_type: ClassVar[str] = uris.STREAM_UPDATED
    status: StreamStatusValue
    reason: StrictStr | None = None
