"""Wire models: metadata, stream configuration, status, subjects, verification, poll, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ssf import uris
from ssf.errors import ModelError
from ssf.metadata import AuthorizationScheme, TransmitterMetadata, issuer_matches, well_known_url
from ssf.models import load_json, parse_json_model, parse_model
from ssf.poll import PollRequest, PollResponse, SetError
from ssf.stream import (
    RECEIVER_SUPPLIED,
    TRANSMITTER_SUPPLIED,
    AddSubjectRequest,
    Delivery,
    RemoveSubjectRequest,
    StreamConfiguration,
    StreamRequest,
    StreamStatus,
    VerificationRequest,
)
from ssf.subjects import Subject

from .helpers import fixture

WIRE = fixture("wire.json")


# --- metadata -----------------------------------------------------------------------------


def test_metadata_spec_example_round_trips() -> None:
    meta = parse_model(TransmitterMetadata, WIRE["metadata"])
    assert meta.to_json() == WIRE["metadata"]
    assert meta.delivery_methods() == {uris.PUSH, uris.POLL}
    assert meta.endpoints()["status_endpoint"] == "https://tr.example.com/ssf/mgmt/status"
    assert set(meta.endpoints()) == {
        "jwks_uri", "configuration_endpoint", "status_endpoint", "add_subject_endpoint",
        "remove_subject_endpoint", "verification_endpoint",
    }  # fmt: skip
    assert [s.spec_urn for s in meta.authorization_schemes or []] == [uris.OAUTH_SCHEME, "urn:ietf:rfc:8705"]


def test_metadata_omits_empty_arrays_and_nulls_and_keeps_extensions() -> None:
    meta = TransmitterMetadata(
        issuer="https://tr.example.com",
        delivery_methods_supported=[],
        critical_subject_members=[],
        authorization_schemes=[AuthorizationScheme(spec_urn=uris.OAUTH_SCHEME)],
        spec_version=uris.SPEC_VERSION,
    )
    assert meta.to_json() == {
        "spec_version": "1_0",
        "issuer": "https://tr.example.com",
        "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6749"}],
    }
    ext = parse_model(TransmitterMetadata, {"issuer": "https://t", "x_vendor": [1], "events_supported": []})
    assert ext.to_json() == {"issuer": "https://t", "x_vendor": [1]}


def test_metadata_legacy_delivery_methods_normalise() -> None:
    meta = TransmitterMetadata(
        issuer="https://t",
        delivery_methods_supported=[
            "https://schemas.openid.net/secevent/risc/delivery-method/push",
            "urn:ietf:rfc:8936:poll",
            "urn:example:custom",
        ],
    )
    assert meta.delivery_methods() == {uris.PUSH, uris.POLL, "urn:example:custom"}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"issuer": 5},
        {"issuer": "https://t", "default_subjects": "SOME"},
        {"issuer": "https://t", "authorization_schemes": [{}]},
        {"issuer": "https://t", "delivery_methods_supported": "urn:ietf:rfc:8935"},
    ],
)
def test_bad_metadata_is_a_model_error(body: dict[str, Any]) -> None:
    with pytest.raises(ModelError):
        parse_model(TransmitterMetadata, body)


@pytest.mark.parametrize(
    ("issuer", "url"),
    [
        ("https://tr.example.com", "https://tr.example.com/.well-known/ssf-configuration"),
        ("https://tr.example.com/", "https://tr.example.com/.well-known/ssf-configuration"),
        ("https://tr.example.com/issuer1", "https://tr.example.com/.well-known/ssf-configuration/issuer1"),
        ("https://tr.example.com:8443/a/b/", "https://tr.example.com:8443/.well-known/ssf-configuration/a/b"),
    ],
)
def test_well_known_url_inserts_the_path(issuer: str, url: str) -> None:
    assert well_known_url(issuer) == url
    assert well_known_url(issuer, "risc-configuration").startswith(url.split("/.well-known")[0])


def test_issuer_must_be_identical() -> None:
    assert issuer_matches("https://t.example", "https://t.example")
    assert not issuer_matches("https://t.example", "https://t.example/")


# --- stream management ------------------------------------------------------------------


def test_stream_configuration_spec_example_round_trips() -> None:
    config = parse_model(StreamConfiguration, WIRE["stream_configuration"])
    assert config.to_json() == WIRE["stream_configuration"]
    assert config.delivery.method == uris.POLL


def test_stream_configuration_requires_transmitter_members() -> None:
    body = dict(WIRE["stream_configuration"])
    for name in ("stream_id", "iss", "aud", "events_delivered", "delivery"):
        broken = {k: v for k, v in body.items() if k != name}
        with pytest.raises(ModelError, match=name):
            parse_model(StreamConfiguration, broken)


def test_create_request_splits_receiver_and_transmitter_supplied() -> None:
    request = parse_model(StreamRequest, WIRE["create_request_push"])
    assert set(request.receiver_supplied()) == {"delivery", "events_requested", "description"}
    assert request.transmitter_supplied() == {}
    assert request.delivery is not None and request.delivery.authorization_header == "Bearer receiver-token"
    patch = parse_model(StreamRequest, {"stream_id": "s", "description": None, "aud": "x"})
    assert patch.receiver_supplied() == {"description": None}  # explicit null is present
    assert patch.transmitter_supplied() == {"stream_id": "s", "aud": "x"}
    assert RECEIVER_SUPPLIED.isdisjoint(TRANSMITTER_SUPPLIED)
    assert {"events_requested", "delivery", "description"} == RECEIVER_SUPPLIED


def test_legacy_delivery_method_is_normalised_on_input() -> None:
    request = parse_model(StreamRequest, WIRE["create_request_poll_legacy_method"])
    assert request.delivery is not None and request.delivery.method == uris.POLL
    assert Delivery(method="urn:ietf:rfc:8935:push").method == uris.PUSH


def test_legacy_risc_delivery_member_names_are_normalised_on_input() -> None:
    """Google's RISC stream API names the members ``delivery_method`` and ``url``."""
    legacy = {
        "delivery_method": "https://schemas.openid.net/secevent/risc/delivery-method/push",
        "url": "https://receiver.example.com/risc",
    }
    request = parse_model(StreamRequest, {"delivery": legacy})
    assert request.delivery is not None
    assert request.delivery.model_dump(exclude_none=True) == {
        "method": uris.PUSH,
        "endpoint_url": "https://receiver.example.com/risc",
    }  # and nothing of the legacy names goes out again
    config = parse_model(StreamConfiguration, {**WIRE["stream_configuration"], "delivery": legacy})
    assert config.to_json()["delivery"] == {
        "method": uris.PUSH,
        "endpoint_url": "https://receiver.example.com/risc",
    }
    both = Delivery.model_validate({"method": uris.POLL, "delivery_method": "x", "url": "u"})
    assert both.method == uris.POLL and both.endpoint_url == "u"  # the 1.0 name wins when both are sent
    assert both.model_extra == {}
    with pytest.raises(ModelError):
        parse_model(StreamRequest, {"delivery": {"url": "https://r"}})  # still needs a method


