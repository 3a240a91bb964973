"""Keys: generate, load (PEM and JWK), key sets with rotation, public JWKS, verification keys."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwk

from ssf.errors import KeyMaterialError
from ssf.keys import (
    MIN_RSA_BITS,
    SIGNING_ALGORITHMS,
    KeySet,
    PublicKeys,
    SigningKey,
    generate_signing_key,
    load_signing_key,
)

from .helpers import b64url, signing_key

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
ALGS = ["RS256", "PS256", "ES256", "EdDSA"]


@pytest.mark.parametrize("alg", ALGS)
def test_generated_key_fits_its_algorithm(alg: str) -> None:
    key = signing_key(alg)
    assert key.alg == alg and key.kid == f"test-{alg.lower()}" and key.key.is_private
    assert key.key.key_type == SIGNING_ALGORITHMS[alg]
    if isinstance(key.key, jwk.RSAKey):
        assert key.key.raw_value.key_size == MIN_RSA_BITS == 2048
    elif isinstance(key.key, jwk.ECKey):
        assert key.key.curve_name == "P-256"
    else:
        assert key.key.curve_name == "Ed25519"


def test_generate_defaults_and_errors() -> None:
    a, b = generate_signing_key("ES256", created_at=5), generate_signing_key("ES256")
    assert a.kid != b.kid and len(a.kid) >= 16 and a.created_at == 5 and a.retired_at is None
    for bad in ("HS256", "none", "ES384", ""):
        with pytest.raises(KeyMaterialError):
            generate_signing_key(bad)


@pytest.mark.parametrize("alg", ALGS)
def test_public_jwk_never_holds_private_material(alg: str) -> None:
    key = signing_key(alg)
    public = key.public_jwk()
    assert not PRIVATE_MEMBERS & set(public)
    assert public["kid"] == key.kid and public["alg"] == alg and public["use"] == "sig"
    assert "d" in key.private_jwk()


@pytest.mark.parametrize("alg", ALGS)
def test_private_jwk_round_trip(alg: str) -> None:
    key = SigningKey("k1", alg, signing_key(alg).key, created_at=10, retired_at=20)
    for form in (key.private_jwk(), json.dumps(key.private_jwk()), json.dumps(key.private_jwk()).encode()):
        loaded = load_signing_key(form)
        assert (loaded.kid, loaded.alg, loaded.created_at, loaded.retired_at) == ("k1", alg, 10, 20)
        assert loaded.public_jwk() == key.public_jwk()


@pytest.mark.parametrize("alg", ALGS)
def test_pem_round_trip(alg: str) -> None:
    key = signing_key(alg)
    pem = key.private_pem()
    assert pem.startswith(b"-----BEGIN")
    loaded = load_signing_key(pem, alg=alg, kid="from-pem")
    assert loaded.alg == alg and loaded.kid == "from-pem"
    assert {**loaded.public_jwk(), "kid": key.kid} == key.public_jwk()
    default = load_signing_key(pem.decode())
    assert default.alg == {"RS256": "RS256", "PS256": "RS256", "ES256": "ES256", "EdDSA": "EdDSA"}[alg]
    assert default.kid == key.key.thumbprint()  # RFC 7638 thumbprint when no kid is given


def test_traditional_openssl_pem_loads() -> None:
    raw = signing_key("ES256").key.get_op_key("sign")
    pem = raw.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert load_signing_key(pem).alg == "ES256"


def _pem(private: Any) -> bytes:
    return bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


@pytest.mark.parametrize(
    ("material", "kwargs"),
    [
        (b"not a key", {}),
        ("{not json", {}),
        ("[1, 2]", {}),
        ({"kty": "EC"}, {}),
        ({"kty": "oct", "k": "c2VjcmV0"}, {}),
        (lambda: signing_key("ES256").public_jwk(), {}),
        (lambda: signing_key("RS256").key.as_pem(private=False), {}),
        (lambda: _pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)), {}),
        (lambda: _pem(ec.generate_private_key(ec.SECP384R1())), {}),
        (lambda: jwk.OKPKey.generate_key("X25519").as_dict(private=True), {}),
        (lambda: signing_key("RS256").private_jwk(), {"alg": "ES256"}),
        (lambda: signing_key("ES256").private_jwk(), {"alg": "EdDSA"}),
        (lambda: signing_key("ES256").private_jwk(), {"alg": "HS256"}),
        (lambda: {**signing_key("ES256").private_jwk(), "kid": 5}, {}),
        (lambda: {**signing_key("ES256").private_jwk(), "created_at": "yesterday"}, {}),
        (
            lambda: (
                signing_key("ES256")
                .key.get_op_key("sign")
                .private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.BestAvailableEncryption(b"pw"),
                )
            ),
            {},
        ),
    ],
)
def test_unusable_key_material_is_refused(material: Any, kwargs: dict[str, Any]) -> None:
    data = material() if callable(material) else material
    with pytest.raises(KeyMaterialError) as info:
        load_signing_key(data, **kwargs)
    assert info.value.status_code == 500 and info.value.err == "invalid_key"


def test_symmetric_key_has_no_pem() -> None:
    key = SigningKey("h", "HS256", jwk.OctKey.import_key(b"secret-secret-secret-secret-1234"))
    with pytest.raises(KeyMaterialError):
        key.private_pem()


def test_a_symmetric_key_never_reaches_the_public_jwks() -> None:
    """An HMAC secret is shared out of band; its JWK is the secret itself ("k")."""
    hmac = SigningKey("h", "HS256", jwk.OctKey.import_key(b"secret-secret-secret-secret-1234"))
    with pytest.raises(KeyMaterialError):
        hmac.public_jwk()
    es = signing_key("ES256")
    published = KeySet([hmac, es]).jwks()
    assert [k["kid"] for k in published["keys"]] == [es.kid]
    assert all("k" not in k for k in published["keys"])  # no secret member anywhere


# --- KeySet ------------------------------------------------------------------------------


def test_key_set_rotation_and_pruning() -> None:
    k1 = generate_signing_key("ES256", kid="k1", created_at=0)
    ks = KeySet([k1])
    assert ks.active is k1
    k2 = generate_signing_key("EdDSA", kid="k2", created_at=100)
    ks.rotate(k2, now=100)
    assert ks.active is k2
    assert [(k.kid, k.retired_at) for k in ks.keys] == [("k1", 100), ("k2", None)]
    assert [k["kid"] for k in ks.jwks()["keys"]] == ["k1", "k2"]  # old key still verifies
    k3 = generate_signing_key("ES256", kid="k3")
    ks.rotate(k3, now=200)
    assert [(k.kid, k.retired_at) for k in ks.keys] == [("k1", 100), ("k2", 200), ("k3", None)]
    dropped = KeySet(list(ks.keys)).prune(now=250, overlap=100)
    assert [k.kid for k in dropped] == ["k1"]
    ks.prune(now=1000, overlap=100)
    assert [k.kid for k in ks.keys] == ["k3"]


def test_empty_or_fully_retired_key_set_has_no_active_key() -> None:
    with pytest.raises(KeyMaterialError):
        _ = KeySet().active
    retired = SigningKey("r", "ES256", signing_key("ES256").key, retired_at=1)
    with pytest.raises(KeyMaterialError):
        _ = KeySet([retired]).active


def test_key_set_jwks_is_public_and_private_jwks_round_trips() -> None:
    ks = KeySet([signing_key("RS256"), signing_key("ES256")])
    ks.rotate(signing_key("EdDSA"), now=50)
    public = ks.jwks()
    assert all(not PRIVATE_MEMBERS & set(k) for k in public["keys"])
    restored = KeySet.from_private_jwks(json.loads(json.dumps(ks.private_jwks())))
    assert [(k.kid, k.alg, k.retired_at) for k in restored.keys] == [
        (k.kid, k.alg, k.retired_at) for k in ks.keys
    ]
    assert restored.jwks() == public
    with pytest.raises(KeyMaterialError):
        KeySet.from_private_jwks({"keys": "nope"})
    with pytest.raises(KeyMaterialError):
        KeySet.from_private_jwks(public)  # public keys cannot sign


# --- PublicKeys ---------------------------------------------------------------------------


def test_public_keys_find_by_kid_and_alg() -> None:
    rs, es, ed = signing_key("RS256"), signing_key("ES256"), signing_key("EdDSA")
    keys = PublicKeys.from_key_set(KeySet([rs, es, ed]))
    assert len(keys) == 3 and keys.kids() == {rs.kid, es.kid, ed.kid}
    assert keys.find(es.kid, "ES256") is not None
    assert keys.find(es.kid, "RS256") is None  # kid exists but does not fit the alg
    assert keys.find(rs.kid, "PS256") is None  # the JWK declares alg RS256
    assert keys.find("missing", "ES256") is None
    assert keys.find(None, "EdDSA") is not None  # one EdDSA key: unambiguous without a kid
    undeclared = PublicKeys.from_jwks({"keys": [{k: v for k, v in rs.public_jwk().items() if k != "alg"}]})
    assert undeclared.find(rs.kid, "PS256") is not None and undeclared.find(rs.kid, "RS256") is not None


def test_public_keys_without_kid() -> None:
    es = signing_key("ES256")
    doc = {"keys": [{k: v for k, v in es.public_jwk().items() if k != "kid"}]}
    keys = PublicKeys.from_jwks(doc)
    assert len(keys) == 1 and keys.kids() == frozenset()
    assert keys.find(None, "ES256") is not None and keys.find("any", "ES256") is None


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        {"keys": {}},
        {"keys": ["x"]},
        {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]},
        {"keys": [{"kty": "EC", "crv": "P-256"}]},
        {"keys": [{"kty": "nope"}]},
        "private",
    ],
)
def test_bad_jwks_is_refused(doc: Any) -> None:
    if doc == "private":
        doc = {"keys": [signing_key("ES256").private_jwk()]}
    with pytest.raises(KeyMaterialError):
        PublicKeys.from_jwks(doc)


def test_jwks_members_that_cannot_verify_are_skipped_or_unusable() -> None:
    es = signing_key("ES256")
    enc = {**es.public_jwk(), "kid": "enc", "use": "enc"}
    x25519 = {**jwk.OKPKey.generate_key("X25519").as_dict(private=False), "kid": "x"}
    numbers = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key().public_numbers()
    small = {
        "kty": "RSA",
        "n": b64url(numbers.n.to_bytes(128, "big")),
        "e": b64url(numbers.e.to_bytes(3, "big")),
    }
    p384 = jwk.ECKey.generate_key("P-384").as_dict(private=False)
    keys = PublicKeys.from_jwks(
        {"keys": [enc, x25519, {**small, "kid": "small"}, {**p384, "kid": "p384"}, es.public_jwk()]}
    )
    assert "enc" not in keys.kids()
    assert keys.find("x", "EdDSA") is None
    assert keys.find("small", "RS256") is None  # RSA under 2048 bits verifies nothing
    assert keys.find("p384", "ES256") is None
    assert keys.find(es.kid, "ES256") is not None
