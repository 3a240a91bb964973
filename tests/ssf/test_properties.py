"""Hypothesis properties: round trips for every event type and subject format; hostile input
of every kind ends in one of the core's own errors (never another exception)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ssf.errors import ModelError, SSFError
from ssf.events import EVENT_MODELS, SessionRevoked, parse_event
from ssf.metadata import TransmitterMetadata
from ssf.models import parse_json_model, parse_model
from ssf.poll import PollRequest, PollResponse, SetError
from ssf.set import SecurityEventToken, SETVerifier, decode_unverified, parse_claims, sign_set
from ssf.stream import (
    AddSubjectRequest,
    RemoveSubjectRequest,
    StreamConfiguration,
    StreamRequest,
    StreamStatus,
    VerificationRequest,
)
from ssf.subjects import Subject, parse_subject

from .helpers import AUDIENCE, ISSUER, NOW, b64url, claims, header, jws_compact, public_keys, signing_key
from .strategies import ANY_SUBJECT, GENERIC_URI, JSON, JSON_OBJECTS, SUBJECTS, TEXT, event_payload

KEYS = {alg: signing_key(alg) for alg in ("RS256", "PS256", "ES256", "EdDSA")}
FAST_KEYS = {alg: KEYS[alg] for alg in ("ES256", "EdDSA")}  # RSA signing is ~10x slower
VERIFIER = SETVerifier(
    issuer=ISSUER, audience=AUDIENCE, keys=public_keys(*KEYS.values()), now=lambda: NOW + 10
)
AUDIENCES = st.sampled_from([AUDIENCE, (AUDIENCE,), ("https://other.example", AUDIENCE)])


def budget(examples: int) -> settings:
    """Modest example counts: RSA signing is slow and the whole suite must stay fast."""
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def _round_trip(
    subject: Subject, uri: str, payload: dict[str, Any], alg: str, aud: Any, txn: str | None
) -> None:
    event = parse_event(uri, payload)
    assert event.payload() == payload  # the event model keeps every member, unknown ones too
    token = SecurityEventToken.create(
        iss=ISSUER, aud=aud, sub_id=subject, event=event, event_type=uri, txn=txn, iat=NOW
    )
    assert token.claims_json() == json.dumps(token.claims(), separators=(",", ":"))
    compact = sign_set(token, KEYS[alg])
    decoded = VERIFIER.verify(compact)
    assert decoded == token
    assert decoded.claims() == token.claims()
    assert decoded.event.payload() == payload
    assert decode_unverified(compact)[1] == token.claims()


@pytest.mark.parametrize("uri", sorted(EVENT_MODELS))
@budget(8)
@given(data=st.data())
def test_every_event_type_round_trips_unchanged(uri: str, data: st.DataObject) -> None:
    model = EVENT_MODELS[uri]
    subjects = ANY_SUBJECT if model.subject_formats is None else SUBJECTS["email"] | SUBJECTS["phone_number"]
    subject = parse_subject(data.draw(subjects, label="subject"))
    payload = data.draw(event_payload(uri), label="payload")
    alg = data.draw(
        st.sampled_from(sorted(FAST_KEYS))
        if uri != SessionRevoked.event_type
        else st.sampled_from(sorted(KEYS))
    )
    _round_trip(subject, uri, payload, alg, data.draw(AUDIENCES), data.draw(st.none() | TEXT))


@pytest.mark.parametrize("fmt", sorted(SUBJECTS))
@budget(12)
@given(data=st.data())
def test_every_subject_format_round_trips_unchanged(fmt: str, data: st.DataObject) -> None:
    raw = data.draw(SUBJECTS[fmt], label="subject")
    subject = parse_subject(raw)
    assert parse_subject(subject.to_dict()) == subject
    assert parse_subject(json.loads(subject.to_json())) == subject
    assert hash(parse_subject(subject.to_dict())) == hash(subject)
    alg = data.draw(st.sampled_from(sorted(KEYS)))
    _round_trip(subject, SessionRevoked.event_type, {"initiating_entity": "system"}, alg, AUDIENCE, None)


@budget(15)
@given(data=st.data())
def test_unknown_event_types_round_trip_untouched(data: st.DataObject) -> None:
    payload = data.draw(JSON_OBJECTS.filter(lambda p: "subject" not in p))
    _round_trip(Subject.opaque("s"), data.draw(GENERIC_URI), payload, "ES256", AUDIENCE, None)


# --- hostile input: only SSFError may escape ---------------------------------------------


def _verify(token: str | bytes) -> None:
    """Hostile input through both entry points: the verifier and the unverified decoder
    (what ``ssf set decode`` shows before it checks anything), then the claim rules."""
    try:
        header, claims = decode_unverified(token)
        assert isinstance(header, dict) and isinstance(claims, dict)
        parse_claims(claims)
    except SSFError:
        pass
    try:
        result = VERIFIER.verify(token)
    except SSFError:
        return
    assert isinstance(result, SecurityEventToken)


@budget(150)
@given(st.binary(max_size=400) | st.text(max_size=400))
def test_arbitrary_bytes_and_text_never_escape_as_other_errors(token: bytes | str) -> None:
    _verify(token)


DOTTED = st.lists(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/", max_size=40),
    min_size=1,
    max_size=5,
).map(".".join)


@budget(80)
@given(DOTTED)
def test_arbitrary_base64ish_segments(token: str) -> None:
    _verify(token)


HEADER_NAMES = st.sampled_from(
    ["alg", "typ", "kid", "crit", "b64", "jwk", "jku", "x5c", "x5u", "cty", "zip", "enc"]
)


@budget(60)
@given(
    st.dictionaries(HEADER_NAMES | st.text(max_size=5), JSON, max_size=5),
    st.sampled_from(sorted(FAST_KEYS)),
    st.booleans(),
)
def test_arbitrary_headers_with_real_signatures(extra: dict[str, Any], alg: str, keep_base: bool) -> None:
    key = KEYS[alg]
    head = {**header(key), **extra} if keep_base else extra
    body = b64url(json.dumps(claims()).encode())
    head_seg = b64url(json.dumps(head).encode())
    from .helpers import raw_signature

    sig = raw_signature(alg, key, f"{head_seg}.{body}".encode())
    _verify(f"{head_seg}.{body}.{b64url(sig)}")


CLAIM_NAMES = ["iss", "jti", "iat", "aud", "txn", "toe", "sub_id", "events", "sub", "exp"]


@budget(80)
@given(
    st.one_of(
        JSON,
        st.fixed_dictionaries({}, optional={name: JSON for name in CLAIM_NAMES}),
        st.builds(
            lambda base, name, value: {**base, name: value},
            st.just(claims()),
            st.sampled_from(CLAIM_NAMES),
            JSON | ANY_SUBJECT,
        ),
        st.builds(
            lambda uri, payload, subject: claims(events={uri: payload}, sub_id=subject),
            st.sampled_from(sorted(EVENT_MODELS)) | GENERIC_URI,
            JSON,
            JSON | ANY_SUBJECT,
        ),
    )
)
def test_arbitrary_json_payloads_with_real_signatures(payload: Any) -> None:
    key = KEYS["ES256"]
    _verify(jws_compact(header(key), json.dumps(payload).encode(), key))
    if isinstance(payload, dict):
        try:
            parse_claims(payload)
        except SSFError:
            pass


VALID = jws_compact(header(KEYS["ES256"]), claims(), KEYS["ES256"])
MUTATION = st.tuples(
    st.integers(0, len(VALID) - 1), st.sampled_from(["flip", "delete", "insert", "dup"]), st.characters()
)


@budget(150)
@given(st.lists(MUTATION, min_size=1, max_size=4))
def test_mutated_valid_sets(mutations: list[tuple[int, str, str]]) -> None:
    token = VALID
    for position, op, char in mutations:
        i = min(position, len(token) - 1) if token else 0
        if op == "flip":
            token = token[:i] + char + token[i + 1 :]
        elif op == "delete":
            token = token[:i] + token[i + 1 :]
        elif op == "insert":
            token = token[:i] + char + token[i:]
        else:
            token = token[:i] + token[i : i + 20] + token[i:]
    _verify(token)
    _verify(token.encode("utf-8", "surrogatepass"))


@budget(100)
@given(JSON)
def test_parse_subject_only_raises_ssf_errors(value: Any) -> None:
    try:
        assert isinstance(parse_subject(value), Subject)
    except SSFError:
        pass


@budget(100)
@given(st.sampled_from(sorted(EVENT_MODELS)) | GENERIC_URI, JSON)
def test_parse_event_only_raises_ssf_errors(uri: str, value: Any) -> None:
    try:
        event = parse_event(uri, value)
        json.loads(event.payload_json())
    except SSFError:
        pass


WIRE_MODELS = [
    TransmitterMetadata, StreamConfiguration, StreamRequest, StreamStatus, AddSubjectRequest,
    RemoveSubjectRequest, VerificationRequest, PollRequest, PollResponse, SetError,
]  # fmt: skip


@budget(80)
@given(
    st.sampled_from(WIRE_MODELS),
    JSON
    | st.fixed_dictionaries(
        {},
        optional={
            name: JSON | ANY_SUBJECT
            for name in [
                "stream_id",
                "subject",
                "status",
                "delivery",
                "issuer",
                "sets",
                "ack",
                "maxEvents",
                "setErrs",
                "iss",
                "aud",
                "events_delivered",
                "verified",
                "state",
                "err",
                "authorization_schemes",
            ]
        },
    ),
)
def test_wire_models_only_raise_model_errors(model: Any, value: Any) -> None:
    try:
        parse_model(model, value)
    except ModelError:
        pass
    try:
        parse_json_model(model, json.dumps(value))
    except ModelError:
        pass
