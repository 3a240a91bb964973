"""Run a plan: pick the modules of the variant, run them in order, collect the report."""

from __future__ import annotations

import contextlib
import functools
import ssl
from collections.abc import AsyncIterator
from typing import Any, Protocol

import httpx

from conformance.registry import CheckResult, ModuleResult, Side, select_modules
from conformance.report import Report

__all__ = ["Reporter", "load_modules", "run_modules"]


class Reporter(Protocol):
    def plan_started(self, report: Report, modules: list[str]) -> None: ...
    def module_started(self, name: str) -> None: ...
    def check_recorded(self, result: CheckResult) -> None: ...
    def module_finished(self, m: ModuleResult) -> None: ...
    def plan_finished(self, report: Report) -> None: ...


class QuietReporter:
    def plan_started(self, report: Report, modules: list[str]) -> None:
        pass

    def module_started(self, name: str) -> None:
        pass

    def check_recorded(self, result: CheckResult) -> None:
        pass

    def module_finished(self, m: ModuleResult) -> None:
        pass

    def plan_finished(self, report: Report) -> None:
        pass


def load_modules() -> None:
    """Import every module file so the registry is complete."""
    import importlib

    # registration order is plan order: the suite's modules first, the kit's own after
    for name in (
        "conformance.tx.suite_metadata",
        "conformance.tx.suite_streams",
        "conformance.tx.suite_verification",
        "conformance.tx.beyond_config",
        "conformance.tx.beyond_status",
        "conformance.tx.beyond_subjects",
        "conformance.tx.beyond_delivery",
        "conformance.tx.tls",
        "conformance.rx.suite",
        "conformance.rx.corpus",
        "conformance.rx.beyond",
    ):
        importlib.import_module(name)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process (building one costs tens of milliseconds)."""
    return ssl.create_default_context()


@contextlib.asynccontextmanager
async def http_client(timeout: float) -> AsyncIterator[httpx.AsyncClient]:
    # trust_env=False: the kit talks to the peer directly, never through a proxy from the env
    async with httpx.AsyncClient(
        timeout=timeout, trust_env=False, follow_redirects=False, verify=_tls_context()
    ) as client:
        yield client


async def run_modules(
    side: Side,
    ctx: Any,
    *,
    delivery: str,
    profile: str,
    only: list[str],
    skip: list[str],
    report: Report,
    reporter: Reporter | None = None,
) -> Report:
    load_modules()
    reporter = reporter or QuietReporter()
    sel = select_modules(side, delivery, profile, only, skip)
    if sel.unknown:
        raise ValueError(f"no module matches: {', '.join(sel.unknown)}")
    reporter.plan_started(report, [m.name for m in sel.modules])
    for m in sel.modules:
        reporter.module_started(m.name)
        result = await m.run(ctx, profile, reporter.check_recorded)
        report.modules.append(result)
        reporter.module_finished(result)
    reporter.plan_finished(report)
    return report
