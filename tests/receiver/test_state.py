"""State and effects without HTTP: matching, idempotence, order tolerance, durable form."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, strategies as st

from receiver.effects import mutations_for
from receiver.policy import DefaultPolicy, RequestContext
from receiver.state import CUTOFF, DISABLED, Mutation, RevocationState, SubjectState, TokenSubjects
from ssf.events import CredentialChange, SessionRevoked
from ssf.set import SecurityEventToken
from ssf.subjects import Subject, subject_matches

ISS = "https://idp.example"
CTX = RequestContext("GET", "/", "127.0.0.1", "ua")


def token(**claims: Any) -> TokenSubjects:
    return TokenSubjects.from_claims({"iss": ISS, "sub": "u1", **claims})


def test_token_subjects_follow_the_contract() -> None:
    ts = token(email="Ann@Example.COM", sid="s1", device_id="d1", jti="j1")
    assert ts.members["user"] == (f"i:{ISS}\x1fu1", "e:Ann@example.com")
    assert ts.members["session"] == ("o:s1",)
    assert ts.members["device"] == ("o:d1",)
    assert f"j:{ISS}\x1fj1" in ts.keys


def test_email_event_hits_token_with_normalised_domain() -> None:
    s = RevocationState()
    s.apply(Mutation(Subject.email("ann@EXAMPLE.com"), DISABLED, True, 10))
    assert s.evaluate(token(email="ann@example.com"), 5).disabled
    assert not s.evaluate(token(email="other@example.com"), 5).disabled


def test_cutoff_is_inclusive_and_only_moves_forward() -> None:
    s = RevocationState()
    user = Subject.iss_sub(ISS, "u1")
    assert s.apply(Mutation(user, CUTOFF, 100.0, 100))
    assert not s.apply(Mutation(user, CUTOFF, 50.0, 50))  # older cutoff changes nothing
    assert s.evaluate(token(), 100).revoked
    assert not s.evaluate(token(), 101).revoked


def test_flags_keep_the_latest_fact_whatever_the_arrival_order() -> None:
    user = Subject.iss_sub(ISS, "u1")
    disable, enable = Mutation(user, DISABLED, True, 10), Mutation(user, DISABLED, False, 20)
    for order in ([disable, enable], [enable, disable]):
        s = RevocationState()
        s.apply_all(order)
        assert not s.evaluate(token(), 0).disabled


@pytest.mark.parametrize(
    ("event_subject", "hits"),
    [
        (Subject.complex(user=Subject.iss_sub(ISS, "u1"), device=Subject.opaque("d1")), True),
        (Subject.complex(user=Subject.iss_sub(ISS, "u1"), device=Subject.opaque("d2")), False),
        (Subject.complex(tenant=Subject.opaque("t9"), user=Subject.iss_sub(ISS, "u1")), True),  # wildcard
        (Subject.complex(group=Subject.opaque("g1")), False),  # nothing shared
        (Subject.opaque("d1"), True),  # a simple subject naming one member
        (Subject.opaque("zzz"), False),
    ],
)
def test_complex_matching_agrees_with_the_core_rule(event_subject: Subject, hits: bool) -> None:
    s = RevocationState()
    s.apply(Mutation(event_subject, DISABLED, True, 1))
    ts = token(device_id="d1")
    assert s.evaluate(ts, 0).disabled is hits
    token_subject = Subject.complex(user=Subject.iss_sub(ISS, "u1"), device=Subject.opaque("d1"))
    assert subject_matches(event_subject, token_subject) is hits
    assert s.affects(event_subject, ts) is hits


def test_session_revocation_is_total_and_user_revocation_is_a_cutoff() -> None:
    def set_for(subject: Subject, event: Any) -> SecurityEventToken:
        return SecurityEventToken.create(iss="https://t", aud="a", sub_id=subject, event=event, iat=500)

    (m,) = mutations_for(set_for(Subject.opaque("s1"), SessionRevoked(event_timestamp=100)))
    assert m.value == math.inf
    (m,) = mutations_for(set_for(Subject.iss_sub(ISS, "u1"), SessionRevoked(event_timestamp=100)))
    assert m.value == 100
    (m,) = mutations_for(
        set_for(Subject.email("a@b.c"), CredentialChange(credential_type="pin", change_type="delete"))
    )
    assert m.value == 500  # no event_timestamp: the SET's iat


def test_export_round_trips_through_json() -> None:
    s = RevocationState()
    subject = Subject.complex(user=Subject.iss_sub(ISS, "u1"), session=Subject.opaque("s1"))
    s.apply(Mutation(subject, CUTOFF, math.inf, 1))
    s.apply(Mutation(Subject.iss_sub(ISS, "u1"), "claims", {"role": "x"}, 2))
    s.apply(Mutation(Subject.opaque("s9"), CUTOFF, math.inf, 3))
    t = RevocationState()
    for subj in (subject, Subject.iss_sub(ISS, "u1"), Subject.opaque("s9")):
        for m in s.export(subj):
            t.apply(Mutation.from_json(m.to_json()))
    for ts in (token(sid="s1"), token(sid="s9"), token(sid="s2")):
        assert s.evaluate(ts, 10) == t.evaluate(ts, 10)
    assert t.evaluate(token(sid="s1"), 10).revoked
    assert t.evaluate(token(sid="s2"), 10).claims == {"role": "x"}


def test_listeners_hear_only_changes() -> None:
    s = RevocationState()
    heard: list[Mutation] = []
    s.listeners.append(heard.append)
    m = Mutation(Subject.opaque("s"), CUTOFF, 5.0, 5)
    s.apply(m)
    s.apply(m)
    assert heard == [m]
    assert s.generation == 1


def test_default_policy_levels() -> None:
    p = DefaultPolicy(required_acr="nist-aal2")
    ok = SubjectState()
    assert p({"acr": "nist-aal3"}, CTX, ok).allow
    assert p({"acr": "nist-aal1"}, CTX, ok).error == "insufficient_user_authentication"
    assert p({"acr": "custom"}, CTX, ok).acr_values == "nist-aal2"  # unknown levels fail closed
    dropped = SubjectState(assurance_level="nist-aal1")
    assert p({"acr": "nist-aal3"}, CTX, dropped).acr_values == "nist-aal3"
    assert not p({}, CTX, SubjectState(device_compliant=False)).allow
    assert not DefaultPolicy(deny_risk_levels=["HIGH"])({}, CTX, SubjectState(risk_level="HIGH")).allow


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["u1", "u2"]),
            st.sampled_from([CUTOFF, DISABLED]),
            st.integers(0, 50),
        ),
        max_size=12,
    ),
    st.randoms(use_true_random=False),
)
def test_any_arrival_order_gives_the_same_state(ops: list[tuple[str, str, int]], rnd: Any) -> None:
    muts = [
        Mutation(Subject.iss_sub(ISS, u), f, float(at) if f == CUTOFF else bool(at % 2), float(at))
        for u, f, at in ops
    ]
    a, b = RevocationState(), RevocationState()
    a.apply_all(muts)
    shuffled = list(muts)
    rnd.shuffle(shuffled)
    b.apply_all(shuffled + muts)  # and re-delivered
    for u in ("u1", "u2"):
        ts = TokenSubjects.from_claims({"iss": ISS, "sub": u})
        for iat in (0, 25, 60):
            assert a.evaluate(ts, iat) == b.evaluate(ts, iat) or _tie(muts, u)


def _tie(muts: list[Mutation], user: str) -> bool:
    """Two contradictory flags with the same event time: arrival order decides (documented)."""
    seen: dict[float, set[Any]] = {}
    for m in muts:
        if m.field == DISABLED and m.subject["sub"] == user:
            seen.setdefault(m.at, set()).add(m.value)
    return any(len(v) > 1 for v in seen.values())


def test_counts_follow_changes() -> None:
    s = RevocationState()
    s.apply(Mutation(Subject.opaque("a"), CUTOFF, 5.0, 5))
    s.apply(Mutation(Subject.iss_sub(ISS, "u"), CUTOFF, 5.0, 5))
    assert (s.counts()["cutoffs"], s.counts()["revoked_sessions"]) == (2, 0)
    s.apply(Mutation(Subject.opaque("a"), CUTOFF, math.inf, 6))
    s.apply(Mutation(Subject.opaque("a"), CUTOFF, math.inf, 7))
    assert (s.counts()["cutoffs"], s.counts()["revoked_sessions"]) == (1, 1)


def test_token_cache_is_bounded_lru_and_evicts_by_subject() -> None:
    from receiver.tokens import TokenCache, make_entry

    cache = TokenCache(max_size=3)
    state = RevocationState()
    for name, claims in {
        "t1": {"sid": "s1"},
        "t2": {"sid": "s2", "device_id": "d1"},
        "t3": {"sub": "u2", "device_id": "d1"},
    }.items():
        cache.put(make_entry(name, {"iss": ISS, "sub": "u1", "iat": 1, **claims}, kind="jwt"))
    assert cache.get("t1") is not None  # t1 is now the most recent
    cache.put(make_entry("t4", {"iss": ISS, "sub": "u3", "iat": 1}, kind="jwt"))
    assert "t2" not in cache and len(cache) == 3  # the least recently used went
    device_of_u2 = Subject.complex(user=Subject.iss_sub(ISS, "u2"), device=Subject.opaque("d1"))
    assert cache.evict_subject(device_of_u2, state) == 1 and "t3" not in cache
    assert cache.evict_subject(Subject.opaque("s1"), state) == 1 and "t1" not in cache
    assert cache.evict_subject(Subject.iss_sub(ISS, "nobody"), state) == 0
