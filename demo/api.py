"""Calling a protected API and telling its answers apart (RFC 6750 and RFC 9470 challenges)."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Final

import httpx

__all__ = ["ALLOWED", "INVALID_TOKEN", "STEP_UP", "Answer", "Refusal", "call", "wait_until"]

ALLOWED: Final = "allowed"
INVALID_TOKEN: Final = "invalid_token"
#: RFC 9470 §3: the step-up challenge error code.
STEP_UP: Final = "insufficient_user_authentication"
_PARAM: Final = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    #: ``allowed``, the ``error`` of the Bearer challenge, or ``HTTP <status>``.
    kind: str
    challenge: dict[str, str]
    body: str

    def describe(self) -> str:
        if self.kind == ALLOWED:
            return f"{self.status} OK"
        params = ", ".join(f'{k}="{v}"' for k, v in self.challenge.items() if k != "realm")
        return (
            f"{self.status} WWW-Authenticate: Bearer {params}"
            if params
            else f"{self.status} {self.body[:120]}"
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    answer: Answer
    #: Seconds from ``since`` (wall clock, ``time.time()``) to the answer that showed the change.
    after: float
    #: Requests still allowed before it.
    allowed_before: int
    #: ``time.perf_counter()`` when the answer arrived (for the timeline).
    at: float


async def call(http: httpx.AsyncClient, url: str, token: str) -> Answer:
    resp = await http.get(url, headers={"Authorization": f"Bearer {token}"})
    header = resp.headers.get("www-authenticate", "")
    challenge = dict(_PARAM.findall(header)) if header.lower().startswith("bearer") else {}
    if resp.status_code == 200:
        kind = ALLOWED
    else:
        kind = challenge.get("error") or f"HTTP {resp.status_code}"
    return Answer(resp.status_code, kind, challenge, resp.text)


async def wait_until(
    http: httpx.AsyncClient,
    url: str,
    token: str,
    *,
    since: float,
    allowed: bool,
    timeout: float,
    pause: float = 0.005,
) -> Refusal | None:
    """Call ``url`` until the answer is (``allowed``) or is not (``not allowed``) a 200; None on timeout.

    ``since`` is a ``time.time()`` value: the moment the change was made durable.
    """
    count = 0
    deadline = since + timeout
    while True:
        answer = await call(http, url, token)
        now = time.time()  # wall clock: ``since`` may come from another process on this machine
        if (answer.kind == ALLOWED) == allowed:
            return Refusal(answer, now - since, count, time.perf_counter())
        count += 1
        if now > deadline:
            return None
        await asyncio.sleep(pause)
