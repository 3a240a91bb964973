"""Shared test helpers for the ssf core: fixtures on disk, keys made once, a hand-rolled JWS.

The hand-rolled signer uses ``cryptography`` directly (not our code, not joserfc), so tests
can craft any header and payload — including broken ones — with a valid signature.
"""

from __future__ import annotations

import base64
import json
from functools import cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ssf.keys import KeySet, PublicKeys, SigningKey, generate_signing_key
from ssf.set import SETVerifier

FIXTURES = Path(__file__).parent / "fixtures"
ISSUER = "https://transmitter.example.com"
AUDIENCE = "https://receiver.example.com/ssf"
NOW = 1_700_000_000


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@cache
def signing_key(alg: str, kid: str | None = None) -> SigningKey:
    """One key per (alg, kid) per test process: RSA generation is slow."""
    return generate_signing_key(alg, kid=kid or f"test-{alg.lower()}")


def public_keys(*keys: SigningKey) -> PublicKeys:
    return PublicKeys.from_key_set(KeySet(list(keys)))


def verifier(*keys: SigningKey, now: float = NOW + 10, **kwargs: Any) -> SETVerifier:
    kwargs.setdefault("issuer", ISSUER)
    kwargs.setdefault("audience", AUDIENCE)
    return SETVerifier(keys=public_keys(*keys), now=lambda: now, **kwargs)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def raw_signature(alg: str, key: SigningKey | bytes, signing_input: bytes) -> bytes:
    """The JWS signature over ``signing_input`` computed with ``cryptography`` alone."""
    if isinstance(key, bytes):
        import hmac

        return hmac.new(key, signing_input, "sha256").digest()
    private: Any = key.key.get_op_key("sign")
    if alg == "RS256":
        return bytes(private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256()))
    if alg == "PS256":
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        return bytes(private.sign(signing_input, pss, hashes.SHA256()))
    if alg == "ES256":
        r, s = decode_dss_signature(private.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    if alg == "EdDSA":
        return bytes(private.sign(signing_input))
    raise ValueError(alg)


def jws_compact(
    header: dict[str, Any], payload: bytes | dict[str, Any], key: SigningKey | bytes | None
) -> str:
    """A compact JWS of exactly this header and payload, signed with ``header['alg']``."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
    signing_input = f"{b64url_json(header)}.{b64url(body)}"
    if key is None:
        return signing_input + "."
    return signing_input + "." + b64url(raw_signature(header["alg"], key, signing_input.encode()))


def claims(**overrides: Any) -> dict[str, Any]:
    """A valid SSF claim set (session-revoked about an email subject), with overrides;
    an override of ``...`` removes the claim."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "jti": "jti-1",
        "iat": NOW,
        "aud": AUDIENCE,
        "sub_id": {"format": "email", "email": "user@example.com"},
        "events": {
            "https://schemas.openid.net/secevent/caep/event-type/session-revoked": {
                "initiating_entity": "policy",
                "reason_admin": {"en": "test"},
            }
        },
    }
    for name, value in overrides.items():
        if value is ...:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def header(key: SigningKey, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"alg": key.alg, "typ": "secevent+jwt", "kid": key.kid}
    for name, value in overrides.items():
        if value is ...:
            base.pop(name, None)
        else:
            base[name] = value
    return base
