"""Hypothesis strategies: every subject format, every event type, arbitrary JSON."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import strategies as st

from ssf import uris
from ssf.events import EVENT_MODELS
from ssf.events.caep import CREDENTIAL_TYPES
from ssf.subjects import COMPLEX_MEMBERS, SIMPLE_FORMATS

TEXT = st.text(min_size=1, max_size=12)
NO_SPACE = st.text(
    st.characters(blacklist_categories=("Zs", "Cc", "Zl", "Zp", "Cs")), min_size=1, max_size=10
)
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
JSON_OBJECTS = st.dictionaries(st.text(max_size=8), JSON, max_size=5)
NUMERIC_DATE = st.integers(min_value=0, max_value=2**40) | st.floats(
    min_value=0, max_value=2.0**40, allow_nan=False, allow_infinity=False
)
LANGUAGE_MAP = st.dictionaries(st.sampled_from(["en", "de", "es-410", "fr-CA", "x-custom"]), TEXT, min_size=1)

_RESERVED_FORMATS = set(SIMPLE_FORMATS) | {"aliases", "ip-addresses", "complex", "phone", "iss-sub"}
_RESERVED_FORMATS |= {"issuer_subject_id"}


def _ip() -> st.SearchStrategy[str]:
    v4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
    v6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
    return v4 | v6


SIMPLE: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "account": st.builds(lambda u: {"format": "account", "uri": "acct:" + u}, TEXT),
    "email": st.builds(
        lambda local, domain: {"format": "email", "email": f"{local}@{domain}"},
        NO_SPACE,
        NO_SPACE.filter(lambda d: "@" not in d),
    ),
    "iss_sub": st.builds(lambda i, s: {"format": "iss_sub", "iss": i, "sub": s}, TEXT, TEXT),
    "opaque": st.builds(lambda i: {"format": "opaque", "id": i}, TEXT),
    "phone_number": st.from_regex(r"\+[1-9][0-9]{1,14}", fullmatch=True).map(
        lambda p: {"format": "phone_number", "phone_number": p}
    ),
    "did": st.builds(
        lambda m, rest: {"format": "did", "url": f"did:{m}:{rest}"},
        st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True),
        NO_SPACE,
    ),
    "uri": st.builds(
        lambda scheme, rest: {"format": "uri", "uri": f"{scheme}:{rest}"},
        st.from_regex(r"[A-Za-z][A-Za-z0-9+.-]{0,8}", fullmatch=True),
        st.text(max_size=12),
    ),
    "jwt_id": st.builds(lambda i, j: {"format": "jwt_id", "iss": i, "jti": j}, TEXT, TEXT),
    "saml_assertion_id": st.builds(
        lambda i, a: {"format": "saml_assertion_id", "issuer": i, "assertion_id": a}, TEXT, TEXT
    ),
    "ip-addresses": st.lists(_ip(), min_size=1, max_size=3).map(
        lambda ips: {"format": "ip-addresses", "ip-addresses": ips}
    ),
    "proprietary": st.builds(
        lambda fmt, members: {**members, "format": fmt},
        TEXT.filter(lambda f: f not in _RESERVED_FORMATS),
        st.dictionaries(TEXT.filter(lambda k: k not in ("format", "subject_type")), JSON, max_size=3),
    ),
}
SIMPLE_SUBJECTS = st.one_of(*SIMPLE.values())
ALIASES = st.lists(SIMPLE_SUBJECTS, min_size=1, max_size=3).map(
    lambda ids: {"format": "aliases", "identifiers": ids}
)
COMPLEX = st.dictionaries(
    st.sampled_from(COMPLEX_MEMBERS) | st.sampled_from(["catalog_item", "x-vendor", "region"]),
    SIMPLE_SUBJECTS | ALIASES,
    min_size=1,
    max_size=4,
).map(lambda members: {"format": "complex", **members})
#: One strategy per format name (the property tests draw from each).
SUBJECTS: dict[str, st.SearchStrategy[dict[str, Any]]] = {**SIMPLE, "aliases": ALIASES, "complex": COMPLEX}
ANY_SUBJECT = st.one_of(*SUBJECTS.values())


def _extras(model: type) -> st.SearchStrategy[dict[str, Any]]:
    """Unknown members for an event: names clear of the model's fields, aliases and 'subject'."""
    fields = getattr(model, "model_fields", {})
    taken = set(fields) | {f.alias for f in fields.values() if f.alias} | {"subject"}
    return st.dictionaries(st.text(max_size=8).filter(lambda k: k not in taken), JSON, max_size=2)


