"""Structured logs of `ssf transmitter serve`: one JSON object per line, a delivery line with
stream, jti and txn for every push, and never the push authorization_header or a token."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from hypothesis import given, strategies as st

from ssf import logs
from ssf.logs import JsonFormatter, RedactingFilter, redact
from ssfcli import logs as log_runtime
from tests.support.services import free_port
from tests.transmitter.conftest import SESSION_REVOKED, Sink, make_settings, wait_until
from transmitter.service import Transmitter

SECRET = "Bearer s3cr3t-push-credential-0123456789abcdef"


def test_delivery_lines_are_json_and_never_hold_a_secret(tmp_path: Path, sink: Sink) -> None:
    port = free_port()
    db = {"database_url": f"sqlite:///{tmp_path / 'tx.db'}"}
    settings = make_settings(tmp_path, db, port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSF_")}
    for name, value in settings.model_dump(exclude_none=True).items():
        if name == "allowed_push_destinations":
            continue
        env["SSF_TRANSMITTER_" + name.upper()] = str(value)
    env["SSF_TRANSMITTER_DEV_MODE"] = "1"
    tx = Transmitter(settings)  # same database and secret file as the process under test
    info, client_secret = tx.auth.add_client("rx", None, None)
    pub_info, pub_secret = tx.auth.add_client("idp", ["ssf.publish"], None)
    log_path = tmp_path / "tx.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ssfcli",
                "transmitter",
                "serve",
                "--port",
                str(port),
                "--log-level",
                "debug",
            ],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(timeout=10) as http:
                wait_until(lambda: _up(http, base), timeout=30)

                def token(cid: str, secret: str) -> str:
                    r = http.post(
                        base + "/oauth/token", data={"grant_type": "client_credentials"}, auth=(cid, secret)
                    )
                    return str(r.json()["access_token"])

                rx, idp = token(info.client_id, client_secret), token(pub_info.client_id, pub_secret)
                sink.script.append((503, {"Retry-After": "0"}, b""))  # one failure line too
                r = http.post(
                    base + "/ssf/streams",
                    headers={"Authorization": f"Bearer {rx}"},
                    json={
                        "delivery": {
                            "method": "urn:ietf:rfc:8935",
                            "endpoint_url": sink.url,
                            "authorization_header": SECRET,
                        },
                        "events_requested": [SESSION_REVOKED],
                    },
                )
                assert r.status_code == 201, r.text
                sid = r.json()["stream_id"]
                r = http.post(
                    base + "/events",
                    headers={"Authorization": f"Bearer {idp}"},
                    json={
                        "subject": {"format": "email", "email": "alice@example.com"},
                        "events": {SESSION_REVOKED: {}},
                        "txn": "txn-42",
                    },
                )
                assert r.status_code == 202, r.text
                jti = r.json()["jti"][sid]
                pushes = sink.wait_for(2)
                assert pushes[-1].headers["authorization"] == SECRET  # it was really used
                wait_until(lambda: '"push delivered"' in log_path.read_text())
                # a bad token and a stream read with the token in the header: still nothing logged
                http.get(base + "/ssf/streams", headers={"Authorization": "Bearer " + rx + "x"})
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    tx.close()
    text = log_path.read_text()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    records = [json.loads(ln) for ln in lines]  # every line is one JSON object
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    deliveries = [r for r in records if r["logger"] == "transmitter.delivery"]
    assert {r["msg"] for r in deliveries} >= {"push failed", "push delivered"}
    for r in deliveries:
        assert r["stream_id"] == sid and r["jti"] == jti and r["txn"] == "txn-42", r
    secret_part = SECRET.split(" ", 1)[1]
    for needle in (secret_part, rx, idp, client_secret, pub_secret):
        assert needle not in text


def test_redaction_of_messages_and_fields() -> None:
    import logging

    record = logging.LogRecord("t", logging.INFO, __file__, 1, "got %s", ("Bearer abcdefghijk",), None)
    record.authorization_header = "Basic dXNlcjpwYXNz"
    record.url = "https://user:pw@example.com/push"
    record.detail = {"access_token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", "n": 1}
    RedactingFilter().filter(record)
    out = json.loads(JsonFormatter().format(record))
    assert out["msg"] == "got Bearer [redacted]"
    assert out["authorization_header"] == "[redacted]"
    assert out["url"] == "https://[redacted]@example.com/push"
    assert out["detail"] == {"access_token": "[redacted]", "n": 1}
    assert redact('{"authorization_header": "Token zzz"}') == '{"authorization_header": "[redacted]"}'
    assert "eyJ" not in redact("set eyJhbGciOiJFUzI1NiJ9.eyJqdGkiOiJ4In0.sig tail")


_FRAGMENTS = st.sampled_from(
    [
        "Bearer abcd1234",
        "BASIC dXNlcjpw",
        "dPoP ",
        "token=",
        "eyJhbGc.eyJx.c2ln",
        "eyj",
        "https://u:p@host",
        "://",
        "@",
        "Authorization: ",
        "client_SECRET=",
        '"access_token": "x"',
        "'",
        " ",
        "abcdEFGH1234",
        "-_~+/.",
    ]
)


@given(st.lists(st.one_of(_FRAGMENTS, st.text(max_size=8)), max_size=12).map("".join))
def test_redact_skips_no_text_a_pattern_would_change(text: str) -> None:
    # The trigger pre-check is only a shortcut: every pattern applied unconditionally, in
    # order, must give the same text.
    expected = text
    for pattern, repl in logs._PATTERNS:
        expected = pattern.sub(repl, expected)
    assert redact(text) == expected


def _up(http: httpx.Client, base: str) -> bool:
    try:
        return http.get(base + "/healthz").status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def _configured(**kwargs: Any) -> Iterator[logging.Logger]:
    """configure_logging as serve does; afterwards the writer stopped and the root logger's
    handlers and level as they were. Yields the root logger."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        log_runtime.configure_logging("json", "INFO", **kwargs)
        yield root
    finally:
        log_runtime.stop_logging()
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


