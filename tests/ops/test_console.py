"""The admin console: in headless Chromium (sign in, see a stream created through the API, a
button press changes its status) and over plain HTTP (authorization, CSRF, ownership)."""

from __future__ import annotations

import json
import re

import httpx

from tests.ops.browser import browser
from tests.transmitter.conftest import SESSION_REVOKED, Server


def _status(server: Server, token: str, sid: str) -> str:
    r = server.req("GET", "/ssf/status", token, params={"stream_id": sid})
    assert r.status_code == 200, r.text
    return str(r.json()["status"])


def test_console_in_chromium_pause_resume_verify(server: Server) -> None:
    token = server.client()
    stream = server.create(token, {"events_requested": [SESSION_REVOKED], "description": "browser test"})
    sid = stream["stream_id"]
    pub = server.publisher()
    r = server.req(
        "POST",
        "/events",
        pub,
        json={
            "subject": {"format": "opaque", "id": "u1"},
            "events": {SESSION_REVOKED: {}},
            "txn": "tx-browser",
        },
    )
    assert r.status_code == 202
    with browser() as page:
        page.goto(server.url + "/admin")
        assert page.url().endswith("/admin/login")  # not signed in: sent to the login form
        page.eval(f"document.getElementById('token').value = {json.dumps(token)}")
        page.eval("document.getElementById('login-form').submit()")
        page.wait_for(f"!!document.getElementById('stream-{sid}')")
        row = f"document.getElementById('stream-{sid}')"
        assert page.eval(f"{row}.dataset.status") == "enabled"
        assert page.eval(f"{row}.querySelector('.backlog').textContent.trim().startsWith('1')")
        assert "ssf_admin" not in page.eval("document.cookie")  # HttpOnly: scripts cannot read it

        page.eval(f"{row}.querySelector('button.pause').click()")
        page.wait_for(f"document.getElementById('stream-{sid}').dataset.status === 'paused'")
        assert _status(server, token, sid) == "paused"
        assert "is now paused" in page.eval("document.getElementById('flash').textContent")

        page.eval(f"document.getElementById('stream-{sid}').querySelector('button.resume').click()")
        page.wait_for(f"document.getElementById('stream-{sid}').dataset.status === 'enabled'")
        assert _status(server, token, sid) == "enabled"

        # the stream page: recent SETs decoded (the published one and the stream-updated notices)
        page.goto(f"{server.url}/admin/streams/{sid}")
        page.wait_for("!!document.getElementById('sets')")
        html = page.html()
        assert "tx-browser" in html and "session-revoked" in html and "stream-updated" in html
        page.eval("document.querySelector('button.verify').click()")
        page.wait_for("(document.getElementById('flash') || {}).textContent?.includes('verification event')")
        assert "verification" in page.html()


def test_console_authorization_csrf_and_ownership(server: Server) -> None:
    token = server.client("console-owner")
    other = server.client()
    reader = server.client(scopes=["ssf.read"])
    sid = server.create(token, {})["stream_id"]
    theirs = server.create(other, {})["stream_id"]
    http = httpx.Client(timeout=10)  # stores no cookie unless told
    base = server.url + "/admin"

    r = http.get(base, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith("/admin/login")
    r = http.post(base + "/login", data={"token": reader})  # no ssf.manage
    assert r.status_code == 401 and "sign-in refused" in r.text
    assert "ssf_admin" not in r.headers.get("set-cookie", "")
    r = http.post(base + "/login", data={"token": "not-a-token"})
    assert r.status_code == 401

    r = http.post(base + "/login", data={"token": token}, follow_redirects=False)
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Path=/admin" in cookie
    http.cookies.clear()
    jar = httpx.Client(timeout=10, cookies={"ssf_admin": token})
    page = jar.get(base)
    assert page.status_code == 200 and sid in page.text and theirs not in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert csrf is not None

    action = f"{base}/streams/{sid}/status"
    # no CSRF token, a wrong one, a foreign Origin: refused, nothing changes
    assert jar.post(action, data={"status": "paused"}).status_code == 403
    assert jar.post(action, data={"status": "paused", "csrf": "0" * 64}).status_code == 403
    r = jar.post(
        action,
        data={"status": "paused", "csrf": csrf.group(1)},
        headers={"Origin": "https://evil.example"},
    )
    assert r.status_code == 403
    assert _status(server, token, sid) == "enabled"
    # another client's stream: not found, unchanged
    r = jar.post(f"{base}/streams/{theirs}/status", data={"status": "paused", "csrf": csrf.group(1)})
    assert r.status_code == 404
    assert _status(server, other, theirs) == "enabled"
    assert jar.get(f"{base}/streams/{theirs}").status_code == 404
    # a bearer header works like the cookie (scripts); the right CSRF token changes the status
    r = http.post(
        action,
        data={"status": "paused", "csrf": csrf.group(1)},
        headers={"Authorization": f"Bearer {token}", "Origin": server.url},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert _status(server, token, sid) == "paused"
    shown = jar.get(server.url + r.headers["location"])
    assert "is now paused" in shown.text
    forged = jar.get(base, params={"flash": "call 555-0100 for support", "sig": "0" * 32})
    assert forged.status_code == 200 and "555-0100" not in forged.text
    # revoked client: the cookie stops working at once
    server.tx.auth.remove_client("console-owner")
    r = jar.get(base, follow_redirects=False)
    assert r.status_code == 401 and "revoked" in r.text
    http.close()
    jar.close()
