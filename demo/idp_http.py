"""The demo identity provider over HTTP (Starlette).

| route | what |
| --- | --- |
| ``GET /.well-known/oauth-authorization-server`` | RFC 8414 metadata |
| ``GET /jwks.json`` | the public signing keys |
| ``POST /oauth/token`` | RFC 6749 §4.4 client credentials for machine clients |
| ``POST /login`` | ``{"username", "device_id", "acr"}`` → a user's access token (no password: a demo) |
| ``POST /admin/sessions/{sid}/end`` | end a session → CAEP session-revoked |
| ``POST /admin/devices/{device_id}/compliance`` | ``{"username", "status"}`` → device-compliance-change |
| ``POST /admin/users/{username}/assurance`` | ``{"level"}`` → assurance-level-change |

Errors are JSON ``{"error", "error_description"}`` (RFC 6749 §5.2 style), never a traceback.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from demo.idp import IdPError
from demo.publisher import PublishError, PublishResult

if TYPE_CHECKING:
    from demo.idp import DemoIdP

__all__ = ["build_app"]

Handler = Callable[[Request, dict[str, Any]], Awaitable[dict[str, Any]]]


def build_app(idp: DemoIdP) -> Starlette:
    routes = _Routes(idp)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # One pooled client per server loop for the publish calls.
        publisher = idp.publisher
        if publisher is None or publisher.client is not None:
            yield
            return
        async with httpx.AsyncClient(timeout=10.0, trust_env=idp.trust_env) as client:
            publisher.client = client
            try:
                yield
            finally:
                publisher.client = None

    return Starlette(
        routes=[
            Route("/.well-known/oauth-authorization-server", routes.metadata, methods=["GET"]),
            Route("/jwks.json", routes.jwks, methods=["GET"]),
            Route("/oauth/token", routes.token, methods=["POST"]),
            Route("/login", routes.login, methods=["POST"]),
            Route("/admin/sessions/{sid}/end", routes.end_session, methods=["POST"]),
            Route("/admin/devices/{device_id}/compliance", routes.device, methods=["POST"]),
            Route("/admin/users/{username}/assurance", routes.assurance, methods=["POST"]),
        ],
        lifespan=lifespan,
    )


class _Routes:
    def __init__(self, idp: DemoIdP) -> None:
        self.idp = idp

    async def metadata(self, _: Request) -> JSONResponse:
        """RFC 8414 metadata: where the keys and the token endpoint are."""
        issuer = self.idp.issuer
        return JSONResponse(
            {
                "issuer": issuer,
                "jwks_uri": f"{issuer}/jwks.json",
                "token_endpoint": f"{issuer}/oauth/token",
                "grant_types_supported": ["client_credentials"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            }
        )

    async def jwks(self, _: Request) -> JSONResponse:
        return JSONResponse(self.idp.jwks(), headers={"Cache-Control": "max-age=300"})

    async def token(self, request: Request) -> JSONResponse:
        """RFC 6749 §4.4 client credentials; errors per §5.2."""
        form = dict(urllib.parse.parse_qsl((await request.body()).decode("utf-8", "replace")))
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = request.headers.get("authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                raw = base64.b64decode(auth[6:].strip(), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                raw = ""
            user, _, password = raw.partition(":")
            client_id, secret = urllib.parse.unquote(user), urllib.parse.unquote(password)
        client = self.idp.oauth_clients.get(client_id or "")
        if client is None or not secret or not hmac.compare_digest(client.secret, secret):
            return _oauth_error("invalid_client", "client authentication failed", 401)
        if form.get("grant_type") != "client_credentials":
            return _oauth_error("unsupported_grant_type", "only client_credentials is supported", 400)
        try:
            body = self.idp.client_token(client.client_id, form.get("scope"))
        except IdPError as exc:
            return _oauth_error("invalid_scope", exc.description, 400)
        return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    async def login(self, request: Request) -> JSONResponse:
        async def run(_: Request, body: dict[str, Any]) -> dict[str, Any]:
            issued = self.idp.login(
                _str(body, "username"),
                device_id=_str(body, "device_id", "device-1"),
                acr=_str(body, "acr", "nist-aal2"),
            )
            return {
                "access_token": issued.access_token,
                "token_type": "Bearer",
                "expires_in": issued.expires_in,
                "sid": issued.session.sid,
            }

        return await _answer(request, run)

    async def end_session(self, request: Request) -> JSONResponse:
        async def run(r: Request, _: dict[str, Any]) -> dict[str, Any]:
            return await _published(self.idp.end_session(r.path_params["sid"]))

        return await _answer(request, run)

    async def device(self, request: Request) -> JSONResponse:
        async def run(r: Request, body: dict[str, Any]) -> dict[str, Any]:
            change = self.idp.set_device_compliance(
                _str(body, "username"), r.path_params["device_id"], _str(body, "status")
            )
            return await _published(change)

        return await _answer(request, run)

    async def assurance(self, request: Request) -> JSONResponse:
        async def run(r: Request, body: dict[str, Any]) -> dict[str, Any]:
            return await _published(
                self.idp.set_assurance_level(r.path_params["username"], _str(body, "level"))
            )

        return await _answer(request, run)


async def _published(change: Coroutine[Any, Any, PublishResult]) -> dict[str, Any]:
    result = await change
    return {
        "jti": result.jti,
        "publish_ms": round(result.duration * 1000, 2),
        # Wall clock, so a caller on this machine can time what follows the durable publish.
        "published_at": result.returned_at,
    }


async def _answer(request: Request, handler: Handler) -> JSONResponse:
    try:
        body = await request.json() if await request.body() else {}
    except ValueError:
        return JSONResponse({"error": "invalid_request", "error_description": "body is not JSON"}, 400)
    if not isinstance(body, dict):
        return JSONResponse({"error": "invalid_request", "error_description": "body must be an object"}, 400)
    try:
        return JSONResponse(await handler(request, body))
    except IdPError as exc:
        return JSONResponse(
            {"error": "invalid_request", "error_description": exc.description}, exc.status_code
        )
    except PublishError as exc:
        return JSONResponse({"error": "temporarily_unavailable", "error_description": str(exc)}, 502)


def _oauth_error(error: str, description: str, status: int) -> JSONResponse:
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="demo-idp"'
    return JSONResponse({"error": error, "error_description": description}, status, headers=headers)


def _str(body: dict[str, Any], name: str, default: str | None = None) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or not value:
        raise IdPError(f"'{name}' must be a non-empty string")
    return value
