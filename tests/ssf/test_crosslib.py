"""Interoperability: SETs signed by PyJWT verify here, ours verify in PyJWT and with bare
``cryptography``, and our public JWKS is consumable by another JOSE implementation."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ssf.events import CredentialChange, SessionRevoked
from ssf.keys import KeySet, PublicKeys
from ssf.set import SecurityEventToken, SETVerifier, sign_set
from ssf.subjects import Subject

from .helpers import AUDIENCE, ISSUER, signing_key

ALGS = ["RS256", "PS256", "ES256", "EdDSA"]
KEY_SET = KeySet([signing_key(alg) for alg in ALGS])


def _our_token() -> SecurityEventToken:
    return SecurityEventToken.create(
        iss=ISSUER,
        aud=AUDIENCE,
        sub_id=Subject.complex(user=Subject.email("jane@example.com"), tenant=Subject.opaque("t1")),
        event=CredentialChange(
            credential_type="fido2-roaming", change_type="create", reason_admin={"en": "x"}
        ),
        txn="8675309",
    )


@pytest.mark.parametrize("alg", ALGS)
def test_pyjwt_signed_set_verifies_here(alg: str) -> None:
    key = signing_key(alg)
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "jti": "pyjwt-1",
        "iat": now,
        "aud": [AUDIENCE],
        "sub_id": {"format": "iss_sub", "iss": ISSUER, "sub": "user-7"},
        "events": {SessionRevoked.event_type: {"initiating_entity": "admin", "event_timestamp": now}},
    }
    compact = jwt.encode(
        payload, key.key.get_op_key("sign"), algorithm=alg, headers={"typ": "secevent+jwt", "kid": key.kid}
    )
    verifier = SETVerifier(issuer=ISSUER, audience=AUDIENCE, keys=PublicKeys.from_key_set(KEY_SET))
    token = verifier.verify(compact)
    assert token.jti == "pyjwt-1" and token.sub_id == Subject.iss_sub(ISSUER, "user-7")
    assert token.event == SessionRevoked(initiating_entity="admin", event_timestamp=now)


@pytest.mark.parametrize("alg", ALGS)
def test_our_set_verifies_in_pyjwt_with_our_public_jwks(alg: str) -> None:
    key = signing_key(alg)
    token = _our_token()
    compact = sign_set(token, key)
    assert jwt.get_unverified_header(compact) == {"alg": alg, "typ": "secevent+jwt", "kid": key.kid}
    jwks = jwt.PyJWKSet.from_dict(json.loads(json.dumps(KEY_SET.jwks())))
    public = next(k for k in jwks.keys if k.key_id == key.kid)
    decoded = jwt.decode(
        compact,
        public.key,
        algorithms=[alg],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"require": ["iss", "iat", "jti"]},
    )
    assert decoded == token.claims()
    assert "sub" not in decoded and "exp" not in decoded


@pytest.mark.parametrize("alg", ALGS)
def test_our_signature_verifies_with_bare_cryptography(alg: str) -> None:
    key = signing_key(alg)
    compact = sign_set(_our_token(), key)
    head, body, sig = compact.split(".")
    signature = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    signing_input = f"{head}.{body}".encode()
    public = key.key.get_op_key("sign").public_key()
    if alg == "RS256":
        public.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "PS256":
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)  # RFC 7518 §3.5
        public.verify(signature, signing_input, pss, hashes.SHA256())
    elif alg == "ES256":
        assert len(signature) == 64  # JWS raw r||s, not DER
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        public.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
    else:
        public.verify(signature, signing_input)


def test_pyjwt_refuses_our_set_for_the_wrong_audience_too() -> None:
    key = signing_key("ES256")
    compact = sign_set(_our_token(), key)
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(
            compact, key.key.get_op_key("sign").public_key(), algorithms=["ES256"], audience="https://x"
        )
