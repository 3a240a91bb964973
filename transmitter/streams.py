"""Stream configuration rules (SSF §8.1.1): create, read, PATCH, PUT, delete.

Receiver-supplied: ``events_requested``, ``delivery``, ``description``. Transmitter-supplied:
``stream_id``, ``iss``, ``aud``, ``events_supported``, ``events_delivered``,
``min_verification_interval``, ``inactivity_timeout`` — on PATCH/PUT these may be sent but
must equal the current values (``events_delivered``: the value before the update), else 400.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from ssf import uris
from ssf.errors import ModelError
from ssf.events import STANDARD_EVENTS
from ssf.stream import RECEIVER_SUPPLIED, TRANSMITTER_SUPPLIED, Delivery, StreamRequest

__all__ = ["EVENTS_SUPPORTED", "Stream", "mask_header", "new_stream_id", "storable"]

#: Offered on every stream: the standard SSF, CAEP and RISC types (the deprecated
#: RISC sessions-revoked excluded).
EVENTS_SUPPORTED: tuple[str, ...] = tuple(sorted(STANDARD_EVENTS))
_KNOWN_MEMBERS = RECEIVER_SUPPLIED | TRANSMITTER_SUPPLIED


def new_stream_id() -> str:
    return "s_" + secrets.token_urlsafe(16)


def storable(text: str) -> bool:
    """False for text no stored id can equal: PostgreSQL text holds no NUL (the driver raises
    on it), so such a stream or client id is answered as unknown before any query."""
    return "\x00" not in text


def mask_header(value: str) -> str:
    """What a response shows of a push ``authorization_header``: never the secret itself."""
    scheme, sep, rest = value.partition(" ")
    if not sep:
        scheme, rest = "", value
    tail = rest[-4:] if len(rest) >= 16 else ""
    return f"{scheme} ****{tail}".strip() if scheme else f"****{tail}"


@dataclass(slots=True)
class Stream:
    stream_id: str
    owner: str
    aud: str | list[str]
    events_requested: list[str] | None
    events_delivered: list[str]
    method: str
    endpoint_url: str | None
    auth_header: str | None
    description: str | None
    status: str = "enabled"
    reason: str | None = None
    default_subjects: str = "ALL"
    min_verification_interval: int = 0
    inactivity_timeout: int | None = None
    last_activity: float = 0
    last_verification: float = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def config(self, issuer: str) -> dict[str, Any]:
        """The stream configuration object of SSF §8.1.1 (header masked)."""
        delivery: dict[str, Any] = {"method": self.method}
        if self.endpoint_url is not None:
            delivery["endpoint_url"] = self.endpoint_url
        if self.auth_header is not None:
            delivery["authorization_header"] = mask_header(self.auth_header)
        delivery.update(self.extra.get("delivery", {}))
        out: dict[str, Any] = {
            "stream_id": self.stream_id,
            "iss": issuer,
            "aud": self.aud,
            "events_supported": list(EVENTS_SUPPORTED),
        }
        if self.events_requested is not None:
            out["events_requested"] = self.events_requested
        out["events_delivered"] = self.events_delivered
        out["delivery"] = delivery
        out["min_verification_interval"] = self.min_verification_interval
        if self.inactivity_timeout is not None:
            out["inactivity_timeout"] = self.inactivity_timeout
        if self.description is not None:
            out["description"] = self.description
        return out

    def wants(self, event_type: str) -> bool:
        return event_type in self.events_delivered

    def to_row(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "owner": self.owner,
            "aud": json.dumps(self.aud),
            "events_requested": None if self.events_requested is None else json.dumps(self.events_requested),
            "events_delivered": json.dumps(self.events_delivered),
            "method": self.method,
            "endpoint_url": self.endpoint_url,
            "description": self.description,
            "status": self.status,
            "reason": self.reason,
            "default_subjects": self.default_subjects,
            "min_verification_interval": self.min_verification_interval,
            "inactivity_timeout": self.inactivity_timeout,
            "last_activity": self.last_activity,
            "last_verification": self.last_verification,
            "extra": json.dumps(self.extra) if self.extra else None,
        }

    @classmethod
    def from_row(cls, row: Any, auth_header: str | None) -> Stream:
        return cls(
            stream_id=row.stream_id,
            owner=row.owner,
            aud=json.loads(row.aud),
            events_requested=None if row.events_requested is None else json.loads(row.events_requested),
            events_delivered=json.loads(row.events_delivered),
            method=row.method,
            endpoint_url=row.endpoint_url,
            auth_header=auth_header,
            description=row.description,
            status=row.status,
            reason=row.reason,
            default_subjects=row.default_subjects,
            min_verification_interval=row.min_verification_interval,
            inactivity_timeout=row.inactivity_timeout,
            last_activity=row.last_activity,
            last_verification=row.last_verification,
            extra=json.loads(row.extra) if row.extra else {},
        )


def check_unknown_members(req: StreamRequest) -> None:
    unknown = set(req.model_fields_set | set(req.model_extra or {})) - _KNOWN_MEMBERS
    if unknown:
        raise ModelError(f"unknown stream configuration member(s): {', '.join(sorted(unknown))}")


def delivered_for(requested: list[str] | None) -> list[str]:
    """``events_delivered`` = requested ∩ supported; unknown requested types are ignored."""
    if not requested:
        return []
    supported = set(EVENTS_SUPPORTED)
    seen: list[str] = []
    for uri in requested:
        if uri in supported and uri not in seen:
            seen.append(uri)
    return seen


def check_transmitter_supplied(req: StreamRequest, current: Stream, issuer: str) -> None:
    """SSF §8.1.1.3: transmitter-supplied members may be sent on update but must match."""
    cfg = current.config(issuer)
    for name, value in req.transmitter_supplied().items():
        if name == "stream_id":
            continue
        have = cfg.get(name)
        if name == "aud":
            want = [value] if isinstance(value, str) else list(value or [])
            got = [have] if isinstance(have, str) else list(have or [])
            same = sorted(want) == sorted(got)
        elif name in ("events_supported", "events_delivered"):
            same = sorted(value or []) == sorted(have or [])
        else:
            same = value == have
        if not same:
            raise ModelError(f"'{name}' is transmitter-supplied and does not match the current value")


def resolve_delivery(
    delivery: Delivery | None, stream_id: str, poll_url: str, current: Stream | None
) -> tuple[str, str | None, str | None, dict[str, Any]]:
    """(method, endpoint_url, authorization_header, extra members) for a requested delivery.

    No delivery means poll (SSF §8.1.1.1); poll endpoints are always the transmitter's own. A
    header equal to the masked form of the current one keeps the current secret (a GET-then-PUT
    round trip must not overwrite it with the mask).
    """
    if delivery is None:
        return uris.POLL, poll_url, None, {}
    extra = dict(delivery.model_extra or {})
    if delivery.method == uris.POLL:
        if delivery.authorization_header is not None:
            raise ModelError("delivery.authorization_header applies to push delivery only")
        return uris.POLL, poll_url, None, extra
    if delivery.method != uris.PUSH:
        raise ModelError(f"unsupported delivery method {delivery.method!r}")
    if not delivery.endpoint_url:
        raise ModelError("push delivery needs delivery.endpoint_url")
    header = delivery.authorization_header
    if (
        header is not None
        and current is not None
        and current.auth_header is not None
        and header == mask_header(current.auth_header)
    ):
        header = current.auth_header
    if header is not None and (
        not header.strip() or any(c in header for c in "\r\n\0") or not _latin1(header)
    ):
        raise ModelError("delivery.authorization_header is not a valid header value")
    return uris.PUSH, delivery.endpoint_url, header, extra


def _latin1(text: str) -> bool:
    """HTTP carries header values as ISO-8859-1 octets: other text cannot be sent at all."""
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True
