"""The receiver plan against fixture receivers: a correct one passes every check, and each
deliberately broken one is caught by the check that targets its violation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conformance.registry import Outcome
from tests.conformance.helpers import (
    Fault,
    assert_fault_caught,
    describe_failures,
    fault_test_id,
    fixture_receiver,
    group_faults,
    run_rx,
    untargeted_checks,
)

CORPUS = "kit-receiver-bad-set-corpus"
WIRE = "kit-receiver-wire"
HAPPY = "openid-ssf-receiver-happypath"
CD = "openid-ssf-receiver-stream-create-delete"
SU = "openid-ssf-receiver-stream-status-update"
VER = "openid-ssf-receiver-stream-verification"
UNS = "openid-ssf-receiver-unsolicited-stream-verification"
EVT = "openid-ssf-receiver-stream-supported-events"
CAEP = "openid-ssf-receiver-stream-caep-interop"
CRIT = "kit-receiver-critical-subject-members"
REMOVED = "kit-receiver-removed-subjects"
ISS = "kit-receiver-stream-iss"
TLS = "kit-receiver-tls"

POLL = {"delivery": "poll"}
CAEPP = {"profile": "caep-interop"}
CORPUS_CASES = [
    "bad-signature", "unknown-kid", "alg-none", "hmac-public-key", "wrong-typ", "wrong-iss", "wrong-aud",
    "sub-present", "exp-present", "no-sub-id", "iat-future", "malformed", "two-events", "wrong-content-type",
    "oversized", "push-no-authorization", "push-wrong-authorization",
]  # fmt: skip

# (fault, module, check that must fail, fixture options, kit options)
FAULTS: list[Fault] = [
    *[("accept-all", CORPUS, f"corpus.{c}", {}, {}) for c in CORPUS_CASES],
    ("no-auth-check", CORPUS, "corpus.push-no-authorization", {}, {}),
    ("no-auth-check", CORPUS, "corpus.push-wrong-authorization", {}, {}),
    ("err-always-invalid-request", CORPUS, "corpus.wrong-iss", {}, {}),
    ("err-always-invalid-request", CORPUS, "corpus.wrong-aud", {}, {}),
    ("no-state-check", CORPUS, "corpus.wrong-state", {}, {}),
    ("replay-accepted", CORPUS, "corpus.jti-reuse", {}, {}),
    ("resend-refused", CORPUS, "corpus.identical-resend", {}, {}),
    ("record-before-validate", CORPUS, "corpus.no-state-change", {}, {}),
    ("reject-all", CORPUS, "corpus.valid-accepted", {}, {}),
    ("error-text-plain", CORPUS, "corpus.error-body", {}, {}),
    ("accept-all", CORPUS, "corpus.wrong-iss", {"delivery": "poll"}, POLL),
    ("record-before-validate", CORPUS, "corpus.no-state-change", {"delivery": "poll"}, POLL),
    ("transmitter-supplied", HAPPY, "rx.happypath.create", {}, {}),
    ("transmitter-supplied", CD, "rx.create-delete.create", {}, {}),
    ("transmitter-supplied", SU, "rx.status-update.create", {}, {}),
    ("transmitter-supplied", VER, "rx.verification.create", {}, {}),
    ("transmitter-supplied", UNS, "rx.create", {}, {}),
    ("no-read", HAPPY, "rx.happypath.read", {}, {}),
    ("no-update", HAPPY, "rx.happypath.update", {}, {}),
    ("no-replace", HAPPY, "rx.happypath.replace", {}, {}),
    ("no-delete", HAPPY, "rx.happypath.delete", {}, {}),
    ("no-delete", CD, "rx.create-delete.delete", {}, {}),
    ("no-status", SU, "rx.status-update.status-update", {}, {}),
    ("no-delete", SU, "rx.status-update.delete", {}, {}),
    ("no-verify", VER, "rx.verification.verify", {}, {}),
    ("reject-all", VER, "rx.verification.accepted", {}, {}),
    ("no-delete", VER, "rx.verification.delete", {}, {}),
    ("reject-unsolicited", UNS, "rx.unsolicited.accepted", {}, {}),
    ("no-delete", UNS, "rx.unsolicited.delete", {}, {}),
    ("reject-risc", EVT, "rx.supported-events.accepted", {}, {}),
    ("no-verify", EVT, "rx.supported-events.accepted", {}, {}),
    ("no-delete", EVT, "rx.supported-events.delete", {}, {}),
    ("caep-no-interop", CAEP, "rx.caep.events-requested", {}, CAEPP),
    ("no-read", CAEP, "rx.caep.read", {}, CAEPP),
    ("no-verify", CAEP, "rx.caep.verify", {}, CAEPP),
    ("no-status-read", CAEP, "rx.caep.status-read", {}, CAEPP),
    ("reject-all", CAEP, "rx.caep.accepted", {}, CAEPP),
    ("act-on-critical", CRIT, "rx.critical-member.discarded", {}, {}),
    ("act-on-critical", CRIT, "rx.critical-member.discarded", {"delivery": "poll"}, POLL),
    ("refuse-removed", REMOVED, "rx.removed-subject.tolerated", {}, {}),
    ("refuse-removed", REMOVED, "rx.removed-subject.tolerated", {"delivery": "poll"}, POLL),
    ("ignore-stream-iss", ISS, "rx.stream-iss.checked", {}, {}),
    ("tls-no-verify", TLS, "rx.tls.self-signed", {}, {}),
    ("tls-no-verify", TLS, "rx.tls.wrong-host", {}, {}),
    ("tls-no-hostname-check", TLS, "rx.tls.wrong-host", {}, {}),
    ("discovery-post", WIRE, "rx.discovery", {}, {}),
    ("no-scope", WIRE, "rx.token-scope", {}, {}),
    ("no-bearer-on-read", WIRE, "rx.bearer", {}, {}),
    ("transmitter-supplied", WIRE, "rx.create-body", {}, {}),
    ("patch-with-iss", WIRE, "rx.update-body", {}, {}),
    ("delete-in-body", WIRE, "rx.stream-id-query", {}, {}),
    ("push-200", WIRE, "rx.push-202", {}, {}),
    ("push-body", WIRE, "rx.push-empty-body", {}, {}),
    # nothing is ever acknowledged here: short waits per SET keep these quick
    (
        "poll-no-ack",
        WIRE,
        "rx.poll-ack",
        {"delivery": "poll"},
        {**POLL, "event_timeout": 0.5, "corpus": False, "wait": 2.0},
    ),
    (
        "poll-drop-query",
        WIRE,
        "rx.poll-query-kept",
        {"delivery": "poll"},
        {**POLL, "event_timeout": 0.5, "corpus": False, "wait": 2.0},
    ),
]

NOT_FAULT_TESTED: dict[str, str] = {}


GROUPS = group_faults(FAULTS)


@pytest.mark.parametrize(
    ("fault", "module", "check_ids", "fx_opts", "opts"),
    GROUPS,
    ids=[fault_test_id(f, m, o) for f, m, _, _, o in GROUPS],
)
async def test_fault_is_reported_by_its_check(
    fault: str, module: str, check_ids: list[str], fx_opts: dict[str, Any], opts: dict[str, Any]
) -> None:
    with fixture_receiver([fault], **fx_opts) as fx:
        report = await run_rx(fx, only=[module], **opts)
    assert_fault_caught(report, fault, module, check_ids)


@pytest.mark.parametrize(("delivery", "profile"), [("push", "default"), ("poll", "caep-interop")])
async def test_correct_receiver_passes_every_check(delivery: str, profile: str) -> None:
    with fixture_receiver(delivery=delivery) as fx:
        report = await run_rx(fx, profile=profile)
    assert not report.failures(), describe_failures(report)
    assert all(m.skipped_reason is None for m in report.modules)
    passed = {r.check.id for r in report.results() if r.outcome is Outcome.PASSED}
    assert "corpus.no-state-change" in passed and "rx.supported-events.accepted" in passed
    # the kit's own modules judged something (a skipped check would prove nothing)
    beyond = {
        "rx.critical-member.discarded",
        "rx.stream-iss.checked",
        "rx.tls.self-signed",
        "rx.tls.wrong-host",
    }
    if profile == "default":
        beyond.add("rx.removed-subject.tolerated")
    assert beyond <= passed, describe_failures(report)


async def test_no_receiver_skips_stream_modules() -> None:
    """Nobody points a receiver at the kit: stream modules skip, and nothing passes falsely."""
    from conformance.rx import ReceiverOptions, run_receiver_plan

    report = await run_receiver_plan(ReceiverOptions(wait=0.3, idle=0.2))
    assert all(m.skipped_reason for m in report.modules)
    assert not [r for r in report.results() if r.outcome is Outcome.PASSED]


async def test_corpus_straight_at_a_push_url() -> None:
    """--push-url mode: no stream is created through the kit; the corpus still runs."""
    from conformance.rx import ReceiverOptions, run_receiver_plan
    from tests.conformance.fixture_receiver import PUSH_SECRET

    with fixture_receiver() as fx:
        port_holder: dict[str, str] = {}

        async def trust(issuer: str) -> None:
            # configure the receiver out of band for the kit's issuer (as an operator would)
            await fx.configure_out_of_band(issuer, "https://receiver.example.com")
            port_holder["issuer"] = issuer

        opts = ReceiverOptions(
            push_url=fx.base_url + "/push", push_auth=PUSH_SECRET, start_hook=trust, wait=0.2, idle=0.2
        )
        report = await run_receiver_plan(opts, only=[CORPUS])
    assert not report.failures(), describe_failures(report)
    assert report.modules[0].skipped_reason is None
    passed = {r.check.id for r in report.results() if r.outcome is Outcome.PASSED}
    assert {"corpus.wrong-iss", "corpus.jti-reuse", "corpus.no-state-change"} <= passed


def test_every_receiver_check_is_targeted_by_a_fault() -> None:
    untested = untargeted_checks("receiver", FAULTS, NOT_FAULT_TESTED)
    assert not untested, f"checks no test makes fail: {sorted(untested)}"


async def test_probe_sessions_restart_the_receiver_through_commands(tmp_path: Path) -> None:
    """--start-cmd/--stop-cmd: one session at the main issuer, then one per probe issuer, with
    {ca_file} written before the first start; a receiver that never shows up is judged nowhere."""
    from conformance.rx import ReceiverOptions, run_receiver_plan

    log, ca = tmp_path / "log", tmp_path / "ca.pem"
    opts = ReceiverOptions(
        start_cmd=f"echo start {{issuer}} {{ca_file}} >> {log}",
        stop_cmd=f"echo stop {{issuer}} >> {log}",
        ca_file=str(ca),
        wait=0.3,
        idle=0.2,
        probe_window=0.1,
    )
    report = await run_receiver_plan(opts, only=["kit-receiver-stream-iss", "kit-receiver-tls"])
    lines = [line.split() for line in log.read_text().splitlines()]
    starts = [words[1] for words in lines if words[0] == "start"]
    stops = [words[1] for words in lines if words[0] == "stop"]
    # main, wrong-iss, self-signed, CA-signed control (no wrong-host: the CA was not trusted)
    assert len(starts) == 4 and stops == starts, lines
    assert starts[0].startswith("http://") and starts[1].startswith("http://")
    assert all(s.startswith("https://127.0.0.1:") for s in starts[2:])
    assert {words[2] for words in lines if words[0] == "start"} == {str(ca)}
    assert ca.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert all(m.skipped_reason for m in report.modules)
