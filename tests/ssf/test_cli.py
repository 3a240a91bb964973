"""`ssf keys generate`, `ssf set sign` and `ssf set decode`, run through the real `ssf` app
(CliRunner), with real keys, real signatures and a JWKS served on loopback."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from importlib.metadata import distribution, entry_points
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from typer.testing import CliRunner, Result

from ssf.keys import KeySet, PublicKeys, generate_signing_key
from ssf.set import SETVerifier, decode_unverified
from ssf.subjects import Subject
from ssfcli.main import app
from tests.support.services import serve

from .helpers import b64url_json, claims, header, jws_compact, signing_key

ISS = "https://tr.example.com"
AUD = "https://rx.example.com"
SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
CREDENTIAL_CHANGE = "https://schemas.openid.net/secevent/caep/event-type/credential-change"
IDENTIFIER_CHANGED = "https://schemas.openid.net/secevent/risc/event-type/identifier-changed"
EMAIL = '{"format":"email","email":"ada@example.com"}'
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def ssf(*args: str, code: int = 0, stdin: str | None = None) -> Result:
    result = CliRunner().invoke(app, list(args), input=stdin)
    assert result.exit_code == code, (args, result.output, result.exception)
    return result


def said(result: Result) -> str:
    """What the command printed (stdout and stderr), with rich's line wrapping undone."""
    return " ".join(result.output.split())


def _write_keys(tmp_path: Path, alg: str = "ES256", kid: str = "k1") -> tuple[Path, Path]:
    private, public = tmp_path / f"{kid}.json", tmp_path / f"{kid}.pub.json"
    ssf("keys", "generate", "--alg", alg, "--kid", kid, "--out", str(private), "--public", str(public))
    return private, public


def _sign(key: Path, *extra: str, event: str = SESSION_REVOKED, payload: str = "{}", code: int = 0) -> Result:
    return ssf(
        "set", "sign", "--key", str(key), "--iss", ISS, "--aud", AUD, "--event", event,
        "--subject", EMAIL, "--payload", payload, *extra, code=code,
    )  # fmt: skip


# --- ssf keys generate ---------------------------------------------------------------------


def test_keys_generate_prints_a_private_jwks_whose_rs256_key_is_2048_bits() -> None:
    out = ssf("keys", "generate").stdout
    ks = KeySet.from_private_jwks(json.loads(out))
    rsa_key: Any = ks.active.key.raw_value
    assert ks.active.alg == "RS256" and rsa_key.key_size == 2048
    assert ks.active.kid and ks.active.created_at > 0


@pytest.mark.parametrize("alg", ["PS256", "ES256", "EdDSA"])
def test_keys_generate_writes_an_owner_only_private_file_and_a_public_jwks(alg: str, tmp_path: Path) -> None:
    private, public = tmp_path / "key.json", tmp_path / "pub.json"
    private.write_text("old")
    private.chmod(0o644)  # an existing file is tightened too, before the key goes in
    result = ssf(
        "keys", "generate", "--alg", alg, "--kid", "k9", "--out", str(private), "--public", str(public)
    )
    assert result.stdout == ""  # the private key is not echoed when it goes to a file
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert KeySet.from_private_jwks(json.loads(private.read_text())).active.kid == "k9"
    doc = json.loads(public.read_text())
    assert [k["kid"] for k in doc["keys"]] == ["k9"] and doc["keys"][0]["alg"] == alg
    assert not PRIVATE_MEMBERS & set(doc["keys"][0])
    assert PublicKeys.from_jwks(doc).find("k9", alg) is not None


def test_keys_generate_refuses_an_unknown_algorithm_and_an_unwritable_path(tmp_path: Path) -> None:
    assert "unsupported signing algorithm" in said(ssf("keys", "generate", "--alg", "HS256", code=2))
    missing_dir = tmp_path / "no" / "such" / "key.json"
    assert "cannot write" in said(
        ssf("keys", "generate", "--alg", "ES256", "--out", str(missing_dir), code=2)
    )


