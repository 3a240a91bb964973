"""The transmitter plan against fixture transmitters: a correct one passes every check,
and each deliberately broken one is caught by the check that targets its violation."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.registry import Outcome, Severity
from tests.conformance.helpers import (
    Fault,
    assert_fault_caught,
    describe_failures,
    failed_ids,
    fault_test_id,
    fixture_transmitter,
    group_faults,
    run_tx,
    untargeted_checks,
)
from tests.support.services import free_port

P = "openid-ssf-stream-control-error-"
META = "openid-ssf-transmitter-metadata"
HAPPY = "openid-ssf-stream-control-happy-path"
VPUSH = "openid-ssf-transmitter-stream-verification-push"
VNOAUTH = "openid-ssf-transmitter-stream-verification-error-push-no-auth"
VPOLL = "openid-ssf-transmitter-stream-verification-poll-only"
VPOLLACK = "openid-ssf-transmitter-stream-verification-poll-and-ack"
VACK = "openid-ssf-transmitter-stream-verification-ack-only"
CAEP = "openid-ssf-transmitter-stream-caep-interop"
SUBJ = "openid-ssf-stream-subject-control"
CFG = "kit-transmitter-stream-config-rules"
AUTH = "kit-transmitter-authorization"
UPD = "kit-transmitter-stream-updated"
PAUSED = "kit-transmitter-paused-stream"
DISABLED = "kit-transmitter-disabled-stream"
INACT = "kit-transmitter-inactivity-timeout"
MATCH = "kit-transmitter-subject-matching"
CRIT = "kit-transmitter-critical-subject-members"
RATE = "kit-transmitter-verification-rate-limit"
LONG = "kit-transmitter-long-poll"
ACKS = "kit-transmitter-poll-acks"
ROT = "kit-transmitter-jwks-rotation"
CAT = "kit-transmitter-event-catalogue"

POLL = {"delivery": "poll"}
CAEPP = {"profile": "caep-interop"}
CAEP_POLL = {"profile": "caep-interop", "delivery": "poll"}

# (fault, module, check that must fail, kit options, fixture options)
FAULTS: list[Fault] = [
    # metadata
    ("metadata-content-type", META, "metadata.fetch", {}, {}),
    ("metadata-empty-array", META, "metadata.no-empty-arrays", {}, {}),
    ("metadata-issuer-mismatch", META, "metadata.issuer-matches", {}, {}),
    ("metadata-no-issuer", META, "metadata.issuer-present", {}, {}),
    ("metadata-no-jwks", META, "metadata.jwks", {}, {}),
    ("metadata-no-jwks", META, "metadata.caep-required-endpoints", CAEPP, {}),
    ("jwks-private", META, "metadata.jwks-public-only", {}, {}),
    ("default-subjects-bad", META, "metadata.default-subjects", {}, {}),
    ("auth-scheme-bad", META, "metadata.authorization-schemes", {}, {}),
    ("auth-scheme-bad", META, "metadata.caep-oauth-scheme", CAEPP, {}),
    ("no-spec-version", META, "metadata.caep-spec-version", CAEPP, {}),
    ("spec-version-dots", META, "metadata.spec-version", {}, {}),
    ("critical-bad", META, "metadata.critical-subject-members", {}, {}),
    ("metadata-no-delivery-methods", META, "metadata.delivery-methods", {}, {}),
    ("metadata-push-only", VPOLL, "metadata.delivery-method-offered", POLL, {}),
    ("token-lifetime", HAPPY, "auth.token-lifetime", {}, {}),
    # stream control happy path
    ("create-500", HAPPY, "stream.create", {}, {}),
    ("create-200", HAPPY, "stream.create-201", {}, {}),
    ("create-iss-wrong", HAPPY, "stream.create-iss", {}, {}),
    ("create-no-aud", HAPPY, "stream.create-aud", {}, {}),
    ("create-method-odd", HAPPY, "stream.create-delivery-method", {}, {}),
    ("create-no-events-delivered", HAPPY, "stream.create-required", {}, {}),
    ("read-no-iss", HAPPY, "stream.read", {}, {}),
    ("no-events-supported", HAPPY, "stream.events-supported", {}, {}),
    ("patch-400", HAPPY, "stream.update", {}, {}),
    ("put-400", HAPPY, "stream.replace", {}, {}),
    ("unknown-stream-200", P + "replace-unknown-stream", "errors.replace-unknown-stream", {}, {}),
    ("status-get-500", HAPPY, "status.read", {}, {}),
    ("status-post-500", HAPPY, "status.update", {}, {}),
    ("status-post-500", HAPPY, "status.update-200", {}, {}),
    ("delete-200", HAPPY, "stream.delete", {}, {}),
    ("delete-200", VPUSH, "teardown.delete", {}, {}),
    ("status-post-empty", HAPPY, "status.update-json", {}, {}),
    ("status-echo-wrong", HAPPY, "status.update-echo", {}, {}),
    ("poll-always-long", LONG, "poll.return-immediately", POLL, {}),
    ("list-500", HAPPY, "cleanup.read", {}, {}),
    # the error modules
    ("broken-json-accepted", P + "create-stream-with-broken-input", "errors.create-broken-input", {}, {}),
    ("invalid-token-accepted", P + "create-stream-with-invalid-token", "errors.create-invalid-token", {}, {}),
    ("duplicate-400", P + "create-stream-with-duplicate-config", "errors.create-duplicate", {}, {}),
    ("invalid-token-accepted", P + "read-stream-with-invalid-token", "errors.read-invalid-token", {}, {}),
    ("unknown-stream-200", P + "read-unknown-stream", "errors.read-unknown-stream", {}, {}),
    ("invalid-token-accepted", P + "update-stream-with-invalid-token", "errors.update-invalid-token", {}, {}),
    ("body-parse-after-lookup", P + "update-stream-with-invalid-body", "errors.update-invalid-body", {}, {}),
    ("unknown-stream-200", P + "update-unknown-stream", "errors.update-unknown-stream", {}, {}),
    ("broken-json-accepted", P + "replace-stream-with-invalid-body", "errors.replace-invalid-body", {}, {}),
    (
        "invalid-token-accepted",
        P + "replace-stream-with-invalid-token",
        "errors.replace-invalid-token",
        {},
        {},
    ),
    ("auth-after-lookup", P + "delete-stream-with-invalid-token", "errors.delete-invalid-token", {}, {}),
    ("unknown-stream-200", P + "delete-unknown-stream", "errors.delete-unknown-stream", {}, {}),
    # subject control
    ("create-iss-wrong", SUBJ, "subjects.create-iss", {}, {}),
    ("subject-add-204", SUBJ, "subjects.add-200", {}, {}),
    ("subject-remove-200", SUBJ, "subjects.remove-204", {}, {}),
    # SETs and push requests (verification, push)
    ("verify-200", VPUSH, "verification.trigger-204", {}, {}),
    ("verification-no-state", VPUSH, "verification.received", {}, {}),
    ("verification-wrong-state", VPUSH, "verification.state-echo", {}, {}),
    ("unsolicited-with-state", VPUSH, "verification.unsolicited-no-state", {}, {}),
    ("verification-wrong-sub-id", VPUSH, "verification.sub-id", {}, {}),
    ("verification-event-subject", VPUSH, "set.no-event-subject", {}, {}),
    ("event-invalid", VPUSH, "set.event-valid", {}, {}),
    ("set-typ", VPUSH, "set.typ", {}, {}),
    ("set-sub", VPUSH, "set.no-sub", {}, {}),
    ("set-exp", VPUSH, "set.no-exp", {}, {}),
    ("set-unsigned", VPUSH, "set.signature", {}, {}),
    ("set-iss", VPUSH, "set.iss", {}, {}),
    ("set-iat-future", VPUSH, "set.iat", {}, {}),
    ("set-aud", VPUSH, "set.aud", {}, {}),
    ("set-aud-other", VPUSH, "set.aud-subset", {}, {}),
    ("set-no-txn", VPUSH, "set.txn", {}, {}),
    ("set-no-sub-id", VPUSH, "set.sub-id", {}, {}),
    ("subject-type-legacy", VPUSH, "set.no-subject-type", {}, {}),
    ("set-two-events", VPUSH, "set.single-event", {}, {}),
    ("set-jti-reuse", UPD, "set.jti", {}, {}),
    ("push-no-auth", VPUSH, "push.authorization", {}, {}),
    ("push-content-type", VPUSH, "push.content-type", {}, {}),
    ("push-no-accept", VPUSH, "push.accept", {}, {}),
    ("push-json-body", VPUSH, "push.one-set", {}, {}),
    ("push-auth-always", VNOAUTH, "push.no-authorization", {}, {}),
    # poll
    ("poll-sets-array", VPOLL, "poll.response", POLL, {}),
    ("poll-ack-after-select", VPOLLACK, "poll.poll-and-ack", POLL, {}),
    ("poll-ack-only-400", VACK, "poll.ack-only", POLL, {}),
    ("poll-ignore-ack", ACKS, "poll.acked-not-redelivered", POLL, {}),
    ("poll-no-redeliver", ACKS, "poll.unacked-redelivered", POLL, {}),
    ("poll-ignore-max-events", ACKS, "poll.max-events", POLL, {}),
    ("poll-no-more-available", ACKS, "poll.more-available", POLL, {}),
    ("poll-set-errs-400", ACKS, "poll.set-errs-accepted", POLL, {}),
    ("poll-bad-body-200", ACKS, "poll.malformed-400", POLL, {}),
    ("poll-no-long-poll", LONG, "poll.long-poll-holds", POLL, {}),
    ("poll-no-long-poll", LONG, "poll.long-poll-wakes", POLL, {}),
    # CAEP interop
    ("create-200", CAEP, "caep.create-201", CAEPP, {}),
    ("create-iss-wrong", CAEP, "caep.create-iss", CAEPP, {}),
    ("create-no-aud", CAEP, "caep.create-aud", CAEPP, {}),
    ("create-method-odd", CAEP, "caep.create-delivery-method", CAEPP, {}),
    ("create-no-events-delivered", CAEP, "caep.create-required", CAEPP, {}),
    ("delivered-none", CAEP, "caep.events-delivered", CAEPP, {}),
    ("read-no-iss", CAEP, "caep.read", CAEPP, {}),
    ("supported-nonstandard", CAEP, "caep.events-supported", CAEPP, {}),
    ("supported-no-interop", CAEP, "caep.events-supported-interop", CAEPP, {}),
    ("status-get-500", CAEP, "caep.status-read", CAEPP, {}),
    ("drop-device-compliance", CAEP, "caep.all-delivered", CAEP_POLL, {}),
    ("caep-no-reason-admin", CAEP, "set.caep-reason-admin", CAEPP, {}),
    ("emit-sessions-revoked", CAEP, "set.no-sessions-revoked", CAEPP, {}),
    ("credential-type-custom", CAEP, "set.credential-change-values", CAEPP, {}),
    ("none", CAEP, "set.rs256", CAEPP, {"alg": "ES256"}),
    ("set-two-events", CAEP, "set.single-event", CAEPP, {}),
    # beyond the suite
    ("no-delivery-400", CFG, "config.create-without-delivery", {}, {}),
    ("list-object", CFG, "config.read-all-array", {}, {}),
    ("delivered-all", CFG, "config.events-delivered-subset", {}, {}),
    ("unknown-events-400", CFG, "config.unknown-events-ignored", {}, {}),
    ("patch-replaces", CFG, "config.patch-keeps-absent", {}, {}),
    ("patch-ignores-aud", CFG, "config.patch-transmitter-mismatch", {}, {}),
    ("put-keeps", CFG, "config.put-deletes-absent", {}, {}),
    ("delete-no-id-204", CFG, "config.delete-needs-stream-id", {}, {}),
    ("status-unknown-200", CFG, "config.status-unknown-404", {}, {}),
    ("status-no-auth", CFG, "config.status-unauthorized-401", {}, {}),
    ("status-bad-value", CFG, "config.status-value", {}, {}),
    ("stream-id-chars", CFG, "config.stream-id-unreserved", {}, {}),
    ("no-cache-control", CFG, "config.cache-control", {}, {}),
    ("poll-url-shared", CFG, "config.poll-url-unique", {}, {}),
    ("verify-unknown-204", CFG, "config.verify-unknown-404", {}, {}),
    ("anonymous-ok", AUTH, "auth.missing-token-401", {}, {}),
    ("no-www-authenticate", AUTH, "auth.www-authenticate", {}, {}),
    ("query-token", AUTH, "auth.no-query-token", CAEPP, {}),
    ("scope-ignored", AUTH, "auth.insufficient-scope-403", {}, {}),
    ("read-scope-refused", AUTH, "auth.read-scope", {}, {}),
    ("no-stream-updated", UPD, "stream-updated.sent", {}, {}),
    ("stream-updated-wrong-status", UPD, "stream-updated.status", {}, {}),
    ("stream-updated-sub-id", UPD, "stream-updated.shape", {}, {}),
    ("paused-delivers", PAUSED, "paused.no-delivery", {}, {}),
    ("paused-reverse", PAUSED, "paused.order", {}, {}),
    ("paused-drops", PAUSED, "paused.delivered-after-enable", {}, {}),
    ("status-post-500", PAUSED, "paused.status-accepted", {}, {}),
    ("status-post-500", DISABLED, "disabled.status-accepted", {}, {}),
    ("disabled-delivers", DISABLED, "disabled.no-delivery", {}, {}),
    ("disabled-keeps", DISABLED, "disabled.drops", {}, {}),
    ("inactivity-no-event", INACT, "inactivity.stream-updated", {}, {"inactivity_timeout": 1}),
    ("inactivity-ignores-activity", INACT, "inactivity.timer-reset", {}, {"inactivity_timeout": 1}),
    ("inactivity-never", INACT, "inactivity.acts", {}, {"inactivity_timeout": 1}),
    ("subjects-ignore-matching", MATCH, "matching.withholds-non-matching", {}, {}),
    ("matching-exact-only", MATCH, "matching.sends-matching", {}, {}),
    ("subject-add-204", MATCH, "matching.add-200", {}, {}),
    ("subject-lenient", MATCH, "matching.invalid-subject-400", {}, {}),
    ("subject-remove-200", MATCH, "matching.remove-204", {}, {}),
    (
        "critical-strip",
        CRIT,
        "critical.members-delivered",
        {},
        {"critical_subject_members": ["tenant", "user"]},
    ),
    ("rate-limit-500", RATE, "verification.rate-limit", {}, {"min_verification_interval": 1}),
    ("rate-no-retry-after", RATE, "verification.retry-after", {}, {"min_verification_interval": 1}),
    ("rate-limit-forever", RATE, "verification.interval-respected", {}, {"min_verification_interval": 1}),
    ("rotation-unpublished", ROT, "rotation.new-key-published", {}, {}),
    ("rotation-unpublished", ROT, "rotation.sets-verify", {}, {}),
    ("rotation-drops-old", ROT, "rotation.old-key-kept", {}, {}),
    ("risc-subject-opaque", CAT, "set.risc-identifier-subject", {}, {}),
    ("drop-device-compliance", CAT, "catalogue.delivered", {}, {}),
]

#: Checks no fixture fault reaches, each with the reason it is still a real check.
NOT_FAULT_TESTED = {
    "metadata.issuer-form": "exercised by test_http_endpoints_fail_without_loopback_allowance",
    "metadata.endpoints-https": "exercised by test_http_endpoints_fail_without_loopback_allowance",
    "auth.token": "exercised by test_wrong_client_secret_stops_every_module",
    "module.completed": "exercised by test_unreachable_peer_is_a_failure",
    "cleanup.delete": "INFO; needs a transmitter that refuses deleting its own stream",
    "poll.long-poll-prompt": "WARNING on wake-up latency; timing-based, not asserted in tests",
    "tls.modern": "exercised by tests/conformance/test_tls.py (real TLS listeners)",
    "tls.no-legacy": "exercised by tests/conformance/test_tls.py",
    "tls.13-offered": "exercised by tests/conformance/test_tls.py",
}


GROUPS = group_faults(FAULTS)


@pytest.mark.parametrize(
    ("fault", "module", "check_ids", "opts", "fx_opts"),
    GROUPS,
    ids=[fault_test_id(f, m, o) for f, m, _, o, _ in GROUPS],
)
async def test_fault_is_reported_by_its_check(
    fault: str, module: str, check_ids: list[str], opts: dict[str, Any], fx_opts: dict[str, Any]
) -> None:
    with fixture_transmitter([fault], **fx_opts) as fx:
        report = await run_tx(fx, only=[module], **opts)
    assert_fault_caught(report, fault, module, check_ids)


# push-default and poll-caep between them run every module of the plan at least once
@pytest.mark.parametrize("variant", [{}, CAEP_POLL], ids=["push-default", "poll-caep"])
async def test_correct_transmitter_passes_every_check(variant: dict[str, Any]) -> None:
    with fixture_transmitter(critical_subject_members=["tenant", "user"], min_verification_interval=1) as fx:
        report = await run_tx(fx, **variant)
    assert not report.failures(), describe_failures(report)
    assert not report.failed
    ran = {m.name for m in report.modules if m.skipped_reason is None}
    skipped = {m.name: m.skipped_reason for m in report.modules if m.skipped_reason}
    assert skipped == {
        INACT: "the stream has no inactivity_timeout",
        "kit-transmitter-tls": "the transmitter is not served over https",
    }
    assert META in ran and HAPPY in ran


async def test_inactivity_module_passes_on_a_correct_transmitter() -> None:
    with fixture_transmitter(inactivity_timeout=1) as fx:
        report = await run_tx(fx, only=[INACT])
    assert not report.failures(), describe_failures(report)
    passed = {r.check.id for r in report.results() if r.outcome is Outcome.PASSED}
    assert {"inactivity.timer-reset", "inactivity.stream-updated", "inactivity.acts"} <= passed


async def test_http_endpoints_fail_without_loopback_allowance() -> None:
    with fixture_transmitter() as fx:
        report = await run_tx(fx, only=[META], allow_http_loopback=False)
    assert {"metadata.issuer-form", "metadata.endpoints-https"} <= failed_ids(report)


async def test_wrong_client_secret_stops_every_module() -> None:
    with fixture_transmitter() as fx:
        report = await run_tx(fx, only=[HAPPY, VPUSH], client_secret="wrong")
    assert all(m.stopped and "auth.token" in m.stopped for m in report.modules)
    assert report.failed


async def test_static_token_and_metadata_url_mode() -> None:
    with fixture_transmitter() as fx:
        from ssf.metadata import well_known_url

        report = await run_tx(
            fx,
            only=[META, HAPPY, VPUSH],
            client_credentials=False,
            issuer=None,
            metadata_url=well_known_url(fx.issuer),
        )
    assert not report.failures(), describe_failures(report)
    skipped = {r.check.id for r in report.results() if r.outcome is Outcome.SKIPPED}
    assert "metadata.issuer-matches" in skipped


async def test_unreachable_peer_is_a_failure() -> None:
    from conformance.tx import TransmitterOptions, run_transmitter_plan

    opts = TransmitterOptions(issuer=f"http://127.0.0.1:{free_port()}/nobody", token="t", http_timeout=2)
    report = await run_transmitter_plan(opts, only=[META])
    assert "module.completed" in failed_ids(report)
    assert report.failed


def test_every_transmitter_check_is_targeted_by_a_fault() -> None:
    """A check that cannot fail is a defect: each is made to fail by some test."""
    untested = untargeted_checks("transmitter", FAULTS, [k for k, why in NOT_FAULT_TESTED.items() if why])
    assert not untested, f"checks no test makes fail: {sorted(untested)}"


def test_severities_follow_the_suite() -> None:
    from conformance.registry import CHECKS
    from conformance.runner import load_modules

    load_modules()
    assert CHECKS["set.typ"].severity is Severity.FAILURE
    assert CHECKS["set.signature"].severity is Severity.WARNING
    assert CHECKS["set.single-event"].severity_for("default") is Severity.WARNING
    assert CHECKS["set.single-event"].severity_for("caep-interop") is Severity.FAILURE
    assert CHECKS["stream.create-201"].severity is Severity.WARNING
    assert CHECKS["errors.delete-invalid-token"].severity is Severity.FAILURE
