"""Event models: SSF, all CAEP 1.0 and RISC 1.0 types, common members, registry, generic events."""

from __future__ import annotations

from typing import Any

import pytest

from ssf import uris
from ssf.errors import InvalidEvent, InvalidRequest
from ssf.events import (
    CAEP_EVENTS,
    EVENT_MODELS,
    RISC_EVENTS,
    SSF_EVENTS,
    STANDARD_EVENTS,
    AssuranceLevelChange,
    CredentialChange,
    DeviceComplianceChange,
    Event,
    GenericEvent,
    RiskLevelChange,
    SessionEstablished,
    SessionPresented,
    SessionRevoked,
    StreamUpdated,
    TokenClaimsChange,
    Verification,
    example_payload,
    is_standard,
    model_for,
    parse_event,
    risc,
)

from .helpers import fixture

CAEP = uris.CAEP_BASE
RISC = uris.RISC_BASE
SPEC_SETS: dict[str, dict[str, Any]] = {**fixture("caep_sets.json"), **fixture("risc_ssf_sets.json")["sets"]}
SPEC_SETS.pop("_source")


def test_registry_holds_every_spec_event_type() -> None:
    caep = {
        "session-revoked", "token-claims-change", "credential-change", "assurance-level-change",
        "device-compliance-change", "session-established", "session-presented", "risk-level-change",
    }  # fmt: skip
    risc_names = {
        "account-credential-change-required", "account-purged", "account-disabled", "account-enabled",
        "identifier-changed", "identifier-recycled", "credential-compromise", "opt-in", "opt-out-initiated",
        "opt-out-cancelled", "opt-out-effective", "recovery-activated", "recovery-information-changed",
        "sessions-revoked",
    }  # fmt: skip
    assert {CAEP + n for n in caep} == CAEP_EVENTS
    assert {RISC + n for n in risc_names} == RISC_EVENTS
    assert {uris.VERIFICATION, uris.STREAM_UPDATED} == SSF_EVENTS
    assert set(EVENT_MODELS) == CAEP_EVENTS | RISC_EVENTS | SSF_EVENTS
    assert RISC + "sessions-revoked" not in STANDARD_EVENTS  # deprecated: accepted, never offered
    for uri, model in EVENT_MODELS.items():
        assert model.event_type == uri and model_for(uri) is model and is_standard(uri)
    assert model_for("urn:example:unknown") is None and not is_standard("urn:example:unknown")


@pytest.mark.parametrize("uri", sorted(EVENT_MODELS))
def test_example_payload_is_valid_and_round_trips(uri: str) -> None:
    event = parse_event(uri, example_payload(uri))
    assert type(event) is EVENT_MODELS[uri]
    assert parse_event(uri, event.payload()) == event


@pytest.mark.parametrize("name", sorted(SPEC_SETS))
def test_spec_example_event_parses_to_its_model_and_back(name: str) -> None:
    ((uri, payload),) = SPEC_SETS[name]["events"].items()
    event = parse_event(uri, payload)
    assert type(event) is EVENT_MODELS[uri]
    assert event.payload() == payload


@pytest.mark.parametrize(
    ("uri", "payload"),
    [
        (CAEP + "token-claims-change", {}),
        (CAEP + "token-claims-change", {"claims": {}}),
        (CAEP + "credential-change", {"change_type": "create"}),
        (CAEP + "credential-change", {"credential_type": "password"}),
        (CAEP + "credential-change", {"credential_type": "password", "change_type": "rotate"}),
        (CAEP + "credential-change", {"credential_type": "", "change_type": "create"}),
        (CAEP + "credential-change", {"credential_type": 3, "change_type": "create"}),
        (CAEP + "assurance-level-change", {"namespace": "NIST-AAL"}),
        (CAEP + "assurance-level-change", {"current_level": "nist-aal2"}),
        (
            CAEP + "assurance-level-change",
            {"namespace": "NIST-AAL", "current_level": "nist-aal2", "change_direction": "up"},
        ),
        (CAEP + "device-compliance-change", {"current_status": "compliant"}),
        (CAEP + "device-compliance-change", {"previous_status": "compliant", "current_status": "ok"}),
        (CAEP + "risk-level-change", {"principal": "USER"}),
        (CAEP + "risk-level-change", {"principal": "USER", "current_level": "low"}),
        (CAEP + "risk-level-change", {"principal": "USER", "current_level": "LOW", "previous_level": "X"}),
        (CAEP + "risk-level-change", {"current_level": "LOW"}),
        (CAEP + "session-established", {"amr": "otp"}),
        (CAEP + "session-established", {"amr": [1]}),
        (CAEP + "session-presented", {"fp_ua": 5}),
        (CAEP + "session-revoked", {"initiating_entity": "robot"}),
        (CAEP + "session-revoked", {"event_timestamp": "1615304991"}),
        (CAEP + "session-revoked", {"event_timestamp": True}),
        (CAEP + "session-revoked", {"reason_admin": {}}),
        (CAEP + "session-revoked", {"reason_admin": "not a language map"}),
        (CAEP + "session-revoked", {"reason_user": {"en": 3}}),
        (RISC + "account-disabled", {"reason": "spam"}),
        (RISC + "identifier-changed", {"new-value": 5}),
        (RISC + "credential-compromise", {}),
        (RISC + "credential-compromise", {"credential_type": "password", "reason_admin": {}}),
        (uris.VERIFICATION, {"state": 12}),
        (uris.STREAM_UPDATED, {}),
        (uris.STREAM_UPDATED, {"status": "stopped"}),
        (uris.STREAM_UPDATED, {"status": "enabled", "reason": 1}),
    ],
)
def test_bad_payload_raises_invalid_event(uri: str, payload: dict[str, Any]) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(uri, payload)
    assert info.value.err == "invalid_request" and isinstance(info.value, InvalidRequest)
    assert uri in info.value.description


