"""Subject identifiers: every RFC 9493 / SSF format, legacy dialects, canonical key, matching."""

from __future__ import annotations

from typing import Any

import pytest

from ssf.errors import InvalidRequest, InvalidSubject
from ssf.subjects import COMPLEX_MEMBERS, SIMPLE_FORMATS, Subject, parse_subject, subject_matches

from .helpers import fixture

SUBJECTS = fixture("subjects.json")
VALID: dict[str, dict[str, Any]] = SUBJECTS["valid"]


@pytest.mark.parametrize("name", sorted(VALID))
def test_spec_example_parses_and_keeps_its_wire_form(name: str) -> None:
    subject = parse_subject(VALID[name])
    assert subject.to_dict() == VALID[name]
    assert subject.format == VALID[name]["format"]
    assert dict(subject.items()).keys() == VALID[name].keys()
    assert parse_subject(subject.to_dict()) == subject


def test_every_registered_format_has_a_spec_example() -> None:
    formats = {v["format"] for v in VALID.values()}
    assert set(SIMPLE_FORMATS) | {"aliases", "ip-addresses", "complex"} <= formats


@pytest.mark.parametrize("case", SUBJECTS["legacy"], ids=lambda c: c["_note"][:40])
def test_legacy_dialects_normalise_to_ssf_1_0(case: dict[str, Any]) -> None:
    subject = parse_subject(case["input"])
    assert subject.to_dict() == case["expected"]
    assert "subject_type" not in subject.to_dict()


@pytest.mark.parametrize("case", SUBJECTS["invalid"], ids=lambda c: c["_why"])
def test_invalid_identifiers_raise_invalid_subject(case: dict[str, Any]) -> None:
    with pytest.raises(InvalidSubject) as info:
        parse_subject(case["input"])
    assert info.value.err == "invalid_request"
    assert isinstance(info.value, InvalidRequest)


def test_subject_type_is_dropped_when_format_is_present() -> None:
    subject = parse_subject({"format": "email", "subject_type": "email", "email": "a@example.com"})
    assert subject.to_dict() == {"format": "email", "email": "a@example.com"}


def test_unknown_complex_members_are_kept() -> None:
    subject = parse_subject(VALID["complex_with_unknown_member"])
    assert set(subject.members()) == {"user", "catalog_item"}
    assert subject.member("catalog_item") == Subject.opaque("sku-123")
    assert subject.to_dict()["catalog_item"] == {"format": "opaque", "id": "sku-123"}


def test_complex_members_are_subjects_and_simple_has_none() -> None:
    subject = parse_subject(VALID["complex"])
    assert subject.is_complex
    assert set(subject.members()) == set(COMPLEX_MEMBERS)
    assert subject.member("tenant") == Subject.opaque("123456789")
    assert subject.member("nope") is None
    simple = Subject.email("user@example.com")
    assert not simple.is_complex and simple.members() == {} and simple.member("user") is None


def test_too_deep_nesting_is_refused() -> None:
    deep: dict[str, Any] = {"format": "opaque", "id": "x"}
    for _ in range(6):
        deep = {"format": "aliases", "identifiers": [deep]}
    with pytest.raises(InvalidSubject):
        parse_subject(deep)


def test_mapping_view_is_read_only_and_hashable() -> None:
    subject = Subject.iss_sub("https://i.example", "s1")
    assert subject["iss"] == "https://i.example" and len(subject) == 3 and next(iter(subject)) == "format"
    with pytest.raises(TypeError):
        subject["iss"] = "x"  # type: ignore[index]
    copy = subject.to_dict()
    copy["iss"] = "changed"
    assert subject["iss"] == "https://i.example"
    assert {subject: 1}[Subject.iss_sub("https://i.example", "s1")] == 1
    assert "s1" in repr(subject)


def test_canonical_key_ignores_member_order() -> None:
    a = parse_subject({"format": "iss_sub", "iss": "https://i.example", "sub": "s"})
    b = parse_subject({"sub": "s", "iss": "https://i.example", "format": "iss_sub"})
    assert a == b and hash(a) == hash(b) and a.key == b.key
    assert a.key == '{"format":"iss_sub","iss":"https://i.example","sub":"s"}'
    c1 = Subject.complex(user=Subject.email("u@example.com"), tenant=Subject.opaque("t"))
    c2 = Subject.complex(
        tenant={"format": "opaque", "id": "t"}, user={"format": "email", "email": "u@example.com"}
    )
    assert c1 == c2 and c1.key == c2.key
    assert Subject.opaque("x") != Subject.opaque("y")
    assert Subject.opaque("x") != {"format": "opaque", "id": "x"}  # not a Subject: no equality


def test_to_json_is_the_compact_wire_form() -> None:
    subject = Subject.email("ü@example.com")
    assert subject.to_json() == '{"format":"email","email":"\\u00fc@example.com"}'


def test_parse_subject_returns_a_subject_unchanged() -> None:
    subject = Subject.opaque("x")
    assert parse_subject(subject) is subject
    with pytest.raises(InvalidSubject):
        parse_subject(Subject.complex(user=subject), _in_complex=True)


# --- SSF §8.1.3.1 matching -------------------------------------------------------------

U = Subject.email("u@example.com")
D = Subject.opaque("device-1")
T = Subject.opaque("tenant-1")


def test_spec_case_added_tenant_matches_event_with_tenant_and_user() -> None:
    added = Subject.complex(tenant=T)
    event = Subject.complex(tenant=T, user=U)
    assert subject_matches(added, event) and subject_matches(event, added)


def test_spec_case_added_user_and_device_matches_event_with_user_only() -> None:
    added = Subject.complex(user=U, device=D)
    event = Subject.complex(user=U)
    assert subject_matches(added, event) and subject_matches(event, added)


def test_spec_case_different_group_values_do_not_match() -> None:
    added = Subject.complex(user=U, group=Subject.opaque("g1"))
    event = Subject.complex(user=U, group=Subject.opaque("g2"))
    assert not subject_matches(added, event)


def test_complex_subjects_without_a_shared_member_do_not_match() -> None:
    """Deliberate (privacy): {tenant:T} must not receive every event that lacks a tenant."""
    added = Subject.complex(tenant=T)
    event = Subject.complex(user=U, device=D)
    assert not subject_matches(added, event)
    assert not subject_matches(event, added)


def test_simple_subjects_match_only_when_identical() -> None:
    assert subject_matches(U, Subject.email("u@EXAMPLE.com"))
    assert not subject_matches(U, Subject.email("other@example.com"))
    assert not subject_matches(Subject.opaque("u@example.com"), U)


def test_simple_subject_matches_a_complex_subject_holding_it() -> None:
    event = Subject.complex(user=U, tenant=T)
    assert subject_matches(U, event) and subject_matches(event, U)
    assert not subject_matches(D, event)
