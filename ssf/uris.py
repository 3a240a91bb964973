"""Registered URIs: delivery methods, media types and event-type bases."""

from __future__ import annotations

from typing import Final

PUSH: Final = "urn:ietf:rfc:8935"
POLL: Final = "urn:ietf:rfc:8936"
#: Delivery-method URIs of pre-1.0 RISC/SSE transmitters, accepted on input only.
LEGACY_DELIVERY_METHODS: Final[dict[str, str]] = {
    "https://schemas.openid.net/secevent/risc/delivery-method/push": PUSH,
    "https://schemas.openid.net/secevent/risc/delivery-method/poll": POLL,
    "https://schemas.openid.net/secevent/sse/delivery-method/push": PUSH,
    "https://schemas.openid.net/secevent/sse/delivery-method/poll": POLL,
    "urn:ietf:rfc:8935:push": PUSH,
    "urn:ietf:rfc:8936:poll": POLL,
}

SET_MEDIA_TYPE: Final = "application/secevent+jwt"
SET_TYP: Final = "secevent+jwt"
OAUTH_SCHEME: Final = "urn:ietf:rfc:6749"
SPEC_VERSION: Final = "1_0"

SSF_BASE: Final = "https://schemas.openid.net/secevent/ssf/event-type/"
CAEP_BASE: Final = "https://schemas.openid.net/secevent/caep/event-type/"
RISC_BASE: Final = "https://schemas.openid.net/secevent/risc/event-type/"

VERIFICATION: Final = SSF_BASE + "verification"
STREAM_UPDATED: Final = SSF_BASE + "stream-updated"


def normalize_delivery_method(method: str) -> str:
    """Map a legacy delivery-method URI to its RFC URN; other values pass unchanged."""
    return LEGACY_DELIVERY_METHODS.get(method, method)
