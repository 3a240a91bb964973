"""Running the kit against fixture peers in tests."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from conformance.registry import Outcome
from conformance.report import Report
from conformance.rx import ReceiverOptions, run_receiver_plan
from conformance.tx import TransmitterOptions, run_transmitter_plan
from tests.conformance.fixture_receiver import FixtureReceiver
from tests.conformance.fixture_transmitter import (
    CLIENT_ID,
    CLIENT_SECRET,
    PUBLISH_TOKEN,
    STATIC_TOKEN,
    FixtureTransmitter,
)
from tests.support.services import free_port, serve

#: Short waits: the fixtures answer at once on loopback.
FAST = {
    "event_timeout": 2.0,
    "settle": 0.3,
    "long_poll_timeout": 10.0,
    "key_rotation_wait": 1.0,
    "max_wait": 10.0,
    "http_timeout": 10.0,
}


#: A transmitter-side status change (the kit's --status-cmd) through the fixture's admin route.
STATUS_CMD = (
    "curl -sf -X POST -H 'Content-Type: application/json'"
    ' -d \'{{"stream_id": "{stream_id}", "status": "{status}"}}\' URL'
)


_SHARED: dict[str, FixtureTransmitter] = {}
_SERVERS: list[Any] = []  # the running servers' context managers (kept referenced)


def _shared_transmitter() -> FixtureTransmitter:
    """One fixture transmitter server per test process; each test resets its faults."""
    if "tx" not in _SHARED:
        port = free_port()
        fx = FixtureTransmitter(f"http://127.0.0.1:{port}/tx")
        ctx = serve(fx.app, port=port)
        ctx.__enter__()  # lives as long as the test process (a daemon thread)
        _SERVERS.append(ctx)
        _SHARED["tx"] = fx
    return _SHARED["tx"]


@contextlib.contextmanager
def fixture_transmitter(faults: tuple[str, ...] | list[str] = (), **kw: Any) -> Iterator[FixtureTransmitter]:
    fx = _shared_transmitter()
    fx.reset(faults, **kw)
    try:
        yield fx
    finally:
        fx.reset()


def tx_options(
    fx: FixtureTransmitter, *, delivery: str = "push", profile: str = "default", **kw: Any
) -> TransmitterOptions:
    auth: dict[str, Any] = (
        {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
        if kw.pop("client_credentials", True)
        else {"token": STATIC_TOKEN}
    )
    base = {
        "issuer": fx.issuer,
        "delivery": delivery,
        "profile": profile,
        "publish_token": PUBLISH_TOKEN,
        "allow_http_loopback": True,
        "status_cmd": STATUS_CMD.replace("URL", fx.issuer + "/admin/status"),
        "rotate_cmd": f"curl -sf -X POST {fx.issuer}/admin/rotate",
        **FAST,
        **auth,
    }
    base.update(kw)
    return TransmitterOptions(**base)


async def run_tx(fx: FixtureTransmitter, only: list[str] | None = None, **kw: Any) -> Report:
    return await run_transmitter_plan(tx_options(fx, **kw), only=only)


def outcomes(report: Report) -> dict[str, set[str]]:
    """check id -> the set of outcomes it had across modules."""
    out: dict[str, set[str]] = {}
    for r in report.results():
        out.setdefault(r.check.id, set()).add(r.outcome.value)
    return out


def failed_ids(report: Report) -> set[str]:
    return {r.check.id for r in report.results() if r.outcome is Outcome.FAILED}


#: (fault, module, check that must fail, options, options): the two option dicts are the fixture's
#: and the kit's, in the order each plan test declares.
Fault = tuple[str, str, str, dict[str, Any], dict[str, Any]]
FaultGroup = tuple[str, str, list[str], dict[str, Any], dict[str, Any]]


def group_faults(faults: list[Fault]) -> list[FaultGroup]:
    """One run per (fault, module, options); every check that fault must fail is asserted on it."""
    groups: dict[str, FaultGroup] = {}
    for fault, module, check_id, first, second in faults:
        key = repr((fault, module, sorted(first.items()), sorted(second.items())))
        groups.setdefault(key, (fault, module, [], first, second))[2].append(check_id)
    return list(groups.values())


def fault_test_id(fault: str, module: str, kit_opts: dict[str, Any]) -> str:
    short = module.removeprefix("openid-ssf-").removeprefix("kit-")
    return f"{fault}->{short}-{kit_opts.get('delivery', 'push')}-{kit_opts.get('profile', 'default')}"


def assert_fault_caught(report: Report, fault: str, module: str, check_ids: list[str]) -> None:
    assert [m.name for m in report.modules] == [module]
    missing = set(check_ids) - failed_ids(report)
    assert not missing, f"{fault} should fail {sorted(missing)}; failures were:\n{describe_failures(report)}"


def untargeted_checks(side: str, faults: list[Fault], excused: Iterable[str]) -> set[str]:
    """The side's declared checks that no fault targets and no reason excuses."""
    from conformance.registry import MODULES
    from conformance.runner import load_modules

    load_modules()
    declared = {c.id for m in MODULES.values() if m.side == side for c in m.checks}
    return declared - {c for _, _, c, _, _ in faults} - set(excused)


def describe_failures(report: Report) -> str:
    return "\n".join(
        f"{r.module} :: {r.check.id} [{r.severity.value}] {r.message}"
        for r in report.results()
        if r.outcome is Outcome.FAILED
    )


def _shared_receiver() -> FixtureReceiver:
    if "rx" not in _RECEIVERS:
        fx = FixtureReceiver()
        fx.ca_file = _CA_FILE
        ctx = serve(fx.app)
        fx.base_url = ctx.__enter__()
        _SERVERS.append(ctx)
        _RECEIVERS["rx"] = fx
    return _RECEIVERS["rx"]


_RECEIVERS: dict[str, FixtureReceiver] = {}

#: Short waits for the receiver session.
RX_FAST = {
    "wait": 10.0,
    "idle": 1.0,
    "push_delay": 0.05,
    "long_poll": 0.5,
    "event_timeout": 1.5,
    "probe_window": 0.5,
}
#: Where the kit writes its throwaway CA for the fixture receiver to trust (one per process).
_CA_FILE = str(Path(tempfile.mkdtemp(prefix="kit-ca-")) / "kit-ca.pem")


@contextlib.contextmanager
def fixture_receiver(faults: tuple[str, ...] | list[str] = (), **kw: Any) -> Iterator[FixtureReceiver]:
    fx = _shared_receiver()
    fx.reset(faults, **kw)
    try:
        yield fx
    finally:
        fx.reset()


async def run_rx(fx: FixtureReceiver, only: list[str] | None = None, **kw: Any) -> Report:
    opts: dict[str, Any] = {
        "delivery": fx.delivery,
        "start_hook": fx.start,
        "finish_hook": fx.finish,
        "stop_hook": fx.stop,
        "probe_url": fx.base_url + "/protected",
        "ca_file": _CA_FILE,
        **RX_FAST,
    }
    # the corpus costs ~0.5 s: deliver it only where a module judges it
    opts["corpus"] = only is None or bool({"kit-receiver-bad-set-corpus", "kit-receiver-wire"} & set(only))
    opts.update(kw)
    return await run_receiver_plan(ReceiverOptions(**opts), only=only)
