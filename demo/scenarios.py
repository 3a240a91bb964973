"""The three changes the demo makes at the identity provider, and what each API must answer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from demo.api import INVALID_TOKEN, STEP_UP
from demo.stack import REQUIRED_ACR
from ssf.events import AssuranceLevelChange, DeviceComplianceChange, SessionRevoked

__all__ = ["SCENARIOS", "USER", "Scenario", "event_name"]

USER: Final = "ada"


@dataclass(frozen=True, slots=True)
class Scenario:
    title: str
    #: Short labels for the results table: the change, and its undoing.
    label: str
    explanation: str
    event_type: str
    device_id: str
    acr: str
    #: What the identity provider does, as told on the timeline.
    action: str
    expected: str
    #: The identity provider's admin route and body that make the change.
    route: Callable[[str], tuple[str, dict[str, Any]]]
    #: How the change is undone, and the expected answer afterwards (None: not undone).
    undo: tuple[str, Callable[[str], tuple[str, dict[str, Any]]]] | None = None


def event_name(uri: str) -> str:
    """The event type's last path segment, e.g. ``session-revoked``."""
    return uri.rsplit("/", 1)[-1]


SCENARIOS: Final = (
    Scenario(
        "1. The user's session is ended",
        "session ended",
        "Ada signs in on her laptop. Later an administrator ends that session at the identity "
        "provider. Her access token still has almost an hour to live.",
        SessionRevoked.event_type,
        "laptop-1",
        "nist-aal2",
        "an administrator ends Ada's session {sid}",
        INVALID_TOKEN,
        lambda sid: (f"/admin/sessions/{sid}/end", {}),
    ),
    Scenario(
        "2. The device falls out of compliance",
        "device not compliant|device compliant again",
        "Ada signs in on a second laptop. Device management then reports that its disk "
        "encryption was turned off: the device is no longer compliant.",
        DeviceComplianceChange.event_type,
        "laptop-2",
        "nist-aal2",
        "device management reports laptop-2 not-compliant",
        INVALID_TOKEN,
        lambda _: ("/admin/devices/laptop-2/compliance", {"username": USER, "status": "not-compliant"}),
        (
            "device management reports laptop-2 compliant again",
            lambda _: ("/admin/devices/laptop-2/compliance", {"username": USER, "status": "compliant"}),
        ),
    ),
    Scenario(
        "3. The user's assurance level drops",
        "assurance lowered|assurance restored",
        f"The API requires assurance level {REQUIRED_ACR} (e.g. password and security key). Ada "
        "signs in at that level; then her security key is removed from her account, so the "
        "identity provider lowers her level to nist-aal1. The API now asks her to step up (RFC 9470).",
        AssuranceLevelChange.event_type,
        "laptop-3",
        "nist-aal2",
        "Ada's security key is removed: assurance nist-aal2 → nist-aal1",
        STEP_UP,
        lambda _: (f"/admin/users/{USER}/assurance", {"level": "nist-aal1"}),
        (
            "Ada steps up with a new security key: assurance back to nist-aal2",
            lambda _: (f"/admin/users/{USER}/assurance", {"level": "nist-aal2"}),
        ),
    ),
)
