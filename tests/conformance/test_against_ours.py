"""Both plans against OUR transmitter and receiver, started as real processes on loopback:
every FAILURE-level check must pass."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conformance.registry import Severity
from conformance.report import Report
from conformance.rx import ReceiverOptions, run_receiver_plan
from conformance.tx import TransmitterOptions, run_transmitter_plan
from tests.conformance.helpers import FAST, describe_failures
from tests.support.services import free_port

BIN = Path(sys.executable).parent
SSF = str(BIN / "ssf")


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"process exited with {proc.returncode}: {err[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1, trust_env=False).status_code < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class OurTransmitter:
    def __init__(self, tmp: Path, **settings: Any) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}/tx"
        self.env = {
            **os.environ,
            "SSF_TRANSMITTER_ISSUER": self.issuer,
            "SSF_TRANSMITTER_DEV_MODE": "true",
            "SSF_TRANSMITTER_DATABASE_URL": f"sqlite:///{tmp / 'tx.db'}",
            "SSF_TRANSMITTER_SECRET_FILE": str(tmp / "tx.secret"),
            "SSF_TRANSMITTER_ALLOWED_PUSH_DESTINATIONS": "127.0.0.1",
            "SSF_TRANSMITTER_LONG_POLL_TIMEOUT": "2",
            "SSF_TRANSMITTER_WORKER_POLL_INTERVAL": "0.2",
            "SSF_TRANSMITTER_RETRY_BASE_SECONDS": "0.1",
            "SSF_TRANSMITTER_DEFAULT_SUBJECTS": "NONE",
            **{f"SSF_TRANSMITTER_{k.upper()}": str(v) for k, v in settings.items()},
        }

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [SSF, "transmitter", *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    def client(self, name: str, *extra: str) -> tuple[str, str]:
        lines = dict(
            line.split("=", 1) for line in self.cli("client", "add", name, *extra).splitlines() if "=" in line
        )
        return lines["client_id"], lines["client_secret"]

    @contextlib.contextmanager
    def running(self) -> Iterator[OurTransmitter]:
        proc = subprocess.Popen(
            [SSF, "transmitter", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            _wait_http(f"http://127.0.0.1:{self.port}/.well-known/ssf-configuration/tx", proc)
            yield self
        finally:
            _stop(proc)

    def command(self, *args: str) -> str:
        """A shell command (for the kit's --status-cmd / --rotate-cmd) with this process's settings."""
        env = " ".join(f"{k}={v}" for k, v in self.env.items() if k.startswith("SSF_TRANSMITTER_"))
        return f"env {env} {SSF} transmitter {' '.join(args)} >/dev/null"


#: FAILURE-level checks our peers fail today. They are reported to the lead for a fix in the
#: service (never by weakening the check) and tolerated here only so main stays green; every
#: other FAILURE check must pass. Delete an entry once its fix lands.
KNOWN_DEFECTS: dict[str, str] = {}


def _failures(report: Report) -> list[str]:
    """FAILURE-level failures other than the known, reported defects."""
    return [
        f"{r.module} :: {r.check.id}: {r.message}"
        for r in report.failures(Severity.FAILURE)
        if r.check.id not in KNOWN_DEFECTS
    ]


#: A whole plan against real processes takes ~20 s on a quiet machine; a loaded one (other
#: suites on the same 2 cores) has taken over 120 s, the default per-test limit.
WHOLE_PLAN = pytest.mark.timeout(400)


@WHOLE_PLAN
@pytest.mark.parametrize(
    ("delivery", "profile"), [("push", "default"), ("poll", "caep-interop")], ids=["push", "poll-caep"]
)
async def test_our_transmitter_passes_every_failure_check(
    tmp_path: Path, delivery: str, profile: str
) -> None:
    tx = OurTransmitter(tmp_path, maintenance_interval=1)  # picks a CLI key rotation up within 1 s
    cid, secret = tx.client("kit")
    pid, psecret = tx.client("kit-publisher", "--publisher")
    with tx.running():
        opts = TransmitterOptions(
            issuer=tx.issuer,
            client_id=cid,
            client_secret=secret,
            publish_client_id=pid,
            publish_client_secret=psecret,
            delivery=delivery,
            profile=profile,
            allow_http_loopback=True,
            status_cmd=tx.command("streams", "status", "{stream_id}", "{status}"),
            rotate_cmd=tx.command("keys", "rotate"),
            **{**FAST, "event_timeout": 8.0, "settle": 0.5, "key_rotation_wait": 8.0},
        )
        report = await run_transmitter_plan(opts)
    assert not _failures(report), (
        "\n" + "\n".join(_failures(report)) + "\n\nall:\n" + describe_failures(report)
    )


class OurReceiver:
    """`ssf receiver serve`, started by the kit's start hook once the kit's issuer is up, and
    stopped by its stop hook (the kit starts it again at other issuers for its probe sessions)."""

    AUDIENCE = "https://resource.example.com"
    #: A known push credential, so the operator's PUT can carry it (the kit redacts it on reads).
    PUSH_AUTH = "Bearer kit-test-push-credential"

    def __init__(self, tmp: Path, delivery: str) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.delivery = delivery
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.ca_file = tmp / "kit-ca.pem"
        self.probe_url = f"http://127.0.0.1:{self.port}/protected/whoami"

    async def start(self, issuer: str) -> None:
        await asyncio.to_thread(self.stop)  # never block the loop the kit serves on
        self.starts += 1
        env = {
            **os.environ,
            "SSF_RECEIVER_TRANSMITTER_ISSUER": issuer,
            "SSF_RECEIVER_DEV_MODE": "true",
            "SSF_RECEIVER_CLIENT_ID": "kit-receiver",
            "SSF_RECEIVER_CLIENT_SECRET": "kit-receiver-secret",
            "SSF_RECEIVER_DELIVERY": self.delivery,
            "SSF_RECEIVER_PUSH_URL": f"http://127.0.0.1:{self.port}/ssf/push",
            "SSF_RECEIVER_PUSH_AUTHORIZATION": self.PUSH_AUTH,
            "SSF_RECEIVER_DATABASE_URL": f"sqlite:///{self.tmp / f'rx{self.starts}.db'}",
            "SSF_RECEIVER_POLL_TIMEOUT": "5",
            "SSF_RECEIVER_JWKS_MIN_REFRESH_INTERVAL": "0",
            # a refused transmitter (probe sessions) is retried in the background at once: SIGTERM
            # is not answered while the start-up retry loop runs (reported to the lead)
            "SSF_RECEIVER_STARTUP_TIMEOUT": "1",
            # the protected demo resource accepts the kit's access tokens (critical-member probe)
            "SSF_RECEIVER_TOKEN_ISSUER": issuer,
            "SSF_RECEIVER_TOKEN_JWKS_URL": issuer + "/jwks",
            "SSF_RECEIVER_TOKEN_AUDIENCE": self.AUDIENCE,
        }
        if self.ca_file.exists():  # written by the kit when its TLS module runs
            # the kit's throwaway CA is the only one trusted (TLS probes; httpx reads SSL_CERT_FILE)
            env["SSL_CERT_FILE"] = str(self.ca_file)
        self.proc = subprocess.Popen(
            [SSF, "receiver", "serve", "--port", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.issuer = issuer

    async def stop_hook(self, issuer: str) -> None:
        await asyncio.to_thread(self.stop)

    async def operator(self, issuer: str) -> None:
        """What the suite's operator does by hand: PATCH, PUT, status update, subject removal,
        DELETE.

        Our receiver has no command for these, so they go through its own transmitter client
        library with its credentials (see the report: `ssf receiver` lacks stream commands).
        """
        from receiver.client import ClientCredentials, TransmitterClient
        from receiver.discovery import discover, discover_token_endpoint
        from ssf.subjects import parse_subject

        async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
            md = await discover(http, issuer, dev_mode=True)
            auth = ClientCredentials(
                http,
                await discover_token_endpoint(http, issuer),
                "kit-receiver",
                "kit-receiver-secret",
                "ssf.read ssf.manage",
            )
            client = TransmitterClient(md, http, auth)
            streams = await client.list()
            for cfg in streams:
                sid = cfg.stream_id
                await client.read(sid)
                await client.update(sid, {"description": "updated by the operator"})
                body = {
                    k: v
                    for k, v in cfg.to_json().items()
                    if k in ("events_requested", "delivery", "description")
                }
                if body["delivery"].get("authorization_header"):  # redacted on reads
                    body["delivery"]["authorization_header"] = self.PUSH_AUTH
                await client.replace(sid, body)
                await client.set_status(sid, "enabled", "operator")
                if md.remove_subject_endpoint:
                    removed = parse_subject({"format": "email", "email": "removed-user@example.com"})
                    await client.remove_subject(sid, removed)
                await client.delete(sid)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)


@WHOLE_PLAN
@pytest.mark.parametrize("delivery", ["push", "poll"])
async def test_our_receiver_passes_every_failure_check(tmp_path: Path, delivery: str) -> None:
    rx = OurReceiver(tmp_path, delivery)
    try:
        opts = ReceiverOptions(
            delivery=delivery,
            start_hook=rx.start,
            finish_hook=rx.operator,
            stop_hook=rx.stop_hook,
            probe_url=rx.probe_url,
            probe_audience=rx.AUDIENCE,
            ca_file=str(rx.ca_file),
            probe_window=2.0,
            wait=60,
            idle=15,
            push_delay=0.1,
            long_poll=1.0,
            event_timeout=10.0,
        )
        # the probe sessions (a restarted receiver: wrong stream iss, bad TLS) do not depend on
        # the delivery method: judged once, in the push run
        probes = ["kit-receiver-stream-iss", "kit-receiver-tls"] if delivery == "poll" else []
        report = await run_receiver_plan(opts, skip=probes)
    finally:
        rx.stop()
    assert not _failures(report), (
        "\n" + "\n".join(_failures(report)) + "\n\nall:\n" + describe_failures(report)
    )
    skipped = [f"{m.name}: {m.skipped_reason}" for m in report.modules if m.skipped_reason is not None]
    assert not skipped, skipped
    passed = {r.check.id for r in report.results() if r.outcome.value == "passed"}
    beyond = {"rx.critical-member.discarded", "rx.removed-subject.tolerated"}
    if delivery == "push":
        beyond |= {"rx.stream-iss.checked", "rx.tls.self-signed", "rx.tls.wrong-host"}
    assert beyond <= passed, describe_failures(report)


async def test_our_transmitter_inactivity_timeout(tmp_path: Path) -> None:
    """Short inactivity_timeout: activity keeps the stream enabled; silence pauses it (stream-updated)."""
    tx = OurTransmitter(tmp_path, maintenance_interval=0.5, inactivity_timeout=2)
    cid, secret = tx.client("kit")
    with tx.running():
        opts = TransmitterOptions(
            issuer=tx.issuer,
            client_id=cid,
            client_secret=secret,
            allow_http_loopback=True,
            **{**FAST, "event_timeout": 8.0, "settle": 0.5},
        )
        report = await run_transmitter_plan(opts, only=["kit-transmitter-inactivity-timeout"])
    assert not _failures(report), "\n".join(_failures(report))
    passed = {r.check.id for r in report.results() if r.outcome.value == "passed"}
    assert {"inactivity.timer-reset", "inactivity.acts", "inactivity.stream-updated"} <= passed, (
        describe_failures(report)
    )