# --- ssf set sign ----------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_set_sign_makes_a_set_that_verifies_against_the_public_jwks(alg: str, tmp_path: Path) -> None:
    private, public = _write_keys(tmp_path, alg)
    compact = _sign(private, "--txn", "t-1", payload='{"initiating_entity":"policy"}').stdout.strip()
    head, body = decode_unverified(compact)
    assert head == {"alg": alg, "typ": "secevent+jwt", "kid": "k1"}
    assert "sub" not in body and "exp" not in body and body["txn"] == "t-1"
    keys = PublicKeys.from_jwks(json.loads(public.read_text()))
    token = SETVerifier(issuer=ISS, audience=AUD, keys=keys).verify(compact)
    assert token.sub_id == Subject.email("ada@example.com")
    assert token.event_type == SESSION_REVOKED and token.event.payload() == {"initiating_entity": "policy"}


def test_set_sign_takes_a_pem_key_and_several_audiences(tmp_path: Path) -> None:
    key = generate_signing_key("ES256", kid="pem-key")
    pem = tmp_path / "key.pem"
    pem.write_bytes(key.private_pem())
    compact = ssf(
        "set", "sign", "--key", str(pem), "--iss", ISS, "--aud", AUD, "--aud", "https://rx2.example.com",
        "--event", SESSION_REVOKED, "--subject", EMAIL,
    ).stdout.strip()  # fmt: skip
    head, body = decode_unverified(compact)
    assert body["aud"] == [AUD, "https://rx2.example.com"]
    assert head["kid"] == key.key.thumbprint()  # a PEM has no kid: the JWK thumbprint stands in
    keys = PublicKeys.from_jwks({"keys": [{**key.public_jwk(), "kid": head["kid"]}]})
    assert SETVerifier(issuer=ISS, audience=AUD, keys=keys).verify(compact).audiences == (
        AUD,
        "https://rx2.example.com",
    )


@pytest.mark.parametrize(
    ("event", "payload", "subject", "reason"),
    [
        (CREDENTIAL_CHANGE, '{"credential_type":"password"}', EMAIL, "change_type"),
        (CREDENTIAL_CHANGE, "{not json", EMAIL, "Expecting property name"),
        (SESSION_REVOKED, "{}", '{"format":"email","email":"no-at-sign"}', "addr-spec"),
        (IDENTIFIER_CHANGED, "{}", '{"format":"opaque","id":"x"}', "needs a subject of format"),
    ],
)
def test_set_sign_refuses_what_it_cannot_sign_and_says_why(
    event: str, payload: str, subject: str, reason: str, tmp_path: Path
) -> None:
    private, _ = _write_keys(tmp_path)
    result = ssf(
        "set", "sign", "--key", str(private), "--iss", ISS, "--aud", AUD, "--event", event,
        "--subject", subject, "--payload", payload, code=2,
    )  # fmt: skip
    assert result.stdout == "" and "cannot sign" in said(result) and reason in said(result)


def test_set_sign_refuses_a_missing_or_public_key(tmp_path: Path) -> None:
    _, public = _write_keys(tmp_path)
    assert "cannot sign" in said(_sign(tmp_path / "absent.json", code=2))
    assert "cannot sign" in said(_sign(public, code=2))


# --- ssf set decode ------------------------------------------------------------------------------


def test_set_decode_pretty_prints_and_validates_without_keys(tmp_path: Path) -> None:
    private, _ = _write_keys(tmp_path)
    compact = _sign(private, payload='{"reason_admin":{"en":"policy"}}').stdout.strip()
    out = said(ssf("set", "decode", compact))
    assert (
        '"typ": "secevent+jwt"' in out and '"kid": "k1"' in out and '"iss": "https://tr.example.com"' in out
    )
    assert "claims and event are valid" in out and "signature not checked" in out
    assert "claims and event are valid" in said(ssf("set", "decode", "-", stdin=compact + "\n"))


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"sub": "x"}, "must not carry 'sub'"),
        ({"exp": 1}, "must not carry 'exp'"),
        ({"events": {CREDENTIAL_CHANGE: {"credential_type": "pin"}}}, "change_type"),
    ],
)
def test_set_decode_says_why_claims_are_invalid(overrides: dict[str, Any], reason: str) -> None:
    key = signing_key("ES256")
    out = said(ssf("set", "decode", jws_compact(header(key), claims(**overrides), key), code=1))
    assert "invalid (invalid_request)" in out and reason in out


