"""``make demo`` end to end: real services, real refusals, a clean exit; and it never fakes one."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from typing import IO, Any

import httpx
import pytest
from rich.console import Console

from demo.run import main
from demo.stack import Api, Stack
from receiver.settings import DEFAULT_EVENTS
from ssf.events import AssuranceLevelChange

WIDE = {
    **{k: v for k, v in os.environ.items() if not k.startswith("SSF_")},
    "COLUMNS": "220",
    "NO_COLOR": "1",
}


def test_make_demo_runs_push_and_poll_and_shows_each_refusal() -> None:
    # A proxy in the environment (a dead one here) must not catch the demo's loopback traffic.
    proxied = {**WIDE, "HTTP_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    done = subprocess.run(
        [sys.executable, "-m", "demo"], env=proxied, capture_output=True, text=True, timeout=100
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    # It explains itself first.
    assert "Continuous authorization" in out and "the very next request" in out
    # Both receivers created and verified their streams.
    assert re.search(r"API \(push\) .*created stream s_\S+ \(push: http://127\.0\.0\.1:\d+/ssf/push\)", out)
    assert re.search(r"API \(poll\) .*created stream s_\S+ \(poll: http://127\.0\.0\.1:\d+/ssf/poll/", out)
    assert out.count("verified=True") == 2
    # Each change: allowed before, then refused (or challenged) on both APIs, with a time.
    for api in ("push", "poll"):
        revoked = rf"API \({api}\) +GET /protected/whoami → 401 invalid_token .*: refused [\d.]+ ms after"
        assert len(re.findall(revoked, out)) == 2, api  # session ended, device not compliant
        step_up = (
            rf"API \({api}\) +GET /protected/whoami → 401 insufficient_user_authentication, "
            rf"acr_values=nist-aal2 .*a step-up challenge \(RFC 9470\), [\d.]+ ms after"
        )
        assert re.search(step_up, out), api
        allowed = rf"API \({api}\) +GET /protected/whoami → 200 OK: allowed again, [\d.]+ ms after"
        assert len(re.findall(allowed, out)) == 2, api
    for event in ("session-revoked", "device-compliance-change", "assurance-level-change"):
        assert f"publishes CAEP {event}" in out
    # Each sign-in shows what the access token binds: user, session, assurance, device.
    logins = re.findall(
        r"sub=248289761001, sid=s-\S+, acr=nist-aal2, device_id=laptop-(\d), valid 60 min", out
    )
    assert logins == ["1", "2", "3"]
    # One real SET, as it arrived on the wire, decoded for the reader.
    shown = out[out.index("The SET as it reached API (push)'s /ssf/push") :]
    assert '"typ": "secevent+jwt"' in shown and '"format": "complex"' in shown
    assert '"https://schemas.openid.net/secevent/caep/event-type/session-revoked": {' in shown
    # The results table: ten rows, all as expected, each with a measured time.
    rows = [line for line in out.splitlines() if re.match(r"^│ .* ms │$", line)]
    assert len(rows) == 10, "\n".join(rows)
    assert all("✓" in row and "✗" not in row for row in rows)
    assert all(re.search(r"│ +[\d.]+ ms │ +[\d.]+ ms │$", row) for row in rows)
    assert "That is continuous authorization." in out
    assert "FAILED" not in out and "failed" not in out
    assert out.rstrip().endswith("All services stopped.")


def _read_until(stream: IO[str], marker: str, timeout: float) -> str:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"no {marker!r} in output:\n{''.join(seen)}")


def test_serve_keeps_the_services_up_until_interrupted() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "demo", "--serve", "--delivery", "push"],
        env=WIDE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        out = _read_until(proc.stdout, "SERVING", 90)
        idp = re.search(r"identity provider +(http://127\.0\.0\.1:\d+)", out)
        api = re.search(r"API \(push\) +http://127\.0\.0\.1:\d+ +\(GET (\S+)\)", out)
        tx = re.search(r"SSF transmitter +(http://127\.0\.0\.1:\d+)", out)
        assert idp and api and tx, out
        creds = re.search(r"/oauth/token -u '([^:']+):([^']+)' -d grant_type=client_credentials", out)
        stream = re.search(r"created stream (s_\S+) \(push", out)
        assert creds and stream, out
        with httpx.Client(timeout=10) as http:
            assert http.get(f"{tx.group(1)}/.well-known/ssf-configuration").status_code == 200
            # The printed management credentials open the transmitter's admin console on this stream.
            mgmt = http.post(
                f"{tx.group(1)}/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(creds.group(1), creds.group(2)),
            )
            console = http.get(
                f"{tx.group(1)}/admin", headers={"Authorization": f"Bearer {mgmt.json()['access_token']}"}
            )
            assert console.status_code == 200 and stream.group(1) in console.text
            metrics = re.search(r"metrics +(\S+), (\S+)\n", out)
            assert metrics, out
            assert "ssf_transmitter_sets_published_total" in http.get(metrics.group(1)).text
            assert http.get(metrics.group(2)).status_code == 200
            login = http.post(f"{idp.group(1)}/login", json={"username": "grace", "device_id": "tablet-1"})
            auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
            assert http.get(api.group(1), headers=auth).status_code == 200
            lowered = http.post(f"{idp.group(1)}/admin/users/grace/assurance", json={"level": "nist-aal1"})
            assert lowered.status_code == 200
            deadline = time.monotonic() + 10
            answer = http.get(api.group(1), headers=auth)
            while answer.status_code == 200 and time.monotonic() < deadline:
                time.sleep(0.02)
                answer = http.get(api.group(1), headers=auth)
            assert answer.status_code == 401
            assert 'error="insufficient_user_authentication"' in answer.headers["www-authenticate"]
        # An impatient double Ctrl-C still ends in an orderly shutdown.
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, rest
        assert rest.rstrip().endswith("All services stopped.") and "Traceback" not in rest
        with pytest.raises(httpx.HTTPError):
            httpx.get(api.group(1), timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_refusal_that_does_not_come_fails_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    """An API that did not subscribe to assurance-level-change never hears of it: exit 1, saying why."""
    original = Stack.receiver_values

    def without_assurance(self: Stack, api: Api, port: int) -> dict[str, Any]:
        values = original(self, api, port)
        values["events"] = [e for e in DEFAULT_EVENTS if e != AssuranceLevelChange.event_type]
        return values

    monkeypatch.setattr(Stack, "receiver_values", without_assurance)
    buffer = io.StringIO()
    code = main(("push",), console=Console(file=buffer, width=220, no_color=True), refusal_timeout=0.5)
    out = buffer.getvalue()
    flat = " ".join(out.split())  # log lines wrap where their figures make them long
    assert code == 1
    assert "still allowed after 0.5 s: expected insufficient_user_authentication" in flat
    assert re.search(
        r"FAILED API \(push\), assurance lowered: "
        r"expected insufficient_user_authentication, got still allowed",
        flat,
    )
    # The transmitter had no stream to route it to; the other changes were still refused for real.
    assert "no stream asked for this event, so no SET was made" in flat
    assert len(re.findall(r"→ 401 invalid_token", out)) == 2
    assert re.search(r"assurance lowered .*│ still allowed ✗ expected 401 step-up │ +[\d.]+ ms │ +- │", out)
    assert "That is continuous authorization." not in out
