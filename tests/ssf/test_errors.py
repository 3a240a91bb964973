"""The one error hierarchy: every class has its RFC 8935 / SSF code, and a real trigger."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ssf import errors
from ssf.errors import (
    SET_ERROR_CODES,
    AccessDenied,
    AuthenticationFailed,
    DuplicateJTI,
    InvalidAudience,
    InvalidEvent,
    InvalidIssuer,
    InvalidKey,
    InvalidRequest,
    InvalidState,
    InvalidSubject,
    KeyMaterialError,
    ModelError,
    SETError,
    SETTooLarge,
    SSFError,
)
from ssf.events import parse_event
from ssf.keys import load_signing_key
from ssf.models import parse_model
from ssf.set import UnknownKeyID
from ssf.stream import StreamStatus
from ssf.subjects import parse_subject

from .helpers import claims, header, jws_compact, signing_key, verifier

EC = signing_key("ES256")


@pytest.mark.parametrize(
    ("cls", "code", "status"),
    [
        (InvalidRequest, "invalid_request", 400),
        (InvalidSubject, "invalid_request", 400),
        (InvalidEvent, "invalid_request", 400),
        (SETTooLarge, "invalid_request", 400),
        (DuplicateJTI, "invalid_request", 400),
        (InvalidKey, "invalid_key", 400),
        (UnknownKeyID, "invalid_key", 400),
        (InvalidIssuer, "invalid_issuer", 400),
        (InvalidAudience, "invalid_audience", 400),
        (AuthenticationFailed, "authentication_failed", 400),
        (AccessDenied, "access_denied", 400),
        (InvalidState, "invalid_state", 400),
        (ModelError, "invalid_request", 400),
        (KeyMaterialError, "invalid_key", 500),
    ],
)
def test_each_class_maps_to_its_wire_code(cls: type[SSFError], code: str, status: int) -> None:
    error = cls("why") if cls is not UnknownKeyID else UnknownKeyID("k")
    assert error.err == code and error.status_code == status
    assert error.to_body() == {"err": code, "description": error.description}
    assert isinstance(error, SSFError)
    if issubclass(cls, SETError):
        assert code in SET_ERROR_CODES


def test_description_defaults_to_the_code() -> None:
    assert InvalidState().description == "invalid_state" and str(InvalidState()) == "invalid_state"
    assert str(AccessDenied("no")) == "no"


def test_registry_codes_are_exactly_the_rfc_8935_and_ssf_ones() -> None:
    assert {
        "invalid_request", "invalid_key", "invalid_issuer", "invalid_audience",
        "authentication_failed", "access_denied", "invalid_state",
    } == SET_ERROR_CODES  # fmt: skip
    set_classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, SETError)]
    assert {c.err for c in set_classes} == SET_ERROR_CODES


TRIGGERS: dict[type[SSFError], Callable[[], object]] = {
    InvalidRequest: lambda: verifier(EC).verify("not.a-set"),
    InvalidSubject: lambda: parse_subject({"format": "phone_number", "phone_number": "12"}),
    InvalidEvent: lambda: parse_event(
        "https://schemas.openid.net/secevent/caep/event-type/device-compliance-change", {}
    ),
    SETTooLarge: lambda: verifier(EC, max_bytes=10).verify(jws_compact(header(EC), claims(), EC)),
    InvalidKey: lambda: verifier(EC, algorithms=["EdDSA"]).verify(jws_compact(header(EC), claims(), EC)),
    UnknownKeyID: lambda: verifier(EC).verify(jws_compact(header(EC, kid="gone"), claims(), EC)),
    InvalidIssuer: lambda: verifier(EC, issuer="https://x").verify(jws_compact(header(EC), claims(), EC)),
    InvalidAudience: lambda: verifier(EC, audience="https://x").verify(jws_compact(header(EC), claims(), EC)),
    AuthenticationFailed: lambda: verifier(EC).verify(
        jws_compact(header(EC), claims(), signing_key("ES256", "other"))
    ),
    ModelError: lambda: parse_model(StreamStatus, {"stream_id": "s"}),
    KeyMaterialError: lambda: load_signing_key("garbage"),
}


@pytest.mark.parametrize("cls", list(TRIGGERS), ids=lambda c: c.__name__)
def test_core_raises_each_class_for_its_cause(cls: type[SSFError]) -> None:
    with pytest.raises(SSFError) as info:
        TRIGGERS[cls]()
    assert type(info.value) is cls


def test_classes_the_core_leaves_to_receivers() -> None:
    """DuplicateJTI, AccessDenied and InvalidState are raised by receivers (jti store, stream
    authorisation, verification state); the core only defines their codes."""
    for cls in (DuplicateJTI, AccessDenied, InvalidState):
        with pytest.raises(SETError) as info:
            raise cls("x")
        assert info.value.to_body()["err"] == cls.err
    assert issubclass(DuplicateJTI, InvalidRequest)