def test_set_decode_refuses_what_is_not_a_set() -> None:
    assert "not a SET" in said(ssf("set", "decode", "not-a-jws", code=2))
    assert "not a SET" in said(ssf("set", "decode", "-", stdin="", code=2))


def test_set_decode_verifies_against_a_jwks_file_and_says_why_not(tmp_path: Path) -> None:
    private, public = _write_keys(tmp_path)
    compact = _sign(private).stdout.strip()
    assert "signature, claims and event verify" in said(ssf("set", "decode", compact, "--jwks", str(public)))
    ok = ssf("set", "decode", compact, "--jwks", str(public), "--issuer", ISS, "--audience", AUD)
    assert "signature, claims and event verify" in said(ok)

    def refused(*args: str) -> str:
        return said(ssf("set", "decode", compact, "--jwks", *args, code=1))

    # another key under the same kid: the signature itself fails
    (tmp_path / "other").mkdir()
    _, impostor = _write_keys(tmp_path / "other")
    assert "does not verify (authentication_failed)" in refused(str(impostor))
    # a JWKS without that kid: the message names the kid and what the JWKS holds
    _, rotated = _write_keys(tmp_path, kid="k2")
    out = refused(str(rotated))
    assert "does not verify (invalid_key)" in out and "'k1'" in out and "kids held: k2" in out
    assert "does not verify (invalid_issuer)" in refused(str(public), "--issuer", "https://evil.example")
    assert "does not verify (invalid_audience)" in refused(str(public), "--audience", "https://x.example")


def test_set_decode_refuses_unsigned_and_hmac_sets(tmp_path: Path) -> None:
    _, public = _write_keys(tmp_path)
    unsigned = f"{b64url_json({'alg': 'none', 'typ': 'secevent+jwt'})}.{b64url_json(claims())}."
    assert "unsigned SETs are refused" in said(ssf("set", "decode", unsigned, "--jwks", str(public), code=1))
    hmac = jws_compact({"alg": "HS256", "typ": "secevent+jwt", "kid": "k1"}, claims(), b"shared secret")
    out = said(ssf("set", "decode", hmac, "--jwks", str(public), code=1))
    assert "does not verify (invalid_key)" in out and "HS256" in out


def test_set_decode_fetches_a_jwks_url_and_refuses_a_broken_one(tmp_path: Path) -> None:
    private, public = _write_keys(tmp_path)
    compact = _sign(private).stdout.strip()
    jwks = json.loads(public.read_text())
    leaked = {"keys": [signing_key("ES256").private_jwk()]}
    web = FastAPI()

    @web.get("/jwks.json")
    def _jwks() -> JSONResponse:
        return JSONResponse(jwks)

    @web.get("/leaky.json")
    def _leaky() -> JSONResponse:
        return JSONResponse(leaked)

    @web.get("/gone.json")
    def _gone() -> JSONResponse:
        return JSONResponse({"keys": jwks["keys"]}, status_code=404)  # keys in an error answer

    with serve(web) as base:
        assert "signature, claims and event verify" in said(
            ssf("set", "decode", compact, "--jwks", f"{base}/jwks.json")
        )
        gone = said(ssf("set", "decode", compact, "--jwks", f"{base}/gone.json", code=2))
        assert "could not load the JWKS" in gone and "404" in gone
        leaky = said(ssf("set", "decode", compact, "--jwks", f"{base}/leaky.json", code=2))
        assert "could not load the JWKS" in leaky and "private" in leaky
    assert "could not load the JWKS" in said(
        ssf("set", "decode", compact, "--jwks", str(tmp_path / "absent.json"), code=2)
    )


def test_the_distribution_installs_the_ssf_console_script() -> None:
    """pyproject: one distribution, console script ``ssf`` -> ssfcli.main:main, run as a user would."""
    (script,) = entry_points(group="console_scripts", name="ssf")
    assert script.value == "ssfcli.main:main"
    packages = set((distribution("ssf-stack").read_text("top_level.txt") or "").split())
    assert {"ssf", "transmitter", "receiver", "conformance", "ssfcli"} <= packages
    exe = Path(sys.executable).parent / "ssf"
    done = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    for group in ("keys", "set", "transmitter", "receiver", "conformance"):
        assert group in done.stdout