@pytest.mark.parametrize(
    "body",
    [
        {"delivery": {"endpoint_url": "https://r"}},
        {"delivery": "push"},
        {"events_requested": "all"},
        {"events_requested": [1]},
        {"min_verification_interval": "60"},
        {"description": 3},
    ],
)
def test_bad_stream_request_is_a_model_error(body: dict[str, Any]) -> None:
    with pytest.raises(ModelError):
        parse_model(StreamRequest, body)


def test_stream_status() -> None:
    status = parse_model(StreamStatus, WIRE["status"])
    assert status.to_json() == WIRE["status"]
    assert StreamStatus(stream_id="s", status="enabled").to_json() == {"stream_id": "s", "status": "enabled"}
    for bad in ({"stream_id": "s"}, {"stream_id": "s", "status": "stopped"}, {"status": "enabled"}):
        with pytest.raises(ModelError):
            parse_model(StreamStatus, bad)


def test_add_and_remove_subject() -> None:
    add = parse_model(AddSubjectRequest, WIRE["add_subject"])
    assert add.subject == Subject.email("example.user@example.com") and add.verified is True
    assert add.model_dump()["subject"] == WIRE["add_subject"]["subject"]
    assert parse_model(AddSubjectRequest, {**WIRE["add_subject"], "verified": None}).verified is None
    remove = parse_model(RemoveSubjectRequest, WIRE["remove_subject"])
    assert remove.subject.to_dict() == {"format": "phone_number", "phone_number": "+12065550100"}
    assert isinstance(RemoveSubjectRequest(stream_id="s", subject=Subject.opaque("x")).subject, Subject)


def test_spec_remove_subject_example_has_an_invalid_phone_number() -> None:
    """SSF's own example uses "format": "phone" (accepted as legacy) with a non-E.164 value."""
    with pytest.raises(ModelError, match=r"E\.164"):
        parse_model(RemoveSubjectRequest, WIRE["remove_subject_spec_example"])


