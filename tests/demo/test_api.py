"""The demo's API probe tells allowed, revoked and step-up answers apart, and never invents one."""

from __future__ import annotations

import time

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from demo.api import ALLOWED, INVALID_TOKEN, STEP_UP, call, wait_until
from demo.servers import ServiceThread

CALLS = {"n": 0}


async def protected(request: Request) -> Response:
    token = request.headers.get("authorization", "").removeprefix("Bearer ")
    CALLS["n"] += 1
    if token == "good" or (token == "flips" and CALLS["n"] < 4):
        return JSONResponse({"sub": "ada"})
    if token in ("revoked", "flips"):
        return PlainTextResponse(
            "", 401, headers={"WWW-Authenticate": 'Bearer realm="api", error="invalid_token"'}
        )
    if token == "weak":
        return PlainTextResponse(
            "",
            401,
            headers={
                "WWW-Authenticate": 'Bearer error="insufficient_user_authentication", '
                'error_description="more", acr_values="nist-aal2"'
            },
        )
    return PlainTextResponse("boom", 500)


async def test_call_classifies_answers_and_wait_until_counts() -> None:
    app = Starlette(routes=[Route("/p", protected)])
    service = ServiceThread("probe", app).start()
    try:
        url = f"{service.url}/p"
        async with httpx.AsyncClient(timeout=5) as http:
            assert (await call(http, url, "good")).kind == ALLOWED
            revoked = await call(http, url, "revoked")
            assert revoked.kind == INVALID_TOKEN and revoked.status == 401
            weak = await call(http, url, "weak")
            assert weak.kind == STEP_UP
            assert weak.challenge["acr_values"] == "nist-aal2"
            assert 'acr_values="nist-aal2"' in weak.describe()
            assert (await call(http, url, "other")).kind == "HTTP 500"

            CALLS["n"] = 0
            since = time.time()
            flipped = await wait_until(http, url, "flips", since=since, allowed=False, timeout=5)
            assert flipped is not None
            assert flipped.answer.kind == INVALID_TOKEN
            assert flipped.allowed_before == 3
            assert flipped.after > 0
            # A refusal that never comes is reported as None, not made up.
            assert await wait_until(http, url, "good", since=time.time(), allowed=False, timeout=0.05) is None
    finally:
        assert service.stop()
    assert not service.running
