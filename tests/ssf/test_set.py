"""SETs: build, sign, encode, decode, verify; the SSF claim rules; legacy input; header rules."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ssf import uris
from ssf.errors import (
    AuthenticationFailed,
    InvalidAudience,
    InvalidEvent,
    InvalidIssuer,
    InvalidKey,
    InvalidRequest,
    InvalidSubject,
    KeyMaterialError,
    SETTooLarge,
)
from ssf.events import CredentialChange, GenericEvent, SessionRevoked, Verification
from ssf.events.risc import IdentifierChanged, IdentifierRecycled
from ssf.keys import KeySet, PublicKeys, SigningKey, generate_signing_key
from ssf.set import (
    DEFAULT_ALGORITHMS,
    SecurityEventToken,
    SETVerifier,
    UnknownKeyID,
    decode_unverified,
    parse_claims,
    sign_set,
)
from ssf.subjects import Subject

from .helpers import (
    AUDIENCE,
    ISSUER,
    NOW,
    b64url,
    b64url_json,
    claims,
    fixture,
    header,
    jws_compact,
    signing_key,
    verifier,
)

CAEP_SETS = fixture("caep_sets.json")
RISC_SSF = fixture("risc_ssf_sets.json")
SPEC_SETS: dict[str, dict[str, Any]] = {
    k: v for k, v in {**CAEP_SETS, **RISC_SSF["sets"]}.items() if not k.startswith("_")
}


def _token(**kwargs: Any) -> SecurityEventToken:
    kwargs.setdefault("iss", ISSUER)
    kwargs.setdefault("aud", AUDIENCE)
    kwargs.setdefault("sub_id", Subject.email("user@example.com"))
    kwargs.setdefault("event", SessionRevoked(initiating_entity="policy", reason_admin={"en": "x"}))
    kwargs.setdefault("iat", NOW)
    return SecurityEventToken.create(**kwargs)


# --- building and signing -------------------------------------------------------------


def test_create_fills_jti_iat_and_event_type() -> None:
    token = SecurityEventToken.create(
        iss=ISSUER, aud=["a", "b"], sub_id=Subject.opaque("s"), event=Verification(state="x")
    )
    assert token.event_type == uris.VERIFICATION
    assert len(token.jti) >= 16 and token.jti != _token().jti
    assert isinstance(token.iat, int) and token.iat > NOW
    assert token.aud == ("a", "b") and token.audiences == ("a", "b")
    assert _token().audiences == (AUDIENCE,)


def test_create_needs_an_event_type() -> None:
    with pytest.raises(InvalidRequest):
        SecurityEventToken.create(iss=ISSUER, aud=AUDIENCE, sub_id=Subject.opaque("s"), event=GenericEvent())
    token = SecurityEventToken.create(
        iss=ISSUER, aud=AUDIENCE, sub_id=Subject.opaque("s"), event=GenericEvent(a=1), event_type="urn:x:y"
    )
    assert token.claims()["events"] == {"urn:x:y": {"a": 1}}


def test_create_holds_the_event_subject_format_rule_on_output() -> None:
    """RISC §2.5/2.6: identifier-changed/-recycled name the (old) email or phone, also when we
    build them, not only when we decode them."""
    for event in (IdentifierChanged(**{"new-value": "new@example.com"}), IdentifierRecycled()):
        with pytest.raises(InvalidSubject, match="email"):
            _token(event=event, sub_id=Subject.opaque("user-7"))
        assert _token(event=event).sub_id.format == "email"
        wrapped = Subject.complex(user=Subject.email("u@example.com"))  # not a bare identifier
        with pytest.raises(InvalidSubject):
            _token(event=event, sub_id=wrapped)


def test_create_refuses_a_payload_under_another_registered_event_type() -> None:
    with pytest.raises(InvalidEvent, match="SessionRevoked"):
        _token(event=SessionRevoked(), event_type=CredentialChange.event_type)
    with pytest.raises(InvalidEvent, match="GenericEvent"):  # unvalidated members under a known URI
        _token(event=GenericEvent(credential_type="pin"), event_type=CredentialChange.event_type)
    assert _token(event=SessionRevoked(), event_type="urn:vendor:custom").event_type == "urn:vendor:custom"
    assert _token(event=SessionRevoked(), event_type=SessionRevoked.event_type).event_type == (
        SessionRevoked.event_type
    )


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"iss": ""}, "iss"),
        ({"aud": ""}, "aud"),
        ({"aud": []}, "aud"),
        ({"aud": ["ok", ""]}, "aud"),
        ({"aud": ["ok", 3]}, "aud"),
        ({"txn": 8675309}, "txn"),
    ],
)
def test_create_never_builds_a_set_that_decoding_would_refuse(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidRequest, match=match):
        _token(**overrides)
    claims_out = _token().claims()
    with pytest.raises(InvalidRequest, match=match):  # the same rule on the way in
        parse_claims({**claims_out, **overrides})


def test_create_takes_toe_and_refuses_a_non_finite_one() -> None:
    token = _token(toe=NOW - 5)
    assert token.toe == NOW - 5 and json.loads(token.claims_json())["toe"] == NOW - 5
    assert parse_claims(token.claims()).toe == NOW - 5
    for bad in (float("nan"), float("inf"), True, "yesterday"):
        with pytest.raises(InvalidRequest, match="toe"):
            _token(toe=bad)


def test_claims_are_ssf_1_0_with_one_event_and_no_sub_or_exp() -> None:
    token = _token(txn="t-1", jti="j-1")
    out = token.claims()
    assert out == {
        "iss": ISSUER,
        "jti": "j-1",
        "iat": NOW,
        "aud": AUDIENCE,
        "txn": "t-1",
        "sub_id": {"format": "email", "email": "user@example.com"},
        "events": {SessionRevoked.event_type: {"initiating_entity": "policy", "reason_admin": {"en": "x"}}},
    }
    assert json.loads(token.claims_json()) == out
    assert token.claims_json() == json.dumps(out, separators=(",", ":"))


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
def test_signed_set_has_the_ssf_header(alg: str) -> None:
    key = signing_key(alg)
    compact = sign_set(_token(), key)
    head, body = decode_unverified(compact)
    assert head == {"alg": alg, "typ": "secevent+jwt", "kid": key.kid}
    assert body == _token(jti=body["jti"]).claims()
    assert verifier(key).verify(compact).jti == body["jti"]


def test_sign_refuses_a_key_that_does_not_fit_its_algorithm() -> None:
    es = signing_key("ES256")
    with pytest.raises(KeyMaterialError):
        sign_set(_token(), SigningKey("k", "RS256", es.key))
    with pytest.raises(KeyMaterialError):
        sign_set(_token(), SigningKey("k", "none", es.key))


def test_toe_and_float_iat_are_encoded_as_numbers() -> None:
    token = SecurityEventToken(
        iss=ISSUER, jti="j", iat=NOW + 0.5, aud=("a",), sub_id=Subject.opaque("s"),
        event_type=SessionRevoked.event_type, event=SessionRevoked(), toe=NOW - 1,
    )  # fmt: skip
    assert token.claims_json() == json.dumps(token.claims(), separators=(",", ":"))
    assert json.loads(token.claims_json())["toe"] == NOW - 1


# --- verifying ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SPEC_SETS))
def test_spec_example_sets_sign_and_verify_unchanged(name: str) -> None:
    spec = SPEC_SETS[name]
    key = signing_key("ES256")
    token = parse_claims(spec)
    assert token.claims() == spec  # already SSF 1.0: nothing normalised away
    check = SETVerifier(issuer=spec["iss"], audience=spec["aud"], keys=PublicKeys.from_key_set(KeySet([key])))
    check.now = lambda: spec["iat"]
    assert check.verify(sign_set(token, key)) == token


@pytest.mark.parametrize("name", sorted(k for k in RISC_SSF["legacy"] if not k.startswith("_")))
def test_legacy_sets_are_normalised_on_decode(name: str) -> None:
    case = RISC_SSF["legacy"][name]
    key = signing_key("EdDSA")
    compact = jws_compact(header(key), case["input"], key)
    check = verifier(
        key, issuer=case["input"]["iss"], audience=case["input"]["aud"], now=case["input"]["iat"]
    )
    token = check.verify(compact)
    assert token.claims() == case["expected"]
    # and what we emit again is SSF 1.0 final
    _head, body = decode_unverified(sign_set(token, key))
    assert body == case["expected"] and "subject" not in json.dumps(body["events"])


def test_unknown_claims_are_ignored_but_kept_aside() -> None:
    key = signing_key("ES256")
    compact = jws_compact(header(key), claims(vendor_claim={"x": 1}, nbf=5), key)
    token = verifier(key).verify(compact)
    assert token.extra == {"vendor_claim": {"x": 1}, "nbf": 5}
    assert "vendor_claim" not in token.claims()


def test_unknown_event_type_is_decoded_as_generic_and_untouched() -> None:
    key = signing_key("ES256")
    payload = {"subject": {"format": "opaque", "id": "legacy"}, "x": [1, {"y": None}]}
    compact = jws_compact(header(key), claims(events={"urn:vendor:evt": payload}), key)
    token = verifier(key).verify(compact)
    assert isinstance(token.event, GenericEvent) and token.event_type == "urn:vendor:evt"
    assert token.event.payload() == payload
    assert token.sub_id == Subject.email("user@example.com")
    # without sub_id the event's subject is the fallback, still untouched in the payload
    compact = jws_compact(header(key), claims(sub_id=..., events={"urn:vendor:evt": payload}), key)
    token = verifier(key).verify(compact)
    assert token.sub_id == Subject.opaque("legacy") and token.event.payload() == payload


def test_aud_as_list_and_audience_set() -> None:
    key = signing_key("ES256")
    compact = jws_compact(header(key), claims(aud=["https://other.example", AUDIENCE]), key)
    assert verifier(key).verify(compact).aud == ("https://other.example", AUDIENCE)
    assert verifier(key, audience=None).verify(compact).audiences[1] == AUDIENCE
    with pytest.raises(InvalidAudience):
        verifier(key, audience=["https://x.example", "https://y.example"]).verify(compact)


def test_iat_within_skew_is_accepted_and_old_iat_too() -> None:
    key = signing_key("ES256")
    assert verifier(key, now=NOW - 299).verify(jws_compact(header(key), claims(), key))
    assert verifier(key, now=NOW + 10**8).verify(jws_compact(header(key), claims(), key))  # held events
    with pytest.raises(InvalidRequest, match="future"):
        verifier(key, now=NOW - 301).verify(jws_compact(header(key), claims(), key))


def test_identifier_events_need_email_or_phone_subjects() -> None:
    key = signing_key("ES256")
    event = {uris.RISC_BASE + "identifier-recycled": {}}
    ok = jws_compact(header(key), claims(events=event), key)
    assert verifier(key).verify(ok).sub_id.format == "email"
    bad = jws_compact(header(key), claims(events=event, sub_id={"format": "opaque", "id": "x"}), key)
    with pytest.raises(InvalidSubject):
        verifier(key).verify(bad)


def test_typ_comparison_follows_rfc_7515() -> None:
    key = signing_key("ES256")
    for typ in ("secevent+jwt", "SecEvent+JWT", "application/secevent+jwt"):
        assert verifier(key).verify(jws_compact(header(key, typ=typ), claims(), key))
    for typ in ("JWT", "jwt", "application/jwt", "secevent", 5, None):
        with pytest.raises(InvalidRequest, match="typ"):
            verifier(key).verify(jws_compact(header(key, typ=typ), claims(), key))


def test_unknown_header_members_are_ignored_registered_ones_checked() -> None:
    key = signing_key("ES256")
    assert verifier(key).verify(jws_compact(header(key, x_vendor="y", cty="secevent"), claims(), key))
    with pytest.raises(InvalidRequest):
        verifier(key).verify(jws_compact(header(key, x5c="not-a-list"), claims(), key))
    with pytest.raises(InvalidRequest):
        verifier(key).verify(jws_compact(header(key, kid=7), claims(), key))
    with pytest.raises(InvalidRequest, match="critical"):
        verifier(key).verify(jws_compact(header(key, crit=["exp"], exp=1), claims(), key))
    with pytest.raises(InvalidRequest, match="unencoded"):
        verifier(key).verify(jws_compact(header(key, b64=False), claims(), key))


def test_embedded_jwk_header_is_never_trusted() -> None:
    key, attacker = signing_key("ES256"), generate_signing_key("ES256", kid="attacker")
    forged = jws_compact(header(attacker, kid=..., jwk=attacker.public_jwk()), claims(), attacker)
    with pytest.raises(AuthenticationFailed):  # no kid: the only fitting key is ours: it fails
        verifier(key).verify(forged)


def test_missing_kid_uses_the_only_fitting_key() -> None:
    key = signing_key("ES256")
    assert verifier(key).verify(jws_compact(header(key, kid=...), claims(), key))
    other = generate_signing_key("ES256", kid="other")
    with pytest.raises(UnknownKeyID) as info:  # two ES256 keys: ambiguous
        verifier(key, other).verify(jws_compact(header(key, kid=...), claims(), key))
    assert info.value.kid is None


def test_unknown_kid_lets_the_caller_refresh_keys_and_retry() -> None:
    old, new = signing_key("ES256"), generate_signing_key("ES256", kid="rotated")
    check = verifier(old)
    compact = jws_compact(header(new), claims(), new)
    with pytest.raises(UnknownKeyID) as info:
        check.verify(compact)
    assert info.value.kid == "rotated" and info.value.err == "invalid_key"
    check.keys = PublicKeys.from_key_set(KeySet([old, new]))
    assert check.verify(compact).jti == "jti-1"


def test_verify_accepts_bytes_and_surrounding_whitespace() -> None:
    key = signing_key("EdDSA")
    compact = jws_compact(header(key), claims(), key)
    assert verifier(key).verify(compact.encode()) == verifier(key).verify(f"  {compact}\r\n")
    with pytest.raises(InvalidRequest):
        verifier(key).verify("é".encode() + compact.encode())


def test_size_limit() -> None:
    key = signing_key("ES256")
    compact = jws_compact(header(key), claims(pad="x" * 5000), key)
    assert verifier(key, max_bytes=8000).verify(compact)
    with pytest.raises(SETTooLarge):
        verifier(key, max_bytes=1000).verify(compact)


def test_header_checks_are_cached_per_header_segment() -> None:
    key = signing_key("ES256")
    check = verifier(key)
    first = jws_compact(header(key), claims(jti="a"), key)
    second = jws_compact(header(key), claims(jti="b"), key)
    assert check.verify(first).jti == "a" and check.verify(second).jti == "b"
    assert len(check._headers) == 1
    check.algorithms = frozenset({"EdDSA"})  # narrowing the allow-list applies at once
    with pytest.raises(InvalidKey):
        check.verify(first)


def test_verifier_configuration_rules() -> None:
    keys = PublicKeys()
    with pytest.raises(ValueError, match="none"):
        SETVerifier(issuer=ISSUER, keys=keys, algorithms=["ES256", "none"])
    with pytest.raises(ValueError, match="secret"):
        SETVerifier(issuer=ISSUER, keys=keys, algorithms=["HS256"])
    with pytest.raises(ValueError, match="unsupported"):
        SETVerifier(issuer=ISSUER, keys=keys, algorithms=["RS1"])
    pem = signing_key("RS256").key.as_pem(private=False)
    with pytest.raises(ValueError, match="public key"):
        SETVerifier(issuer=ISSUER, keys=keys, algorithms=["HS256"], hmac_secret=pem)
    jwk_text = json.dumps(signing_key("ES256").public_jwk()).encode()
    with pytest.raises(ValueError, match="public key"):
        SETVerifier(issuer=ISSUER, keys=keys, algorithms=["HS256"], hmac_secret=jwk_text)
    assert set(DEFAULT_ALGORITHMS) == {"RS256", "PS256", "ES256", "EdDSA"}


def test_hmac_only_with_an_out_of_band_secret() -> None:
    secret = b"an out-of-band shared secret of 32+ bytes!"
    compact = jws_compact({"alg": "HS256", "typ": "secevent+jwt", "kid": "h"}, claims(), secret)
    with pytest.raises(InvalidKey):  # default allow-list: no HMAC at all
        verifier(signing_key("ES256")).verify(compact)
    check = verifier(algorithms=["HS256", "ES256"], hmac_secret=secret)
    assert check.verify(compact).jti == "jti-1"
    wrong = jws_compact({"alg": "HS256", "typ": "secevent+jwt"}, claims(), b"another secret entirely")
    with pytest.raises(AuthenticationFailed):
        check.verify(wrong)


def test_hmac_signing_key_signs_for_tests() -> None:
    from joserfc.jwk import OctKey

    secret = b"an out-of-band shared secret of 32+ bytes!"
    key = SigningKey("h", "HS256", OctKey.import_key(secret))
    check = verifier(algorithms=["HS256"], hmac_secret=secret)
    assert check.verify(sign_set(_token(), key)).iss == ISSUER


# --- decode_unverified / parse_claims ---------------------------------------------------


def test_decode_unverified() -> None:
    key = signing_key("ES256")
    head, body = decode_unverified(jws_compact(header(key), claims(), key).encode())
    assert head["kid"] == key.kid and body["jti"] == "jti-1"
    for bad in (
        "a.b",
        "a.b.c.d",
        "!!!.e30.",
        b64url(b"[]") + "." + b64url_json({}) + ".",
        "e30.bm90IGpzb24.",
    ):
        with pytest.raises(InvalidRequest):
            decode_unverified(bad)
    deep = b64url(b"[" * 100_000)
    with pytest.raises(InvalidRequest):
        decode_unverified(f"e30.{deep}.")


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"sub": "x"}, InvalidRequest, "'sub'"),
        ({"exp": NOW + 60}, InvalidRequest, "'exp'"),
        ({"iss": ...}, InvalidRequest, "iss"),
        ({"iss": 3}, InvalidRequest, "iss"),
        ({"iss": ""}, InvalidRequest, "iss"),
        ({"jti": ...}, InvalidRequest, "jti"),
        ({"jti": 7}, InvalidRequest, "jti"),
        ({"iat": ...}, InvalidRequest, "iat"),
        ({"iat": "1700000000"}, InvalidRequest, "iat"),
        ({"iat": True}, InvalidRequest, "iat"),
        ({"iat": float("inf")}, InvalidRequest, "iat"),
        ({"aud": ...}, InvalidRequest, "aud"),
        ({"aud": []}, InvalidRequest, "aud"),
        ({"aud": ["ok", 3]}, InvalidRequest, "aud"),
        ({"aud": ""}, InvalidRequest, "aud"),
        ({"txn": 8675309}, InvalidRequest, "txn"),
        ({"toe": "now"}, InvalidRequest, "toe"),
        ({"toe": float("nan")}, InvalidRequest, "toe"),
        ({"events": ...}, InvalidRequest, "events"),
        ({"events": {}}, InvalidRequest, "events"),
        ({"events": []}, InvalidRequest, "events"),
        (
            {"events": {SessionRevoked.event_type: {}, CredentialChange.event_type: {}}},
            InvalidRequest,
            "exactly one",
        ),
        ({"events": {SessionRevoked.event_type: []}}, InvalidRequest, "object"),
        ({"events": {CredentialChange.event_type: {}}}, InvalidEvent, "credential"),
        ({"sub_id": ...}, InvalidRequest, "sub_id"),
        ({"sub_id": {"format": "email", "email": "nope"}}, InvalidSubject, "email"),
    ],
)
def test_claim_rules(overrides: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        parse_claims(claims(**overrides))


def test_check_claims_rules() -> None:
    key = signing_key("ES256")
    token = parse_claims(claims())
    assert verifier(key).check_claims(token) is token
    with pytest.raises(InvalidIssuer):
        verifier(key, issuer=ISSUER + "/").check_claims(token)
    with pytest.raises(InvalidAudience):
        verifier(key, audience="https://elsewhere.example").check_claims(token)


def test_sets_from_two_keys_of_a_key_set_verify_after_rotation() -> None:
    first = generate_signing_key("ES256", kid="k1")
    ks = KeySet([first])
    before = sign_set(_token(), ks.active)
    ks.rotate(generate_signing_key("EdDSA", kid="k2"), now=NOW)
    after = sign_set(_token(), ks.active)
    check = SETVerifier(issuer=ISSUER, keys=PublicKeys.from_jwks(ks.jwks()), now=lambda: NOW)
    assert check.verify(before).iss == check.verify(after).iss == ISSUER
    assert decode_unverified(after)[0]["kid"] == "k2"


def test_tokens_are_frozen_dataclasses_however_built() -> None:
    import dataclasses

    parsed = parse_claims(claims(txn="t"))
    built = SecurityEventToken(
        iss=ISSUER, jti="jti-1", iat=NOW, aud=AUDIENCE, sub_id=Subject.email("user@example.com"),
        event_type=SessionRevoked.event_type, event=parsed.event, txn="t",
    )  # fmt: skip
    assert parsed == built and hash(parsed.sub_id) == hash(built.sub_id)
    assert dataclasses.asdict(parsed)["txn"] == "t"
    assert dataclasses.replace(parsed, txn="u").txn == "u"
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.iss = "x"  # type: ignore[misc]
    created = _token()
    assert dataclasses.replace(created) == created and created.toe is None and created.extra == {}


def test_replacing_keys_is_honoured_by_the_header_cache() -> None:
    old = generate_signing_key("ES256", kid="same-kid")
    new = generate_signing_key("ES256", kid="same-kid")
    check = verifier(old)
    assert check.verify(jws_compact(header(old), claims(), old))
    check.keys = PublicKeys.from_key_set(KeySet([new]))  # rotated under the same kid
    with pytest.raises(AuthenticationFailed):
        check.verify(jws_compact(header(old), claims(), old))
    assert check.verify(jws_compact(header(new), claims(), new))


def test_unknown_claims_are_kept_aside_for_legacy_sets_without_sub_id() -> None:
    legacy_event = {SessionRevoked.event_type: {"subject": {"format": "opaque", "id": "s"}}}
    token = parse_claims(claims(sub_id=..., events=legacy_event, vendor=1))
    assert token.extra == {"vendor": 1} and token.sub_id == Subject.opaque("s")
    nulled = parse_claims(claims(txn=None, vendor=2))  # an explicit null txn is "no txn"
    assert nulled.extra == {"vendor": 2} and nulled.txn is None
