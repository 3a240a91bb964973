"""ssf._jws: prepared signers/verifiers agree with joserfc's own algorithm implementations,
strict base64url, header segment and typ rules."""

from __future__ import annotations

import base64
import binascii
import warnings

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings, strategies as st
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import OctKey, RSAKey

from ssf._jws import (
    ALG_MODELS,
    b64url_decode,
    b64url_decode_segments,
    b64url_encode,
    header_segment,
    is_set_typ,
    signer,
    verifier,
)
from ssf.errors import InvalidKey, KeyMaterialError
from ssf.events import SessionRevoked
from ssf.keys import PublicKeys, SigningKey, generate_signing_key
from ssf.set import SecurityEventToken, SETVerifier, sign_set
from ssf.subjects import Subject

from .helpers import AUDIENCE, ISSUER, NOW, b64url_json, claims, jws_compact, public_keys, signing_key

ALGS = ["RS256", "PS256", "ES256", "EdDSA"]
MSG = b"eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJ4In0"


@pytest.mark.parametrize("alg", ALGS)
def test_prepared_primitives_interoperate_with_joserfc(alg: str) -> None:
    key = signing_key(alg)
    public = public_keys(key).find(key.kid, alg)
    assert public is not None
    model = ALG_MODELS[alg]
    ours = signer(key.key, alg)(MSG)
    assert model.verify(MSG, ours, public)  # joserfc accepts our signature
    theirs = model.sign(MSG, key.key)
    check = verifier(public, alg)
    assert check(MSG, theirs) and check(MSG, ours)  # we accept joserfc's and our own
    assert not check(MSG + b"x", ours)
    assert not check(MSG, ours[:-1] + bytes([ours[-1] ^ 1]))
    assert not check(MSG, b"")


def test_prepared_callables_are_cached_per_key_object() -> None:
    key = signing_key("ES256")
    assert signer(key.key, "ES256") is signer(key.key, "ES256")
    public = public_keys(key).find(key.kid, "ES256")
    assert public is not None
    assert verifier(public, "ES256") is verifier(public, "ES256")
    other = PublicKeys.from_jwks({"keys": [key.public_jwk()]}).find(key.kid, "ES256")
    assert other is not None and verifier(other, "ES256") is not verifier(public, "ES256")


def test_es256_signature_must_be_raw_r_s_of_the_curve_size() -> None:
    key = signing_key("ES256")
    public = public_keys(key).find(key.kid, "ES256")
    assert public is not None
    sig = signer(key.key, "ES256")(MSG)
    assert len(sig) == 64
    check = verifier(public, "ES256")
    assert not check(MSG, sig + b"\x00") and not check(MSG, sig[:63]) and not check(MSG, bytes(64))


def test_key_that_does_not_fit_the_algorithm_is_refused_at_preparation() -> None:
    with pytest.raises(JoseError):
        signer(signing_key("ES256").key, "RS256")
    with pytest.raises(JoseError):
        verifier(signing_key("EdDSA").key, "ES256")


def _small_rsa_key() -> RSAKey:
    """A 1024-bit RSA key, built around the loaders (which refuse it) and joserfc's warning."""
    pem = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        return RSAKey.import_key(pem)


def test_rsa_keys_under_2048_bits_neither_sign_nor_verify_however_they_were_built() -> None:
    small = _small_rsa_key()
    for alg in ("RS256", "PS256"):
        with pytest.raises(ValueError, match="2048"):
            signer(small, alg)
        with pytest.raises(ValueError, match="2048"):
            verifier(small, alg)
    token = SecurityEventToken.create(
        iss=ISSUER, aud=AUDIENCE, sub_id=Subject.opaque("s"), event=SessionRevoked()
    )
    with pytest.raises(KeyMaterialError, match="2048"):
        sign_set(token, SigningKey("small", "RS256", small))
    check = SETVerifier(issuer=ISSUER, keys=PublicKeys([("small", "RS256", small)]), now=lambda: NOW)
    with pytest.raises(InvalidKey):  # hand-built PublicKeys: refused when the key is prepared
        check.verify(
            jws_compact({"alg": "RS256", "typ": "secevent+jwt", "kid": "small"}, claims(), None) + "AA"
        )


