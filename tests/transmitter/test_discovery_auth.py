"""Discovery, JWKS, the built-in OAuth 2.0 token endpoint and RFC 6750 errors."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from ssf.keys import PublicKeys
from tests.support.services import free_port, serve
from tests.transmitter.conftest import Server, ServerFactory, make_settings, running


def test_metadata_is_complete_and_has_no_empty_arrays(server: Server) -> None:
    r = server.http.get(server.url + "/.well-known/ssf-configuration")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    meta = r.json()
    assert meta["issuer"] == server.url
    assert meta["spec_version"] == "1_0"
    assert meta["delivery_methods_supported"] == ["urn:ietf:rfc:8935", "urn:ietf:rfc:8936"]
    assert {"spec_urn": "urn:ietf:rfc:6749"} in meta["authorization_schemes"]
    assert meta["default_subjects"] in ("ALL", "NONE")
    for name in (
        "configuration_endpoint",
        "status_endpoint",
        "add_subject_endpoint",
        "remove_subject_endpoint",
        "verification_endpoint",
        "jwks_uri",
    ):
        assert meta[name].startswith(server.url + "/")
    assert all(v != [] for v in meta.values())
    assert meta["configuration_endpoint"].endswith("/ssf/streams")


def test_jwks_has_public_keys_only(server: Server) -> None:
    jwks = server.http.get(server.url + "/jwks.json").json()
    assert jwks["keys"]
    for k in jwks["keys"]:
        assert "d" not in k and "p" not in k and k["kty"] != "oct"
    assert len(PublicKeys.from_jwks(jwks)) == len(jwks["keys"])


def test_issuer_with_path_uses_path_insertion(tmp_path: Path, db_config: dict[str, Any]) -> None:
    port = free_port()
    settings = make_settings(tmp_path, db_config, port, issuer=f"http://127.0.0.1:{port}/tenant/a")
    with running(settings, port) as srv:
        meta = srv.http.get(f"http://127.0.0.1:{port}/.well-known/ssf-configuration/tenant/a").json()
        assert meta["issuer"] == f"http://127.0.0.1:{port}/tenant/a"
        oauth = srv.http.get(
            f"http://127.0.0.1:{port}/.well-known/oauth-authorization-server/tenant/a"
        ).json()
        assert oauth["token_endpoint"] == meta["issuer"] + "/oauth/token"
        tok = srv.client()
        r = srv.http.post(meta["configuration_endpoint"], json={}, headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 201
        assert r.json()["iss"] == meta["issuer"]
        assert srv.http.get(meta["jwks_uri"]).status_code == 200
        assert srv.http.get(f"http://127.0.0.1:{port}/.well-known/ssf-configuration").status_code == 404


def test_http_issuer_refused_without_dev_mode(tmp_path: Path) -> None:
    from transmitter.app import create_app

    settings = make_settings(tmp_path, {"database_url": f"sqlite:///{tmp_path / 'x.db'}"}, 1, dev_mode=False)
    with pytest.raises(ValueError, match="https"):
        create_app(settings)


def test_token_endpoint_basic_and_post(server: Server) -> None:
    info, secret = server.tx.auth.add_client("rx1")
    meta = server.http.get(server.url + "/.well-known/oauth-authorization-server").json()
    assert meta["token_endpoint"] == server.url + "/oauth/token"
    r = server.http.post(
        meta["token_endpoint"],
        data={"grant_type": "client_credentials", "scope": "ssf.read"},
        auth=(info.client_id, secret),
    )
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] <= 3600 and body["scope"] == "ssf.read"
    assert r.headers["cache-control"] == "no-store"
    r = server.http.post(
        meta["token_endpoint"],
        data={"grant_type": "client_credentials", "client_id": info.client_id, "client_secret": secret},
    )
    assert r.status_code == 200 and set(r.json()["scope"].split()) == {"ssf.read", "ssf.manage"}
    bad = server.http.post(
        meta["token_endpoint"], data={"grant_type": "client_credentials"}, auth=(info.client_id, "wrong")
    )
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    scope = server.http.post(
        meta["token_endpoint"],
        data={"grant_type": "client_credentials", "scope": "ssf.publish"},
        auth=(info.client_id, secret),
    )
    assert scope.status_code == 400 and scope.json()["error"] == "invalid_scope"
    grant = server.http.post(
        meta["token_endpoint"], data={"grant_type": "password"}, auth=(info.client_id, secret)
    )
    assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"


def test_rfc6750_errors(server: Server) -> None:
    r = server.req("GET", "/ssf/streams", None)
    assert r.status_code == 401 and "Bearer" in r.headers["www-authenticate"]
    assert r.json()["err"] == "invalid_token"
    r = server.req("GET", "/ssf/streams", "invalid:123")
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    # tokens in the query are never accepted (CAEP interop RS rules)
    tok = server.client()
    assert server.http.get(server.url + f"/ssf/streams?access_token={tok}").status_code == 401
    reader = server.client(scopes=["ssf.read"])
    assert server.req("GET", "/ssf/streams", reader).status_code == 200
    r = server.req("POST", "/ssf/streams", reader, json={})
    assert r.status_code == 403 and 'error="insufficient_scope"' in r.headers["www-authenticate"]
    assert server.req("POST", "/events", tok, json={}).status_code == 403


def test_deleted_client_tokens_are_revoked(server: Server) -> None:
    tok = server.client("gone")
    assert server.req("GET", "/ssf/streams", tok).status_code == 200
    assert server.tx.auth.remove_client("gone")
    assert server.req("GET", "/ssf/streams", tok).status_code == 401


def test_external_authorization_server_tokens(tmp_path: Path, db_config: dict[str, Any]) -> None:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    key = RSAKey.generate_key(2048, parameters={"kid": "as1"})
    jwks = {"keys": [key.as_dict(private=False) | {"kid": "as1", "alg": "RS256", "use": "sig"}]}
    as_app = Starlette(routes=[Route("/jwks", lambda _r: JSONResponse(jwks))])

    def token(
        aud: str = "ssf-api",
        scope: str = "ssf.manage",
        exp: int = 600,
        iss: str = "https://as.example",
        signer: RSAKey = key,
        client_id: str = "ext-rx",
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": iss,
            "aud": aud,
            "client_id": client_id,
            "scope": scope,
            "iat": now,
            "exp": now + exp,
        }
        return jwt.encode({"alg": "RS256", "kid": "as1"}, claims, signer)

    with serve(as_app) as as_url:
        port = free_port()
        settings = make_settings(
            tmp_path,
            db_config,
            port,
            external_jwks_url=as_url + "/jwks",
            external_issuer="https://as.example",
            external_audience="ssf-api",
        )
        with running(settings, port) as srv:
            r = srv.req("POST", "/ssf/streams", token(), json={})
            assert r.status_code == 201
            assert r.json()["aud"] == "ext-rx"
            assert srv.req("GET", "/ssf/streams", token()).json()[0]["stream_id"] == r.json()["stream_id"]
            assert srv.req("GET", "/ssf/streams", token(aud="other")).status_code == 401
            assert srv.req("GET", "/ssf/streams", token(exp=-10)).status_code == 401
            assert srv.req("POST", "/ssf/streams", token(scope="ssf.read"), json={}).status_code == 403
            assert srv.req("GET", "/ssf/streams", token(iss="https://evil.example")).status_code == 401
            # a client id no stream owner can have (PostgreSQL text holds no NUL): 401, not 500
            assert srv.req("GET", "/ssf/streams", token(client_id="ext\u0000rx")).status_code == 401
            forged = token(signer=RSAKey.generate_key(2048, parameters={"kid": "as1"}))
            r = srv.req("GET", "/ssf/streams", forged)  # the AS's kid, another key
            assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]


@pytest.mark.parametrize(("interval", "rotated_ok"), [(0.0, True), (3600.0, False)])
def test_external_jwks_refetch_interval(
    tmp_path: Path, db_config: dict[str, Any], interval: float, rotated_ok: bool
) -> None:
    """After the authorization server rotates its key, a token with the new ``kid`` re-fetches
    the JWKS unless the last fetch is more recent than EXTERNAL_JWKS_REFETCH_INTERVAL."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    keys = {kid: RSAKey.generate_key(2048, parameters={"kid": kid}) for kid in ("as1", "as2")}
    served = {"kid": "as1"}

    def jwks(_request: Any) -> JSONResponse:
        key = keys[served["kid"]]
        return JSONResponse({"keys": [key.as_dict(private=False) | {"kid": served["kid"], "alg": "RS256"}]})

    def token(kid: str) -> str:
        now = int(time.time())
        claims = {"iss": "https://as.example", "aud": "ssf-api", "client_id": "ext-rx", "scope": "ssf.read"}
        return jwt.encode({"alg": "RS256", "kid": kid}, claims | {"iat": now, "exp": now + 600}, keys[kid])

    with serve(Starlette(routes=[Route("/jwks", jwks)])) as as_url:
        port = free_port()
        settings = make_settings(
            tmp_path,
            db_config,
            port,
            external_jwks_url=as_url + "/jwks",
            external_issuer="https://as.example",
            external_audience="ssf-api",
            external_jwks_refetch_interval=interval,
        )
        with running(settings, port) as srv:
            assert srv.req("GET", "/ssf/streams", token("as1")).status_code == 200
            served["kid"] = "as2"  # the authorization server rotates its signing key
            status = srv.req("GET", "/ssf/streams", token("as2")).status_code
            assert status == (200 if rotated_ok else 401)


def test_unknown_paths_and_methods_are_json(server: Server) -> None:
    r = server.http.get(server.url + "/nope")
    assert r.status_code == 404 and r.json()["err"] == "not_found"
    r = server.http.request("TRACE", server.url + "/ssf/streams")
    assert r.status_code == 405 and "err" in r.json()


def test_server_factory_type(server_factory: ServerFactory) -> None:
    with server_factory(default_subjects="NONE") as srv:
        assert srv.http.get(srv.url + "/.well-known/ssf-configuration").json()["default_subjects"] == "NONE"
    assert isinstance(httpx.Client, type)