@pytest.mark.parametrize("payload", [None, [], "x", 3])
def test_event_must_be_an_object(payload: object) -> None:
    with pytest.raises(InvalidEvent):
        parse_event(CAEP + "session-revoked", payload)


@pytest.mark.parametrize(
    "value",
    ["password", "pin", "x509", "fido2-platform", "fido2-roaming", "fido-u2f", "verifiable-credential",
     "phone-voice", "phone-sms", "app", "bilaterally-agreed-type"],
)  # fmt: skip
def test_credential_change_accepts_standard_and_agreed_credential_types(value: str) -> None:
    for change in ("create", "revoke", "update", "delete"):
        event = CredentialChange(credential_type=value, change_type=change)  # type: ignore[arg-type]
        assert event.payload() == {"credential_type": value, "change_type": change}


def test_common_caep_members_and_enumerations() -> None:
    for entity in ("admin", "user", "policy", "system"):
        assert SessionRevoked(initiating_entity=entity).initiating_entity == entity  # type: ignore[arg-type]
    event = SessionRevoked(event_timestamp=1.5, reason_user={"en": "a", "de": "b"})
    assert event.payload() == {"event_timestamp": 1.5, "reason_user": {"en": "a", "de": "b"}}
    for status in ("compliant", "not-compliant"):
        DeviceComplianceChange(previous_status=status, current_status=status)  # type: ignore[arg-type]
    for level in ("LOW", "MEDIUM", "HIGH"):
        RiskLevelChange(principal="DEVICE", current_level=level, previous_level=level)  # type: ignore[arg-type]
    assert AssuranceLevelChange(namespace="RFC8176", current_level="x", change_direction="decrease")
    assert TokenClaimsChange(claims={"role": "x"}).claims == {"role": "x"}
    assert SessionEstablished(amr=["pwd", "otp"], acr="AAL2", fp_ua="f", ext_id="e").payload()["amr"] == [
        "pwd",
        "otp",
    ]
    assert SessionPresented(ext_id="e").payload() == {"ext_id": "e"}


def test_risc_members_and_aliases() -> None:
    changed = parse_event(RISC + "identifier-changed", {"new-value": "new@example.com"})
    assert isinstance(changed, risc.IdentifierChanged) and changed.new_value == "new@example.com"
    assert changed.payload() == {"new-value": "new@example.com"}
    assert risc.IdentifierChanged.subject_formats == {"email", "phone_number"}
    assert risc.IdentifierRecycled.subject_formats == {"email", "phone_number"}
    for reason in ("hijacking", "bulk-account"):
        assert parse_event(RISC + "account-disabled", {"reason": reason}).payload() == {"reason": reason}
    # RISC leaves credential-compromise reasons open: a string or a CAEP language map.
    for reason in ("text", {"en": "text"}):
        event = parse_event(
            RISC + "credential-compromise", {"credential_type": "pin", "reason_admin": reason}
        )
        assert event.payload()["reason_admin"] == reason


def test_ssf_events() -> None:
    assert Verification(state="abc").payload() == {"state": "abc"}
    assert Verification().payload() == {}  # transmitter-initiated: no state
    assert StreamUpdated(status="disabled", reason="r").payload() == {"status": "disabled", "reason": "r"}


def test_unknown_members_survive_on_known_events() -> None:
    payload = {"initiating_entity": "admin", "x-vendor": {"a": [1, 2]}, "nothing": None}
    event = parse_event(CAEP + "session-revoked", payload)
    assert event.payload() == payload
    assert event.model_extra == {"x-vendor": {"a": [1, 2]}, "nothing": None}


def test_unknown_event_type_survives_untouched() -> None:
    payload = {"subject": {"format": "opaque", "id": "x"}, "n": 1, "nested": {"deep": [None, True, 1.5]}}
    event = parse_event("https://vendor.example.com/event-type/custom", payload)
    assert type(event) is GenericEvent
    assert event.payload() == payload
    assert event.payload_json() == (
        '{"subject":{"format":"opaque","id":"x"},"n":1,"nested":{"deep":[null,true,1.5]}}'
    )


def test_events_are_frozen_values() -> None:
    event = SessionRevoked(initiating_entity="user")
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        event.initiating_entity = "admin"  # type: ignore[misc]
    assert event == SessionRevoked(initiating_entity="user")
    event.payload_json()  # fills the encoding cache: equality and hashing ignore it
    assert event == SessionRevoked(initiating_entity="user")
    assert hash(event) == hash(SessionRevoked(initiating_entity="user"))
    assert event != SessionRevoked(initiating_entity="admin")
    assert SessionRevoked() != Verification()
    assert SessionRevoked(x=1) != SessionRevoked(x=2)
    assert event.__eq__(object()) is NotImplemented


def test_payload_json_matches_payload() -> None:
    import json

    event = CredentialChange(credential_type="password", change_type="update", reason_admin={"fr": "é"})
    assert json.loads(event.payload_json()) == event.payload()
    assert event.payload_json().isascii()


def test_non_finite_numbers_are_refused() -> None:
    with pytest.raises(InvalidEvent):
        parse_event(CAEP + "session-revoked", {"event_timestamp": float("nan")})
    with pytest.raises(InvalidEvent):
        parse_event(CAEP + "session-revoked", {"event_timestamp": float("inf")})


def test_base_event_has_no_type() -> None:
    assert Event.event_type == "" and Event.subject_formats is None
