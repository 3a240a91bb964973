"""Signing keys, key sets with rotation, and public JWKS.

Sign with the one active key; keep older keys for verification only until every SET they
signed has been delivered (like cryptography's MultiFernet). The public JWKS never holds
private material.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from joserfc import jwk
from joserfc.errors import JoseError

from ssf.errors import KeyMaterialError

__all__ = [
    "SIGNING_ALGORITHMS",
    "KeySet",
    "PublicKeys",
    "SigningKey",
    "generate_signing_key",
    "load_signing_key",
]

AnyKey = jwk.RSAKey | jwk.ECKey | jwk.OKPKey | jwk.OctKey
#: Asymmetric algorithms a transmitter may sign with; RS256 is the CAEP-interop default.
SIGNING_ALGORITHMS: Final[dict[str, str]] = {"RS256": "RSA", "PS256": "RSA", "ES256": "EC", "EdDSA": "OKP"}
MIN_RSA_BITS: Final = 2048


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key with its algorithm and key id; ``retired_at`` marks verify-only keys."""

    kid: str
    alg: str
    key: AnyKey
    created_at: int = 0
    retired_at: int | None = None

    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWK. A symmetric key has none: its JWK *is* the secret."""
        if isinstance(self.key, jwk.OctKey):
            raise KeyMaterialError("a symmetric key has no public form")
        data = dict(self.key.as_dict(private=False))
        data.update({"kid": self.kid, "alg": self.alg, "use": "sig"})
        return data

    def private_jwk(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.key.as_dict(private=True))
        data.update({"kid": self.kid, "alg": self.alg, "created_at": self.created_at})
        if self.retired_at is not None:
            data["retired_at"] = self.retired_at
        return data

    def private_pem(self) -> bytes:
        if isinstance(self.key, jwk.OctKey):
            raise KeyMaterialError("symmetric keys have no PEM form")
        return self.key.as_pem(private=True)


def generate_signing_key(alg: str = "RS256", *, kid: str | None = None, created_at: int = 0) -> SigningKey:
    """A fresh key for ``alg``; RSA keys are 2048 bits (CAEP interop §2.6 minimum)."""
    kty = SIGNING_ALGORITHMS.get(alg)
    key: AnyKey
    if kty == "RSA":
        key = jwk.RSAKey.generate_key(MIN_RSA_BITS)
    elif kty == "EC":
        key = jwk.ECKey.generate_key("P-256")
    elif kty == "OKP":
        key = jwk.OKPKey.generate_key("Ed25519")
    else:
        raise KeyMaterialError(f"unsupported signing algorithm {alg!r}")
    return SigningKey(kid or secrets.token_urlsafe(12), alg, key, created_at)


def _default_alg(key: AnyKey) -> str:
    if isinstance(key, jwk.RSAKey):
        return "RS256"
    if isinstance(key, jwk.ECKey):
        return "ES256"
    if isinstance(key, jwk.OKPKey):
        return "EdDSA"
    raise KeyMaterialError("symmetric keys cannot sign SETs here")


def load_signing_key(
    data: str | bytes | Mapping[str, Any], *, alg: str | None = None, kid: str | None = None
) -> SigningKey:
    """Load a private key from PEM text (PKCS#8 or traditional, unencrypted) or a JWK
    (dict or JSON text). The algorithm defaults to the JWK's ``alg`` or the key type's
    usual one (RS256, ES256, EdDSA); it must fit the key (ES256 needs P-256, EdDSA an
    Ed25519/Ed448 key, RSA at least 2048 bits)."""
    try:
        if isinstance(data, Mapping) or data.lstrip()[:1] in ("{", b"{"):
            obj = dict(data) if isinstance(data, Mapping) else json.loads(data)
            if not isinstance(obj, dict):
                raise ValueError("a JWK is a JSON object")
            created = int(obj.pop("created_at", 0))
            retired = obj.pop("retired_at", None)
            if obj.get("kty") == "oct":
                raise KeyMaterialError("symmetric keys cannot sign SETs here")
            if obj.get("kty") == "RSA" and _rsa_bits(obj) < MIN_RSA_BITS:
                raise KeyMaterialError(f"RSA keys need at least {MIN_RSA_BITS} bits")
            key = jwk.import_key(obj)
            kid = kid or obj.get("kid")
            alg = alg or obj.get("alg")
        else:
            created, retired = 0, None
            key = _import_pem(data)
    except (JoseError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyMaterialError("key material could not be loaded") from exc
    if not isinstance(key, jwk.RSAKey | jwk.ECKey | jwk.OKPKey) or not key.is_private:
        raise KeyMaterialError("a private RSA, EC or OKP key is needed to sign")
    if kid is not None and (not isinstance(kid, str) or not kid):
        raise KeyMaterialError("a key id must be a non-empty string")
    alg = alg or _default_alg(key)
    if not isinstance(alg, str) or alg not in _verifiable_algs(key, None):
        raise KeyMaterialError(f"algorithm {alg} does not fit this {key.key_type} key")
    return SigningKey(
        kid or key.thumbprint(), alg, key, created, int(retired) if retired is not None else None
    )


def _rsa_bits(member: Mapping[str, Any]) -> int:
    """Size of a JWK's RSA modulus, checked before import (joserfc warns on weak keys)."""
    n = member.get("n")
    if not isinstance(n, str):
        return 0
    try:
        return int.from_bytes(base64.urlsafe_b64decode(n + "=" * (-len(n) % 4))).bit_length()
    except ValueError:
        return 0


def _import_pem(data: str | bytes) -> AnyKey:
    """A private PEM key as the joserfc key class of its type (no implicit-type guessing)."""
    pem = data.encode() if isinstance(data, str) else data
    raw = serialization.load_pem_private_key(pem, password=None)
    if isinstance(raw, rsa.RSAPrivateKey):
        if raw.key_size < MIN_RSA_BITS:
            raise KeyMaterialError(f"RSA keys need at least {MIN_RSA_BITS} bits")
        return jwk.RSAKey.import_key(pem)
    if isinstance(raw, ec.EllipticCurvePrivateKey):
        return jwk.ECKey.import_key(pem)
    if isinstance(raw, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return jwk.OKPKey.import_key(pem)
    raise ValueError("unsupported private key type")


@dataclass(slots=True)
class KeySet:
    """One active signing key and older verification-only keys."""

    keys: list[SigningKey] = field(default_factory=list)

    @property
    def active(self) -> SigningKey:
        for key in reversed(self.keys):
            if key.retired_at is None:
                return key
        raise KeyMaterialError("no active signing key")

    def rotate(self, new: SigningKey, *, now: int) -> None:
        """Make ``new`` the signing key; earlier keys stay published for verification."""
        self.keys = [k if k.retired_at is not None else _retire(k, now) for k in self.keys]
        self.keys.append(new)

    def prune(self, *, now: int, overlap: int) -> list[SigningKey]:
        """Drop keys retired more than ``overlap`` seconds ago; returns what was dropped."""
        keep = [k for k in self.keys if k.retired_at is None or now - k.retired_at < overlap]
        dropped = [k for k in self.keys if k not in keep]
        self.keys = keep
        return dropped

    def jwks(self) -> dict[str, Any]:
        """The public JWKS: every key that may still verify a SET in flight. A symmetric
        (HMAC) key is shared out of band and never published."""
        return {"keys": [k.public_jwk() for k in self.keys if not isinstance(k.key, jwk.OctKey)]}

    def private_jwks(self) -> dict[str, Any]:
        return {"keys": [k.private_jwk() for k in self.keys]}

    @classmethod
    def from_private_jwks(cls, data: Mapping[str, Any]) -> KeySet:
        keys = data.get("keys")
        if not isinstance(keys, list):
            raise KeyMaterialError("a JWKS needs a 'keys' array")
        return cls([load_signing_key(k) for k in keys])


def _retire(key: SigningKey, now: int) -> SigningKey:
    return SigningKey(key.kid, key.alg, key.key, key.created_at, now)


def _verifiable_algs(key: AnyKey, declared: str | None) -> frozenset[str]:
    """The signing algorithms this key fits: its type, curve, size and declared ``alg``."""
    if isinstance(key, jwk.RSAKey):
        size = key.raw_value.key_size
        algs = {"RS256", "PS256"} if size >= MIN_RSA_BITS else set()
    elif isinstance(key, jwk.ECKey):
        algs = {"ES256"} if key.curve_name == "P-256" else set()
    elif isinstance(key, jwk.OKPKey):
        algs = {"EdDSA"} if key.curve_name in ("Ed25519", "Ed448") else set()
    else:
        algs = set()
    if declared is not None:
        algs &= {declared}
    return frozenset(algs)


class PublicKeys:
    """Imported verification keys by ``kid``, built once per JWKS (import costs 20-40 µs a key).

    For every key the algorithms it can verify are worked out at import (key type, curve,
    declared ``alg``), so :meth:`find` is a dictionary lookup on the hot path.
    """

    __slots__ = ("_by_kid", "_keyless")

    def __init__(self, keys: Iterable[tuple[str | None, str | None, AnyKey]] = ()) -> None:
        self._by_kid: dict[str, tuple[frozenset[str], AnyKey]] = {}
        self._keyless: list[tuple[frozenset[str], AnyKey]] = []
        for kid, alg, key in keys:
            entry = (_verifiable_algs(key, alg), key)
            if kid:
                self._by_kid[kid] = entry
            else:
                self._keyless.append(entry)

    @classmethod
    def from_jwks(cls, jwks: object) -> PublicKeys:
        """Import a JWKS document; private or symmetric members are refused outright.

        Members for another ``use`` (``enc``) or of key types that cannot verify a SET
        (e.g. X25519) are skipped.
        """
        if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list):
            raise KeyMaterialError("a JWKS needs a 'keys' array")
        imported: list[tuple[str | None, str | None, AnyKey]] = []
        for item in jwks["keys"]:
            if not isinstance(item, Mapping):
                raise KeyMaterialError("a JWKS member must be an object")
            if item.get("kty") == "oct":
                raise KeyMaterialError("symmetric keys have no place in a public JWKS")
            if item.get("use", "sig") != "sig":
                continue
            if item.get("kty") == "RSA" and _rsa_bits(item) < MIN_RSA_BITS:
                continue  # too weak to verify SETs (CAEP interop §2.6); never imported
            try:
                key = jwk.import_key(dict(item))
            except (JoseError, ValueError, TypeError) as exc:
                raise KeyMaterialError("a JWKS member could not be imported") from exc
            if key.is_private:
                raise KeyMaterialError("a public JWKS must not hold private keys")
            if isinstance(key, jwk.OctKey):
                raise KeyMaterialError("symmetric keys have no place in a public JWKS")
            kid, alg = item.get("kid"), item.get("alg")
            imported.append(
                (kid if isinstance(kid, str) else None, alg if isinstance(alg, str) else None, key)
            )
        return cls(imported)

    @classmethod
    def from_key_set(cls, keys: KeySet) -> PublicKeys:
        return cls.from_jwks(keys.jwks())

    def find(self, kid: str | None, alg: str) -> AnyKey | None:
        """The key for a header's ``kid`` and ``alg``; without a kid, the only fitting key."""
        if kid is not None:
            hit = self._by_kid.get(kid)
            if hit is None or alg not in hit[0]:
                return None
            return hit[1]
        fits = [k for algs, k in [*self._by_kid.values(), *self._keyless] if alg in algs]
        return fits[0] if len(fits) == 1 else None

    def kids(self) -> frozenset[str]:
        return frozenset(self._by_kid)

    def __len__(self) -> int:
        return len(self._by_kid) + len(self._keyless)
