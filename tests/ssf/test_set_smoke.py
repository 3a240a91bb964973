from __future__ import annotations

import pytest

from ssf.errors import InvalidAudience, InvalidIssuer
from ssf.events import SessionRevoked
from ssf.keys import KeySet, PublicKeys, generate_signing_key
from ssf.set import SecurityEventToken, SETVerifier, sign_set
from ssf.subjects import Subject


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
def test_sign_then_verify_round_trips(alg: str) -> None:
    key = generate_signing_key(alg)
    token = SecurityEventToken.create(
        iss="https://t.example",
        aud="https://r.example",
        sub_id=Subject.email("a@example.com"),
        event=SessionRevoked(initiating_entity="policy"),
        txn="t1",
    )
    verifier = SETVerifier(
        issuer="https://t.example", audience="https://r.example", keys=PublicKeys.from_key_set(KeySet([key]))
    )
    assert verifier.verify(sign_set(token, key)) == token


def test_wrong_issuer_and_audience_are_refused() -> None:
    key = generate_signing_key("ES256")
    token = SecurityEventToken.create(
        iss="https://t.example", aud="https://r.example", sub_id=Subject.opaque("x"), event=SessionRevoked()
    )
    compact = sign_set(token, key)
    keys = PublicKeys.from_key_set(KeySet([key]))
    with pytest.raises(InvalidIssuer):
        SETVerifier(issuer="https://other.example", keys=keys).verify(compact)
    with pytest.raises(InvalidAudience):
        SETVerifier(issuer="https://t.example", audience="https://x.example", keys=keys).verify(compact)