def _optional(**members: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=members)


CAEP_COMMON = {
    "event_timestamp": NUMERIC_DATE,
    "initiating_entity": st.sampled_from(["admin", "user", "policy", "system"]),
    "reason_admin": LANGUAGE_MAP,
    "reason_user": LANGUAGE_MAP,
}
C, R = uris.CAEP_BASE, uris.RISC_BASE
RISK = st.sampled_from(["LOW", "MEDIUM", "HIGH"])
COMPLIANCE = st.sampled_from(["compliant", "not-compliant"])

_SPECIFIC: dict[str, tuple[dict[str, st.SearchStrategy[Any]], dict[str, st.SearchStrategy[Any]]]] = {
    # uri: (required members, optional members)
    uris.VERIFICATION: ({}, {"state": TEXT}),
    uris.STREAM_UPDATED: ({"status": st.sampled_from(["enabled", "paused", "disabled"])}, {"reason": TEXT}),
    C + "session-revoked": ({}, CAEP_COMMON),
    C + "token-claims-change": ({"claims": st.dictionaries(TEXT, JSON, min_size=1, max_size=3)}, CAEP_COMMON),
    C + "credential-change": (
        {
            "credential_type": st.sampled_from(sorted(CREDENTIAL_TYPES)) | TEXT,
            "change_type": st.sampled_from(["create", "revoke", "update", "delete"]),
        },
        {
            **CAEP_COMMON,
            "friendly_name": TEXT,
            "x509_issuer": TEXT,
            "x509_serial": TEXT,
            "fido2_aaguid": TEXT,
        },
    ),
    C + "assurance-level-change": (
        {"namespace": TEXT, "current_level": TEXT},
        {
            **CAEP_COMMON,
            "previous_level": TEXT,
            "change_direction": st.sampled_from(["increase", "decrease"]),
        },
    ),
    C + "device-compliance-change": (
        {"previous_status": COMPLIANCE, "current_status": COMPLIANCE},
        CAEP_COMMON,
    ),
    C + "session-established": (
        {},
        {**CAEP_COMMON, "fp_ua": TEXT, "acr": TEXT, "amr": st.lists(TEXT, max_size=3), "ext_id": TEXT},
    ),
    C + "session-presented": ({}, {**CAEP_COMMON, "fp_ua": TEXT, "ext_id": TEXT}),
    C + "risk-level-change": (
        {
            "principal": st.sampled_from(["USER", "DEVICE", "SESSION", "TENANT", "ORG_UNIT", "GROUP"]) | TEXT,
            "current_level": RISK,
        },
        {**CAEP_COMMON, "previous_level": RISK, "risk_reason": TEXT},
    ),
    R + "account-disabled": ({}, {"reason": st.sampled_from(["hijacking", "bulk-account"])}),
    R + "identifier-changed": ({}, {"new-value": TEXT}),
    R + "credential-compromise": (
        {"credential_type": st.sampled_from(sorted(CREDENTIAL_TYPES))},
        {
            "event_timestamp": NUMERIC_DATE,
            "reason_admin": TEXT | LANGUAGE_MAP,
            "reason_user": TEXT | LANGUAGE_MAP,
        },
    ),
}


def event_payload(uri: str) -> st.SearchStrategy[dict[str, Any]]:
    """A valid payload for a registered event type, unknown members included."""
    required, optional = _SPECIFIC.get(uri, ({}, {}))
    model = EVENT_MODELS[uri]
    return st.builds(
        lambda extra, fixed: {**extra, **fixed},
        _extras(model),
        st.fixed_dictionaries(required, optional=optional),
    )


GENERIC_URI = st.builds(
    lambda s: f"https://vendor.example.com/event-type/{s}", st.from_regex(r"[a-z-]{1,12}", fullmatch=True)
)
