"""Reports: a live console view (rich), JSON and JUnit XML for CI systems."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from rich.console import Console
from rich.markup import escape

from conformance.registry import CheckResult, ModuleResult, Outcome, Severity

__all__ = ["ConsoleReporter", "Report", "summary_line"]

_STYLE = {Outcome.PASSED: "green", Outcome.FAILED: "red", Outcome.SKIPPED: "yellow"}


@dataclass(slots=True)
class Report:
    plan: str
    variant: dict[str, str]
    modules: list[ModuleResult] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def results(self) -> list[CheckResult]:
        return [r for m in self.modules for r in m.results]

    def counts(self) -> tuple[int, int, int]:
        """(passed, failed, skipped) checks; a module skipped as a whole counts as one skip."""
        rs = self.results()
        return (
            sum(r.outcome is Outcome.PASSED for r in rs),
            sum(r.outcome is Outcome.FAILED for r in rs),
            sum(r.outcome is Outcome.SKIPPED for r in rs) + sum(1 for m in self.modules if m.skipped_reason),
        )

    @property
    def failed(self) -> bool:
        """True when a FAILURE-level check failed: the run's exit code is then non-zero."""
        return any(m.failed_failure for m in self.modules)

    def failures(self, severity: Severity | None = None) -> list[CheckResult]:
        return [
            r
            for r in self.results()
            if r.outcome is Outcome.FAILED and (severity is None or r.severity is severity)
        ]

    def to_json(self) -> dict[str, Any]:
        passed, failed, skipped = self.counts()
        return {
            "plan": self.plan,
            "variant": self.variant,
            "started": self.started,
            "passed": passed,
            "failed": failed,
            "skipped": skipped,
            "failure_level_failed": len(self.failures(Severity.FAILURE)),
            "modules": [m.to_json() for m in self.modules],
        }

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2))

    def write_junit(self, path: Path) -> None:
        passed, failed, skipped = self.counts()
        suites = ET.Element(
            "testsuites", name=self.plan, tests=str(passed + failed + skipped), failures=str(failed)
        )
        for m in self.modules:
            ms = ET.SubElement(
                suites,
                "testsuite",
                name=m.name,
                tests=str(len(m.results)),
                failures=str(sum(r.outcome is Outcome.FAILED for r in m.results)),
                skipped=str(sum(r.outcome is Outcome.SKIPPED for r in m.results)),
                time=f"{m.duration:.3f}",
            )
            if m.skipped_reason and not m.results:
                case = ET.SubElement(ms, "testcase", classname=m.name, name="module")
                ET.SubElement(case, "skipped", message=m.skipped_reason)
            for r in m.results:
                case = ET.SubElement(
                    ms,
                    "testcase",
                    classname=m.name,
                    name=f"{r.check.id} [{r.check.requirement}]",
                )
                if r.outcome is Outcome.FAILED:
                    fail = ET.SubElement(case, "failure", type=r.severity.value, message=r.message)
                    fail.text = f"{r.severity.value} {r.check.requirement}: {r.check.title}\n{r.message}"
                elif r.outcome is Outcome.SKIPPED:
                    ET.SubElement(case, "skipped", message=r.message)
            if m.log:
                ET.SubElement(ms, "system-out").text = "\n".join(m.log)
        ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def summary_line(report: Report) -> str:
    passed, failed, skipped = report.counts()
    line = f"{passed} passed, {failed} failed"
    if skipped:
        line += f", {skipped} skipped"
    return line


class ConsoleReporter:
    """Prints each check as it is recorded, then each module's outcome, then the totals."""

    def __init__(self, console: Console | None = None, *, verbose: bool = False) -> None:
        self.console = console or Console(soft_wrap=True)
        self.verbose = verbose
        self._printed: set[tuple[str, str]] = set()

    def plan_started(self, report: Report, modules: list[str]) -> None:
        variant = ", ".join(f"{k}={v}" for k, v in report.variant.items())
        self.console.rule(f"[bold]{escape(report.plan)}[/bold] ({escape(variant)})")
        self.console.print(f"{len(modules)} module(s)")

    def module_started(self, name: str) -> None:
        self.console.print(f"[bold cyan]▶ {escape(name)}[/bold cyan]")

    def check_recorded(self, result: CheckResult) -> None:
        if result.outcome is Outcome.PASSED and not self.verbose:
            return
        self._printed.add((result.module, result.check.id))
        self._print_result(result)

    def _print_result(self, r: CheckResult) -> None:
        style = _STYLE[r.outcome]
        sev = f" {r.severity.value}" if r.outcome is Outcome.FAILED else ""
        self.console.print(
            f"  [{style}]{r.outcome.value.upper():7}[/{style}]{sev} {escape(r.check.id)}"
            f" [dim]({escape(r.check.requirement)})[/dim] {escape(r.message)}",
            highlight=False,
        )

    def module_finished(self, m: ModuleResult) -> None:
        if m.skipped_reason:
            self.console.print(f"  [yellow]module skipped:[/yellow] {escape(m.skipped_reason)}")
            return
        # merged results may have turned from passed to failed after the live line
        for r in m.results:
            if r.outcome is Outcome.FAILED and (m.name, r.check.id) not in self._printed:
                self._print_result(r)
        if m.stopped:
            self.console.print(f"  [red]stopped:[/red] {escape(m.stopped)}")
        p = sum(r.outcome is Outcome.PASSED for r in m.results)
        f = sum(r.outcome is Outcome.FAILED for r in m.results)
        verdict = (
            "[red]FAILED[/red]" if m.failed_failure else "[yellow]WARN[/yellow]" if f else "[green]OK[/green]"
        )
        self.console.print(f"  {verdict} {p} passed, {f} failed ({m.duration:.1f}s)")

    def plan_finished(self, report: Report) -> None:
        fails = report.failures(Severity.FAILURE)
        warns = report.failures(Severity.WARNING)
        infos = report.failures(Severity.INFO)
        self.console.rule()
        if fails:
            self.console.print("[bold red]FAILURE-level checks that failed:[/bold red]")
            for r in fails:
                self.console.print(
                    f"  {escape(r.module)} :: {escape(r.check.id)} ({escape(r.check.requirement)}):"
                    f" {escape(r.message)}",
                    highlight=False,
                )
        self.console.print(
            f"{len(fails)} FAILURE, {len(warns)} WARNING, {len(infos)} INFO level check(s) failed"
        )