def test_logging_never_blocks_when_nobody_reads() -> None:
    """A stalled stderr (a full pipe) must not stall the service: records are dropped instead."""
    release = threading.Event()

    class Stalled(io.StringIO):
        def write(self, s: str) -> int:
            release.wait(10)
            return super().write(s)

    out = Stalled()
    before = log_runtime.dropped_records()
    with _configured(stream=out, queue_size=5):
        try:
            lg = logging.getLogger("transmitter.delivery")
            for i in range(50):  # returns at once although the writer is stuck on the first line
                lg.info("push delivered", extra={"jti": f"j{i}", "authorization_header": "Bearer zzzzzzzzzz"})
            assert log_runtime.dropped_records() - before >= 40
        finally:
            release.set()  # before the writer is stopped (it waits for the stream)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert lines and lines[0]["jti"] == "j0" and lines[0]["authorization_header"] == "[redacted]"
    assert "zzzzzzzzzz" not in out.getvalue()


def test_a_full_queue_is_written_out_in_bounded_pieces() -> None:
    """The writer takes at most one queue's worth per write and goes on while more waits; at
    stop everything queued is written."""
    out = io.StringIO()
    before = log_runtime.dropped_records()
    with _configured(stream=out, queue_size=25, interval=60):
        lg = logging.getLogger("receiver.sets")
        for i in range(25):  # fills the queue exactly; the writer sleeps (interval 60 s)
            lg.info("set accepted", extra={"jti": f"j{i}"})
    assert log_runtime.dropped_records() == before
    assert [json.loads(x)["jti"] for x in out.getvalue().splitlines()] == [f"j{i}" for i in range(25)]


def test_arguments_and_tracebacks_reach_the_line_redacted() -> None:
    """The queue handler applies arguments and renders the traceback on the caller's thread
    (the writer formats later); a handler after it reads the same record."""

    class Later(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[tuple[str, str | None]] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.seen.append((record.getMessage(), record.exc_text))

    out, later = io.StringIO(), Later()
    with _configured(stream=out) as root:
        root.addHandler(later)
        lg = logging.getLogger("receiver.push")
        try:
            raise ValueError(f"refused {SECRET}")
        except ValueError:
            lg.exception("push from %s failed with %d", "10.0.0.7", 400, extra={"jti": "j1"})
    (line,) = [json.loads(x) for x in out.getvalue().splitlines()]
    assert line["msg"] == "push from 10.0.0.7 failed with 400" and line["jti"] == "j1"
    assert "ValueError: refused Bearer [redacted]" in line["exc"] and "s3cr3t" not in out.getvalue()
    ((message, exc_text),) = later.seen
    assert message == "push from 10.0.0.7 failed with 400" and exc_text and "ValueError" in exc_text