@pytest.mark.parametrize(
    "body",
    [
        {"stream_id": "s"},
        {"stream_id": "s", "subject": "user@example.com"},
        {"stream_id": "s", "subject": {"format": "email"}},
        {"subject": {"format": "opaque", "id": "x"}},
        {"stream_id": "s", "subject": {"format": "opaque", "id": "x"}, "verified": "yes"},
    ],
)
def test_bad_subject_requests_are_model_errors(body: dict[str, Any]) -> None:
    with pytest.raises(ModelError):
        parse_model(AddSubjectRequest, body)


def test_verification_request() -> None:
    request = parse_model(VerificationRequest, WIRE["verification_request"])
    assert request.state == WIRE["verification_request"]["state"]
    assert parse_model(VerificationRequest, {"stream_id": "s"}).state is None
    with pytest.raises(ModelError):
        parse_model(VerificationRequest, {"stream_id": "s", "state": "x" * 1025})
    with pytest.raises(ModelError):
        parse_model(VerificationRequest, {"state": "x"})


# --- poll -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(WIRE["poll_requests"]))
def test_poll_request_variants_round_trip(name: str) -> None:
    body = WIRE["poll_requests"][name]
    request = parse_model(PollRequest, body)
    assert request.to_json() == body


def test_poll_request_defaults_and_aliases() -> None:
    request = parse_model(PollRequest, {})
    assert (request.max_events, request.return_immediately, request.ack, request.set_errs) == (
        None,
        False,
        [],
        {},
    )
    assert request.to_json() == {"returnImmediately": False}
    by_name = PollRequest(max_events=0, return_immediately=True, ack=["a"])
    assert by_name.to_json() == {"returnImmediately": True, "maxEvents": 0, "ack": ["a"]}
    errs = parse_model(PollRequest, WIRE["poll_requests"]["poll_with_ack_and_errors"]).set_errs
    assert errs["4d3559ec67504aaba65d40b0363faad8"].err == "authentication_failed"


@pytest.mark.parametrize(
    "body",
    [
        {"maxEvents": -1},
        {"maxEvents": "10"},
        {"returnImmediately": "true"},
        {"ack": "jti"},
        {"ack": [1]},
        {"setErrs": {"j": {"description": "no err"}}},
        {"setErrs": []},
    ],
)
def test_bad_poll_request_is_a_model_error(body: dict[str, Any]) -> None:
    with pytest.raises(ModelError):
        parse_model(PollRequest, body)


def test_poll_response() -> None:
    response = parse_model(PollResponse, WIRE["poll_response"])
    assert response.to_json() == WIRE["poll_response"] and response.more_available
    empty = PollResponse(sets={})
    assert empty.to_json() == {"sets": {}}  # moreAvailable omitted means false
    assert parse_model(PollResponse, {"sets": {}}).more_available is False
    with pytest.raises(ModelError):
        parse_model(PollResponse, {"sets": {"j": 5}})


def test_push_error_body() -> None:
    error = parse_model(SetError, WIRE["push_error"])
    assert error.model_dump() == WIRE["push_error"]
    assert SetError(err="invalid_request").description == ""


# --- model helpers ----------------------------------------------------------------------


def test_parse_helpers_raise_model_error_with_a_readable_description() -> None:
    with pytest.raises(ModelError, match="JSON object"):
        parse_model(StreamStatus, ["not", "an", "object"])
    with pytest.raises(ModelError, match="not valid JSON"):
        parse_json_model(StreamStatus, b"{broken")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_json(b"\xff\xfe")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_json("[" * 100_000)
    with pytest.raises(ModelError, match="status") as info:
        parse_json_model(StreamStatus, json.dumps({"stream_id": "s", "status": "nope"}))
    assert info.value.to_body()["err"] == "invalid_request" and info.value.status_code == 400
    assert parse_json_model(StreamStatus, '{"stream_id":"s","status":"paused"}').status == "paused"


def test_uris() -> None:
    assert uris.PUSH == "urn:ietf:rfc:8935" and uris.POLL == "urn:ietf:rfc:8936"
    assert uris.SET_MEDIA_TYPE == "application/secevent+jwt" and uris.SET_TYP == "secevent+jwt"
    assert uris.VERIFICATION.endswith("/ssf/event-type/verification")
    assert uris.STREAM_UPDATED.endswith("/ssf/event-type/stream-updated")
    assert (
        uris.normalize_delivery_method("https://schemas.openid.net/secevent/sse/delivery-method/push")
        == uris.PUSH
    )
    assert uris.normalize_delivery_method("urn:x") == "urn:x"
