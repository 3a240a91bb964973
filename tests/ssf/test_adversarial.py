"""Wycheproof-style table: hostile or broken SETs, each refused with its specific error class.

Every case builds a token from a valid one and names the exact class the verifier must raise
(and therefore the RFC 8935 ``err`` code a receiver answers with).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ssf.errors import (
    AuthenticationFailed,
    InvalidAudience,
    InvalidEvent,
    InvalidIssuer,
    InvalidKey,
    InvalidRequest,
    InvalidSubject,
    SETError,
    SETTooLarge,
)
from ssf.set import UnknownKeyID

from .helpers import NOW, b64url, b64url_json, claims, header, jws_compact, signing_key, verifier

RSA, EC, OKP = signing_key("RS256"), signing_key("ES256"), signing_key("EdDSA")
SECOND = "https://schemas.openid.net/secevent/caep/event-type/credential-change"


def _good(key=EC) -> str:  # type: ignore[no-untyped-def]
    return jws_compact(header(key), claims(), key)


def _tamper_signature(token: str) -> str:
    head, body, sig = token.split(".")
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    return f"{head}.{body}.{flipped}"


def _swap_payload(token: str) -> str:
    head, _, sig = token.split(".")
    return f"{head}.{b64url_json(claims(jti='other'))}.{sig}"


def _with_signature(token: str, signature: bytes) -> str:
    head, body, _ = token.split(".")
    return f"{head}.{body}.{b64url(signature)}"


def _der_signature() -> str:
    token = jws_compact(header(EC), claims(), None)
    head, body, _ = token.split(".")
    der = EC.key.get_op_key("sign").sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    return f"{head}.{body}.{b64url(der)}"


def _non_canonical_signature() -> str:
    token = _good(EC)
    head, body, sig = token.split(".")
    # 64-byte signature -> 86 chars, last char carries 4 unused bits: make them non-zero
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet[(alphabet.index(sig[-1]) | 1)]
    return f"{head}.{body}.{sig[:-1]}{last}"


def _hs256_with_public_key(material: bytes) -> str:
    return jws_compact({"alg": "HS256", "typ": "secevent+jwt", "kid": RSA.kid}, claims(), material)


def _raw_parts(head: bytes, body: bytes, sig: str = "c2ln") -> str:
    return f"{b64url(head)}.{b64url(body)}.{sig}"


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], str | bytes]
    error: type[SETError]


CASES = [
    # --- signature ---
    Case("tampered-signature-es256", lambda: _tamper_signature(_good(EC)), AuthenticationFailed),
    Case("tampered-signature-rs256", lambda: _tamper_signature(_good(RSA)), AuthenticationFailed),
    Case("tampered-signature-eddsa", lambda: _tamper_signature(_good(OKP)), AuthenticationFailed),
    Case("payload-swapped", lambda: _swap_payload(_good(EC)), AuthenticationFailed),
    Case(
        "signed-by-another-key-same-kid",
        lambda: jws_compact(header(EC), claims(), signing_key("ES256", "impostor")),
        AuthenticationFailed,
    ),
    Case("truncated-signature", lambda: _good(EC)[:-2], AuthenticationFailed),
    Case("empty-signature", lambda: _good(EC).rsplit(".", 1)[0] + ".", AuthenticationFailed),
    Case("psychic-signature-r-s-zero", lambda: _with_signature(_good(EC), bytes(64)), AuthenticationFailed),
    Case("es256-der-signature", _der_signature, AuthenticationFailed),
    Case("non-canonical-base64-signature", _non_canonical_signature, InvalidRequest),
    Case("signature-too-long", lambda: _with_signature(_good(EC), bytes(2000)), InvalidRequest),
    # --- keys and algorithms ---
    Case("unknown-kid", lambda: jws_compact(header(EC, kid="nope"), claims(), EC), UnknownKeyID),
    Case("kid-of-another-key-type", lambda: jws_compact(header(EC, kid=RSA.kid), claims(), EC), UnknownKeyID),
    Case(
        "alg-none",
        lambda: jws_compact({"alg": "none", "typ": "secevent+jwt"}, claims(), None),
        InvalidRequest,
    ),
    Case(
        "alg-None-mixed-case",
        lambda: jws_compact({"alg": "None", "typ": "secevent+jwt", "kid": EC.kid}, claims(), None),
        InvalidRequest,
    ),
    Case("alg-missing", lambda: jws_compact(header(EC, alg=...), claims(), None), InvalidRequest),
    Case("alg-not-a-string", lambda: _raw_parts(b'{"alg":256,"typ":"secevent+jwt"}', b"{}"), InvalidRequest),
    Case(
        "hs256-with-rsa-public-pem", lambda: _hs256_with_public_key(RSA.key.as_pem(private=False)), InvalidKey
    ),
    Case(
        "hs256-with-ec-public-pem", lambda: _hs256_with_public_key(EC.key.as_pem(private=False)), InvalidKey
    ),
    Case(
        "hs256-with-public-jwk-json",
        lambda: _hs256_with_public_key(json.dumps(RSA.public_jwk()).encode()),
        InvalidKey,
    ),
    Case(
        "alg-not-allowed-rs512",
        lambda: _raw_parts(b'{"alg":"RS512","typ":"secevent+jwt"}', b"{}"),
        InvalidKey,
    ),
    Case("alg-unknown", lambda: _raw_parts(b'{"alg":"XYZ","typ":"secevent+jwt"}', b"{}"), InvalidKey),
    # --- header ---
    Case("typ-jwt", lambda: jws_compact(header(EC, typ="JWT"), claims(), EC), InvalidRequest),
    Case("typ-missing", lambda: jws_compact(header(EC, typ=...), claims(), EC), InvalidRequest),
    Case("crit", lambda: jws_compact(header(EC, crit=["x"], x=1), claims(), EC), InvalidRequest),
    Case("b64-false", lambda: jws_compact(header(EC, b64=False, crit=["b64"]), claims(), EC), InvalidRequest),
    Case("kid-not-a-string", lambda: jws_compact(header(EC, kid=["a"]), claims(), EC), InvalidRequest),
    Case("header-not-json", lambda: _raw_parts(b"{alg:ES256}", b"{}"), InvalidRequest),
    Case("header-json-array", lambda: _raw_parts(b'["ES256"]', b"{}"), InvalidRequest),
    Case("header-too-long", lambda: jws_compact(header(EC, pad="x" * 2000), claims(), EC), InvalidRequest),
    # --- claims ---
    Case("wrong-iss", lambda: jws_compact(header(EC), claims(iss="https://evil.example"), EC), InvalidIssuer),
    Case(
        "iss-with-trailing-slash",
        lambda: jws_compact(header(EC), claims(iss="https://transmitter.example.com/"), EC),
        InvalidIssuer,
    ),
    Case(
        "wrong-aud", lambda: jws_compact(header(EC), claims(aud="https://evil.example"), EC), InvalidAudience
    ),
    Case("sub-present", lambda: jws_compact(header(EC), claims(sub="user"), EC), InvalidRequest),
    Case("exp-present", lambda: jws_compact(header(EC), claims(exp=NOW + 60), EC), InvalidRequest),
    Case("iat-far-future", lambda: jws_compact(header(EC), claims(iat=NOW + 86400), EC), InvalidRequest),
    Case("iat-missing", lambda: jws_compact(header(EC), claims(iat=...), EC), InvalidRequest),
    Case(
        "two-events",
        lambda: jws_compact(
            header(EC),
            claims(
                events={
                    "https://schemas.openid.net/secevent/caep/event-type/session-revoked": {},
                    SECOND: {"credential_type": "password", "change_type": "update"},
                }
            ),
            EC,
        ),
        InvalidRequest,
    ),
    Case("no-events", lambda: jws_compact(header(EC), claims(events={}), EC), InvalidRequest),
    Case(
        "bad-event-payload",
        lambda: jws_compact(header(EC), claims(events={SECOND: {"credential_type": "password"}}), EC),
        InvalidEvent,
    ),
    Case(
        "bad-subject", lambda: jws_compact(header(EC), claims(sub_id={"format": "email"}), EC), InvalidSubject
    ),
    Case("no-subject", lambda: jws_compact(header(EC), claims(sub_id=...), EC), InvalidRequest),
    Case("payload-not-json", lambda: jws_compact(header(EC), b"not json", EC), InvalidRequest),
    Case("payload-json-array", lambda: jws_compact(header(EC), b"[1,2]", EC), InvalidRequest),
    Case("payload-nan", lambda: jws_compact(header(EC), b'{"iat":NaN}', EC), InvalidRequest),
    Case(
        "payload-deep-nesting", lambda: jws_compact(header(EC), b"[" * 5000 + b"]" * 5000, EC), InvalidRequest
    ),
    Case("payload-not-utf8", lambda: jws_compact(header(EC), b'{"iss":"\xff"}', EC), InvalidRequest),
    # --- structure ---
    Case("empty", lambda: "", InvalidRequest),
    Case("two-parts", lambda: ".".join(_good(EC).split(".")[:2]), InvalidRequest),
    Case("four-parts", lambda: _good(EC) + ".xyz", InvalidRequest),
    Case("jwe-five-parts", lambda: "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d", InvalidRequest),
    Case("padded-base64", lambda: _good(EC).replace(".", "=.", 1), InvalidRequest),
    Case(
        "standard-base64-alphabet",
        lambda: _good(EC).replace("-", "+").replace("_", "/") + "+/",
        InvalidRequest,
    ),
    Case("non-ascii", lambda: "é" + _good(EC), InvalidRequest),
    Case("non-ascii-bytes", lambda: b"\xff" + _good(EC).encode(), InvalidRequest),
    Case("json-instead-of-compact", lambda: json.dumps(claims()), InvalidRequest),
    Case("oversized", lambda: jws_compact(header(EC), claims(pad="x" * 70_000), EC), SETTooLarge),
]


@pytest.fixture(scope="module")
def check():  # type: ignore[no-untyped-def]
    return verifier(RSA, EC, OKP)


def test_the_valid_base_case_verifies(check) -> None:  # type: ignore[no-untyped-def]
    for key in (RSA, EC, OKP):
        assert check.verify(_good(key)).jti == "jti-1"


def test_case_names_are_unique() -> None:
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_hostile_set_is_refused_with_its_error_class(case: Case, check) -> None:  # type: ignore[no-untyped-def]
    token = case.build()
    with pytest.raises(SETError) as info:
        check.verify(token)
    assert type(info.value) is case.error, f"{case.name}: got {type(info.value).__name__}: {info.value}"
    body = info.value.to_body()
    assert body["err"] == case.error.err and body["description"]
