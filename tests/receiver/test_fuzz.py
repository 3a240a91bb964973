"""Hypothesis: nothing a peer sends gets a 500 or an unexpected exception."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st
from joserfc import jws

from receiver.client import TransmitterError
from receiver.core import Receiver
from receiver.poll import parse_poll_response
from receiver.settings import ReceiverSettings
from receiver.store import MemoryStore
from ssf.errors import SET_ERROR_CODES
from ssf.events import CAEP_EVENTS, RISC_EVENTS
from ssf.keys import KeySet, PublicKeys, generate_signing_key
from tests.receiver.conftest import Running

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
subjects = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"format": st.sampled_from(["opaque", "email", "iss_sub", "complex", "x"])},
        optional={
            "id": json_values,
            "email": json_values,
            "iss": json_values,
            "sub": json_values,
            "user": json_values,
        },
    ),
)


def claims_strategy(iss: str, aud: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "iss": st.sampled_from([iss, "https://x.example"]) | json_values,
            "jti": st.text(min_size=1, max_size=12) | json_values,
            "iat": st.just(int(time.time())) | json_values,
            "aud": st.just(aud) | json_values,
            "sub_id": subjects,
            "events": st.dictionaries(
                st.sampled_from(sorted(CAEP_EVENTS | RISC_EVENTS)) | st.text(max_size=8),
                json_values,
                max_size=2,
            )
            | json_values,
            "sub": json_values,
            "exp": json_values,
            "txn": json_values,
        },
    )


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_signed_garbage_claims_are_202_or_400(rcv: Running, data: st.DataObject) -> None:
    fake = rcv.fake
    claims = data.draw(claims_strategy(fake.issuer, fake.stream_aud))
    key = fake.keys.active
    header = data.draw(
        st.sampled_from(
            [
                {"alg": key.alg, "typ": "secevent+jwt", "kid": key.kid},
                {"alg": key.alg, "kid": key.kid},
                {"alg": key.alg, "typ": "JWT", "kid": key.kid},
            ]
        )
    )
    token = jws.serialize_compact(header, json.dumps(claims).encode(), key.key, algorithms=[key.alg])
    resp = rcv.push(token)
    assert resp.status_code in (202, 400), resp.text
    if resp.status_code == 400:
        assert resp.json()["err"] in SET_ERROR_CODES


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_arbitrary_push_bodies_never_500(rcv: Running, body: bytes) -> None:
    resp = rcv.pusher.post(
        "/ssf/push",
        content=body,
        headers={
            "Authorization": rcv.receiver.push_authorization or "",
            "Content-Type": "application/secevent+jwt",
        },
    )
    assert resp.status_code == 400 and resp.json()["err"] in SET_ERROR_CODES


_KEY = generate_signing_key("ES256", kid="k")


def _receiver() -> Receiver:
    rcv = Receiver(ReceiverSettings(database_url="memory"), store=MemoryStore())
    rcv.configure("https://t", PublicKeys.from_key_set(KeySet([_KEY])), audience="a")
    return rcv


@settings(max_examples=150)
@given(
    body=json_values | st.fixed_dictionaries({"sets": json_values}, optional={"moreAvailable": json_values})
)
def test_arbitrary_poll_bodies_are_handled(body: Any) -> None:
    rcv = _receiver()
    try:
        sets, more = parse_poll_response(body)
    except TransmitterError:
        return
    assert isinstance(more, bool)
    acks, errs = asyncio.run(rcv.receive_batch(sets))
    assert set(acks) | set(errs) == set(sets)
    assert all(e["err"] in SET_ERROR_CODES for e in errs.values())
