"""The admin web console: server-rendered pages (jinja2, no build step) under ``/admin``.

Authorization is the management API's: a bearer access token with ``ssf.manage``, and a client
sees and acts on its own streams only; a client that also holds ``ssf.admin`` (an operator's
client: ``ssf transmitter client add ops --scope "ssf.manage ssf.admin"``) sees every stream.
A script may send ``Authorization: Bearer ...``; a browser signs in once through the form at
``/admin/login``, which checks the token and keeps it in an ``HttpOnly; SameSite=Strict``
cookie (``Secure`` on an https issuer) scoped to the console path. Every form POST carries a
CSRF token (an HMAC of the session's token under a key derived from the transmitter secret)
and a foreign ``Origin`` is refused.

Pause / resume are transmitter-initiated status changes (the receiver gets a stream-updated
event, SSF §8.1.5); verify sends a transmitter-initiated verification event.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import desc, func, select
from starlette.concurrency import run_in_threadpool

from ssf import uris
from ssf.errors import SSFError
from ssf.set import decode_unverified
from transmitter.auth import ADMIN, MANAGE, AuthError, Principal
from transmitter.db import DELIVERED, PENDING, begin, outbox_t, stream_t
from transmitter.errors import Conflict
from transmitter.service import Transmitter
from transmitter.streams import storable

__all__ = ["COOKIE", "build_console"]

COOKIE = "ssf_admin"
RECENT_SETS = 25
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make form posts send Origin: null
}
_env = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(ts: float | None) -> str | None:
    if not ts:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h"


def _short_error(raw: str | None) -> str | None:
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return raw[:300]
    if isinstance(data, dict):
        return " ".join(f"{k}={v}" for k, v in data.items())[:300]
    return raw[:300]


def _method_name(method: str) -> str:
    return "push" if method == uris.PUSH else "poll" if method == uris.POLL else method


def _overview(tx: Transmitter, owner: str | None, stream_id: str | None = None) -> list[dict[str, Any]]:
    """The streams of ``owner`` (every stream for None), or one of them, with backlog, last
    delivery and last error."""
    now = time.time()
    if stream_id is not None and not storable(stream_id):
        return []
    with begin(tx.engine) as conn:
        q = select(stream_t)
        if owner is not None:
            q = q.where(stream_t.c.owner == owner)
        if stream_id is not None:
            q = q.where(stream_t.c.stream_id == stream_id)
        streams = conn.execute(q.order_by(stream_t.c.created_at)).all()
        ids = [r.stream_id for r in streams]
        if not ids:
            return []
        pending = {
            r[0]: (int(r[1]), r[2])
            for r in conn.execute(
                select(outbox_t.c.stream_id, func.count(), func.min(outbox_t.c.created_at))
                .where(outbox_t.c.stream_id.in_(ids), outbox_t.c.state == PENDING)
                .group_by(outbox_t.c.stream_id)
            )
        }
        delivered = dict(
            conn.execute(
                select(outbox_t.c.stream_id, func.max(outbox_t.c.done_at))
                .where(outbox_t.c.stream_id.in_(ids), outbox_t.c.state == DELIVERED)
                .group_by(outbox_t.c.stream_id)
            ).all()
        )
        errors: dict[str, str | None] = {}
        for sid in ids:
            row = conn.execute(
                select(outbox_t.c.last_error)
                .where(outbox_t.c.stream_id == sid, outbox_t.c.last_error.is_not(None))
                .order_by(desc(outbox_t.c.id))
                .limit(1)
            ).first()
            errors[sid] = _short_error(row[0]) if row else None
        counts: dict[str, dict[str, int]] = {}
        if stream_id is not None:
            counts[stream_id] = {
                r[0]: int(r[1])
                for r in conn.execute(
                    select(outbox_t.c.state, func.count())
                    .where(outbox_t.c.stream_id == stream_id)
                    .group_by(outbox_t.c.state)
                )
            }
    out = []
    for r in streams:
        backlog, oldest = pending.get(r.stream_id, (0, None))
        out.append(
            {
                "stream_id": r.stream_id,
                "owner": r.owner,
                "description": r.description,
                "method_name": _method_name(r.method),
                "endpoint_url": r.endpoint_url,
                "status": r.status,
                "reason": r.reason,
                "aud": json.loads(r.aud),
                "events_delivered": json.loads(r.events_delivered),
                "backlog": backlog,
                "oldest_age": _age(now - oldest) if oldest else None,
                "last_delivery": _when(delivered.get(r.stream_id)),
                "last_error": errors.get(r.stream_id)
                or (f"failing since {_when(r.failing_since)}" if r.failing_since else None),
                "counts": counts.get(r.stream_id, {}),
            }
        )
    return out


def _recent_sets(tx: Transmitter, stream_id: str) -> list[dict[str, Any]]:
    with begin(tx.engine) as conn:
        rows = conn.execute(
            select(outbox_t)
            .where(outbox_t.c.stream_id == stream_id)
            .order_by(desc(outbox_t.c.id))
            .limit(RECENT_SETS)
        ).all()
    out = []
    for r in rows:
        try:
            header, claims = decode_unverified(r.token)
        except SSFError:
            header, claims = {}, {}
        events = claims.get("events") or {}
        sub = claims.get("sub_id")
        out.append(
            {
                "jti": r.jti,
                "created": _when(r.created_at),
                "event_name": r.event_type.rsplit("/", 1)[-1],
                "subject": json.dumps(sub, sort_keys=True) if sub is not None else "",
                "txn": claims.get("txn"),
                "state": r.state,
                "attempts": r.attempts,
                "last_error": _short_error(r.last_error),
                "header": json.dumps(header, indent=2),
                "claims": json.dumps({**claims, "events": events}, indent=2),
            }
        )
    return out


def build_console(tx: Transmitter) -> APIRouter:
    router = APIRouter()
    base = urlsplit(tx.issuer).path.rstrip("/")
    root = base + "/admin"
    secure = tx.issuer.startswith("https://")
    csrf_key = hmac.new(tx.box.token_key, b"ssf-admin-console/csrf", hashlib.sha256).digest()

    def csrf_for(token: str) -> str:
        return hmac.new(csrf_key, token.encode(), hashlib.sha256).hexdigest()

    def render(name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        ctx.setdefault("principal", None)
        html = _env.get_template(name).render(base=base, issuer=tx.issuer, **ctx)
        return HTMLResponse(html, status_code=status, headers=_HEADERS)

    def scope_of(principal: Principal) -> str | None:
        """Whose streams the console shows: the client's own, or every one for ssf.admin."""
        return None if ADMIN in principal.scopes else principal.owner

    def token_of(request: Request) -> str | None:
        header = request.headers.get("authorization")
        if header:
            scheme, _, value = header.partition(" ")
            return value.strip() if scheme.lower() == "bearer" and value.strip() else None
        return request.cookies.get(COOKIE) or None

    async def principal_of(token: str | None) -> Principal:
        if not token:
            raise AuthError(401, "missing_token", "a bearer token is required", MANAGE)
        return await run_in_threadpool(tx.auth.verify, f"Bearer {token}", MANAGE)

    def to_login(error: str | None = None) -> Response:
        if error:
            resp: Response = render("login.html", 401, error=error)
        else:
            resp = RedirectResponse(root + "/login", 303, headers=_HEADERS)
        resp.delete_cookie(COOKIE, path=root)
        return resp

    def same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None:
            return True  # not a browser form post (the CSRF token is still required)
        host = request.headers.get("host", "")
        return _netloc(origin) in (host, urlsplit(tx.issuer).netloc)

    async def form_of(request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > 16384:
            return {}
        try:
            return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            return {}

    async def checked_post(request: Request) -> tuple[Principal, dict[str, str]] | Response:
        """Authorization, Origin and CSRF for a form POST."""
        token = token_of(request)
        try:
            principal = await principal_of(token)
        except AuthError as exc:
            return to_login(exc.description)
        form = await form_of(request)
        if not same_origin(request) or not _same(form.get("csrf", ""), csrf_for(token or "")):
            return render("login.html", 403, error="the form was not sent from this console (CSRF check)")
        return principal, form

    @router.get(root + "/login", include_in_schema=False)
    async def login_page() -> Response:
        return render("login.html")

    @router.post(root + "/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        if not same_origin(request):
            return render("login.html", 403, error="the form was not sent from this console")
        token = (await form_of(request)).get("token", "").strip()
        if token.lower().startswith("bearer "):
            token = token[7:].strip()
        try:
            await principal_of(token)
        except AuthError as exc:
            return render("login.html", 401, error=f"sign-in refused: {exc.description}")
        resp = RedirectResponse(root, 303, headers=_HEADERS)
        resp.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=secure, path=root)
        return resp

    @router.post(root + "/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        checked = await checked_post(request)
        if isinstance(checked, Response):
            return checked
        return to_login()

    @router.get(root, include_in_schema=False)
    async def index(request: Request) -> Response:
        token = token_of(request)
        try:
            principal = await principal_of(token)
        except AuthError as exc:
            return to_login(None if token is None else exc.description)
        streams = await run_in_threadpool(_overview, tx, scope_of(principal))
        return render(
            "streams.html",
            principal=principal,
            admin=scope_of(principal) is None,
            csrf=csrf_for(token or ""),
            streams=streams,
            flash=flash_of(request),
        )

    @router.get(root + "/streams/{stream_id}", include_in_schema=False)
    async def stream_page(stream_id: str, request: Request) -> Response:
        token = token_of(request)
        try:
            principal = await principal_of(token)
        except AuthError as exc:
            return to_login(None if token is None else exc.description)
        found = await run_in_threadpool(_overview, tx, scope_of(principal), stream_id)
        if not found:
            return render("login.html", 404, principal=principal, error="no stream with that stream_id")
        sets = await run_in_threadpool(_recent_sets, tx, stream_id)
        return render(
            "stream.html",
            principal=principal,
            csrf=csrf_for(token or ""),
            s=found[0],
            sets=sets,
            flash=flash_of(request),
        )

    def flash_sig(text: str) -> str:
        return hmac.new(csrf_key, b"flash:" + text.encode(), hashlib.sha256).hexdigest()[:32]

    def flash_of(request: Request) -> str | None:
        """The notice after an action: only text this console signed (no crafted-link text)."""
        text = request.query_params.get("flash")
        sig = request.query_params.get("sig", "")
        return text if text and _same(sig, flash_sig(text)) else None

    def back(request: Request, stream_id: str, flash: str) -> Response:
        referer = request.headers.get("referer", "")
        try:
            from_page = urlsplit(referer).path.endswith(stream_id)
        except ValueError:  # an unparsable Referer ("http://[::1")
            from_page = False
        target = root + f"/streams/{stream_id}" if from_page else root
        query = urlencode({"flash": flash, "sig": flash_sig(flash)})
        return RedirectResponse(f"{target}?{query}", 303, headers=_HEADERS)

    async def owned(principal: Principal, stream_id: str) -> bool:
        return bool(await run_in_threadpool(_overview, tx, scope_of(principal), stream_id))

    @router.post(root + "/streams/{stream_id}/status", include_in_schema=False)
    async def set_status(stream_id: str, request: Request) -> Response:
        checked = await checked_post(request)
        if isinstance(checked, Response):
            return checked
        principal, form = checked
        status = form.get("status", "")
        if status not in ("enabled", "paused", "disabled"):
            return render(
                "login.html", 400, principal=principal, error="status must be enabled, paused or disabled"
            )
        if not await owned(principal, stream_id):
            return render("login.html", 404, principal=principal, error="no stream with that stream_id")
        reason = "paused by the operator" if status == "paused" else None
        await run_in_threadpool(tx.set_status, stream_id, status, reason)
        return back(request, stream_id, f"stream {stream_id} is now {status}")

    @router.post(root + "/streams/{stream_id}/verify", include_in_schema=False)
    async def verify(stream_id: str, request: Request) -> Response:
        checked = await checked_post(request)
        if isinstance(checked, Response):
            return checked
        principal, _form = checked
        if not await owned(principal, stream_id):
            return render("login.html", 404, principal=principal, error="no stream with that stream_id")
        try:
            jti = await run_in_threadpool(tx.send_verification, stream_id)
        except Conflict as exc:
            return back(request, stream_id, exc.description)
        return back(request, stream_id, f"verification event {jti} queued for {stream_id}")

    return router


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison of a client-sent value with ours (hex); ``compare_digest``
    raises on non-ASCII text, which a client may send."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


def _netloc(url: str) -> str | None:
    try:
        return urlsplit(url).netloc
    except ValueError:  # an unparsable Origin ("http://[::1") is no origin of ours
        return None
