"""openid-ssf-transmitter-metadata (digest 11.3, checklist rows 12-19)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from conformance.registry import ModuleRun, Severity, check, module
from conformance.tx.context import (
    DELIVERY_SUPPORTED,
    METADATA_FETCH,
    TransmitterKit,
    is_loopback,
    json_of,
)
from ssf.errors import SSFError
from ssf.keys import PublicKeys

F, W, INFO = Severity.FAILURE, Severity.WARNING, Severity.INFO

ISSUER_PRESENT = check("metadata.issuer-present", "SSF 7.1", F, "issuer is present")
ISSUER_MATCHES = check(
    "metadata.issuer-matches", "SSF 7.2.4", F, "issuer equals the issuer the discovery URL was built from"
)
ISSUER_FORM = check("metadata.issuer-form", "SSF 7.1", F, "issuer is an https URL without query or fragment")
ENDPOINTS_HTTPS = check("metadata.endpoints-https", "SSF 7.1 / 10.4", F, "every endpoint URL uses https")
DEFAULT_SUBJECTS = check(
    "metadata.default-subjects", "SSF 7.1", W, "default_subjects, if present, is ALL or NONE"
)
AUTH_SCHEMES = check(
    "metadata.authorization-schemes",
    "SSF 7.1.1",
    INFO,
    "each authorization_schemes entry has a urn: spec_urn",
)
DELIVERY_METHODS = check(
    "metadata.delivery-methods", "SSF 7.1 / CAEPIOP 2.3.2", W, "delivery_methods_supported is present", caep=F
)
NO_EMPTY_ARRAYS = check("metadata.no-empty-arrays", "SSF 7.2.3", F, "no member is an empty array")
JWKS_VALID = check("metadata.jwks", "SSF 7.1", F, "jwks_uri serves a JWKS of usable public signing keys")
JWKS_PUBLIC_ONLY = check(
    "metadata.jwks-public-only", "SSF 7.1", F, "the JWKS holds no private or symmetric key material"
)
CRITICAL_MEMBERS = check(
    "metadata.critical-subject-members", "SSF 7.1", F, "critical_subject_members is an array of member names"
)
SPEC_VERSION = check(
    "metadata.spec-version", "SSF 7.1", INFO, "spec_version uses the OIDF naming (1_0, no dots)"
)
CAEP_SPEC_VERSION = check(
    "metadata.caep-spec-version", "CAEPIOP 2.3.1", F, "spec_version present and >= 1_0-ID2"
)
CAEP_AUTH_SCHEME = check(
    "metadata.caep-oauth-scheme", "CAEPIOP 2.3.7", F, "authorization_schemes contains urn:ietf:rfc:6749"
)
CAEP_ENDPOINTS = check(
    "metadata.caep-required-endpoints",
    "CAEPIOP 2.3.3-2.3.6",
    F,
    "jwks_uri, configuration_endpoint, status_endpoint and verification_endpoint are present",
)

CHECKS = (
    METADATA_FETCH,
    DELIVERY_SUPPORTED,
    ISSUER_PRESENT,
    ISSUER_MATCHES,
    ISSUER_FORM,
    ENDPOINTS_HTTPS,
    DEFAULT_SUBJECTS,
    AUTH_SCHEMES,
    DELIVERY_METHODS,
    NO_EMPTY_ARRAYS,
    JWKS_VALID,
    JWKS_PUBLIC_ONLY,
    CRITICAL_MEMBERS,
    SPEC_VERSION,
    CAEP_SPEC_VERSION,
    CAEP_AUTH_SCHEME,
    CAEP_ENDPOINTS,
)
ENDPOINT_NAMES = (
    "jwks_uri",
    "configuration_endpoint",
    "status_endpoint",
    "add_subject_endpoint",
    "remove_subject_endpoint",
    "verification_endpoint",
)


def url_is_secure(kit: TransmitterKit, url: str) -> bool | None:
    """True for https; None (skip) for http on loopback when allowed; False otherwise."""
    scheme = urlsplit(url).scheme
    if scheme == "https":
        return True
    if scheme == "http" and kit.opts.allow_http_loopback and is_loopback(url):
        return None
    return False


def _version_at_least_id2(v: str) -> bool:
    if "." in v:
        return False
    if v == "1_0" or v.startswith("1_0-ID"):
        if v.startswith("1_0-ID"):
            try:
                return int(v[len("1_0-ID") :]) >= 2
            except ValueError:
                return False
        return True
    head = v.split("-", 1)[0].split("_")
    try:
        return tuple(int(x) for x in head) >= (1, 0)
    except ValueError:
        return False


@module(
    "openid-ssf-transmitter-metadata",
    "transmitter",
    "Fetch and validate the transmitter configuration metadata and its JWKS",
    CHECKS,
)
async def metadata_module(kit: TransmitterKit, run: ModuleRun) -> None:
    md = await kit.fetch_metadata(run)
    issuer = md.get("issuer")
    run.expect(
        ISSUER_PRESENT, isinstance(issuer, str) and bool(issuer), "issuer is missing", "present", stop=True
    )
    assert isinstance(issuer, str)
    if kit.opts.issuer:
        run.expect(
            ISSUER_MATCHES,
            issuer.rstrip("/") == kit.opts.issuer.rstrip("/"),
            f"metadata issuer {issuer!r} is not {kit.opts.issuer!r}",
            "issuer matches",
        )
    else:
        run.skip(ISSUER_MATCHES, "no --issuer given (metadata URL mode)")
    parts = urlsplit(issuer)
    secure = url_is_secure(kit, issuer)
    if parts.query or parts.fragment:
        run.record(ISSUER_FORM, False, "issuer has a query or fragment")
    elif secure is None:
        run.skip(ISSUER_FORM, "http issuer on loopback allowed by --allow-http-loopback")
    else:
        run.expect(ISSUER_FORM, secure, f"issuer {issuer!r} is not https", "https")
    insecure = [
        n for n in ENDPOINT_NAMES if isinstance(md.get(n), str) and url_is_secure(kit, md[n]) is False
    ]
    loopback_http = [
        n for n in ENDPOINT_NAMES if isinstance(md.get(n), str) and url_is_secure(kit, md[n]) is None
    ]
    if insecure:
        run.record(ENDPOINTS_HTTPS, False, f"not https: {', '.join(insecure)}")
    elif loopback_http:
        run.skip(ENDPOINTS_HTTPS, "http endpoints on loopback allowed by --allow-http-loopback")
    else:
        run.record(ENDPOINTS_HTTPS, True, "all https")
    ds = md.get("default_subjects")
    if ds is not None:
        run.expect(DEFAULT_SUBJECTS, ds in ("ALL", "NONE"), f"default_subjects is {ds!r}", str(ds))
    schemes = md.get("authorization_schemes")
    if schemes is not None:
        ok = isinstance(schemes, list) and all(
            isinstance(s, dict) and isinstance(s.get("spec_urn"), str) and s["spec_urn"].startswith("urn:")
            for s in schemes
        )
        run.expect(AUTH_SCHEMES, ok, f"authorization_schemes malformed: {schemes!r}", "ok")
    dms = md.get("delivery_methods_supported")
    run.expect(
        DELIVERY_METHODS,
        isinstance(dms, list) and all(isinstance(m, str) for m in dms) and bool(dms),
        "delivery_methods_supported missing or malformed",
        "present",
    )
    empty = [k for k, v in md.items() if v == []]
    run.expect(NO_EMPTY_ARRAYS, not empty, f"empty arrays: {', '.join(empty)}", "none")
    crit = md.get("critical_subject_members")
    if crit is not None:
        run.expect(
            CRITICAL_MEMBERS,
            isinstance(crit, list) and all(isinstance(c, str) and c for c in crit),
            f"critical_subject_members is {crit!r}",
            "array of names",
        )
    sv = md.get("spec_version")
    if sv is not None:
        run.expect(SPEC_VERSION, isinstance(sv, str) and "." not in sv, f"spec_version is {sv!r}", str(sv))
    await _jwks(kit, run, md)
    if kit.caep:
        run.expect(
            CAEP_SPEC_VERSION,
            isinstance(sv, str) and _version_at_least_id2(sv),
            f"spec_version is {sv!r}",
            str(sv),
        )
        has_oauth = isinstance(schemes, list) and any(
            isinstance(s, dict) and s.get("spec_urn") == "urn:ietf:rfc:6749" for s in schemes
        )
        run.expect(CAEP_AUTH_SCHEME, has_oauth, "no urn:ietf:rfc:6749 authorization scheme", "present")
        need = ("jwks_uri", "configuration_endpoint", "status_endpoint", "verification_endpoint")
        missing = [n for n in need if not isinstance(md.get(n), str)]
        run.expect(CAEP_ENDPOINTS, not missing, f"missing: {', '.join(missing)}", "present")


async def _jwks(kit: TransmitterKit, run: ModuleRun, md: dict[str, Any]) -> None:
    uri = md.get("jwks_uri")
    if not isinstance(uri, str):
        run.record(JWKS_VALID, False, "no jwks_uri (SETs must be signed)")
        return
    resp = await kit.http.get(uri)
    doc = json_of(resp)
    if resp.status_code != 200 or not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        run.record(JWKS_VALID, False, f"GET jwks_uri: HTTP {resp.status_code}, not a JWKS")
        return
    private = [
        str(k.get("kid"))
        for k in doc["keys"]
        if isinstance(k, dict)
        and (k.get("kty") == "oct" or any(p in k for p in ("d", "p", "q", "dp", "dq", "qi", "k")))
    ]
    run.expect(JWKS_PUBLIC_ONLY, not private, f"private/symmetric material in keys {private}", "public only")
    if private:
        return
    try:
        keys = PublicKeys.from_jwks(doc)
    except SSFError as exc:
        run.record(JWKS_VALID, False, f"JWKS unusable: {exc.description}")
        return
    run.expect(JWKS_VALID, len(keys) > 0, "the JWKS holds no signing key", f"{len(keys)} key(s)")