def test_every_set_names_its_key() -> None:
    with pytest.raises(ValueError, match="kid"):
        header_segment("ES256", "")
    token = SecurityEventToken.create(
        iss=ISSUER, aud=AUDIENCE, sub_id=Subject.opaque("s"), event=SessionRevoked()
    )
    with pytest.raises(KeyMaterialError, match="kid"):
        sign_set(token, SigningKey("", "ES256", signing_key("ES256").key))


def test_hmac_goes_through_joserfc() -> None:
    key = OctKey.import_key(b"a shared secret that is long enough!")
    sig = signer(key, "HS256")(MSG)
    assert verifier(key, "HS256")(MSG, sig) and not verifier(key, "HS256")(MSG, sig[::-1])


@pytest.mark.parametrize("data", [b"", b"f", b"fo", b"foo", b"\xff\xfe\xfd\x00", bytes(range(256))])
def test_b64url_round_trip(data: bytes) -> None:
    encoded = b64url_encode(data)
    assert b"=" not in encoded and b"+" not in encoded and b"/" not in encoded
    assert b64url_decode(encoded) == data


@pytest.mark.parametrize(
    "bad", [b"a", b"ab=", b"a+b/", b"Zm9v!", b"Zm9=", b"Zh", b"Zm9vYg=", b"Zm 9v", b"Zm9\\u0076", b'YQ","YQ']
)
def test_b64url_decode_is_strict(bad: bytes) -> None:
    with pytest.raises(ValueError):
        b64url_decode(bad)


def _reference_decode(segment: bytes) -> bytes:
    """The textbook strict decoder: urlsafe alphabet only, no padding, canonical."""
    if any(c not in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" for c in segment):
        raise ValueError("alphabet")
    if len(segment) % 4 == 1:
        raise ValueError("length")
    data = base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=") != segment:
        raise ValueError("non-canonical trailing bits")
    return data


_VALID = st.binary(max_size=30).map(b64url_encode)
_B64ISH = (
    st.binary(max_size=40)
    | st.text(alphabet='ABYZabyz0189-_+/=. \\"\n\x00\x7fé', max_size=40).map(lambda t: t.encode("utf-8"))
    | st.builds(  # a valid segment with one character swapped, inserted or appended
        lambda seg, at, char, how: (
            seg[:at] + char + seg[at + (how == "swap") :] if how != "append" else seg + char
        ),
        _VALID,
        st.integers(0, 40),
        st.sampled_from([b"+", b"/", b"=", b"==", b'"', b"\\", b" ", b"\n", b"A", b"_", b"-"]),
        st.sampled_from(["swap", "insert", "append"]),
    )
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_B64ISH, min_size=1, max_size=3) | st.lists(_VALID, min_size=1, max_size=3))
def test_segment_decoder_agrees_with_the_reference(segments: list[bytes]) -> None:
    """The Rust-backed decoder accepts exactly what the strict reference accepts."""
    try:
        expected: tuple[bytes, ...] | None = tuple(_reference_decode(s) for s in segments)
    except (ValueError, binascii.Error):
        expected = None
    text = b".".join(segments)
    if not text.isascii() or any(b"." in s for s in segments):
        return  # the verifier hands over ASCII only, split at its own dots
    try:
        got: tuple[bytes, ...] | None = b64url_decode_segments(text)
    except ValueError:
        got = None
    assert got == expected
    if len(segments) == 1:
        try:
            single: bytes | None = b64url_decode(segments[0])
        except ValueError:
            single = None
        assert single == (None if expected is None else expected[0])


def test_header_segment_and_typ() -> None:
    key = generate_signing_key("ES256", kid="hk")
    assert (
        header_segment("ES256", "hk")
        == b64url_json({"alg": "ES256", "typ": "secevent+jwt", "kid": key.kid}).encode()
    )
    assert is_set_typ("secevent+jwt") and is_set_typ("Application/SecEvent+JWT")
    assert not is_set_typ("jwt") and not is_set_typ(None) and not is_set_typ(["secevent+jwt"])
