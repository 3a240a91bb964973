"""The check registry: every check names the requirement it tests and its severity.

A *check* is declared once (id, requirement, severity, title) at import time; a *module*
(one OpenID-suite test module, or one of the kit's own) runs against a peer and records
a result for each check it reaches. Modules are grouped into plans by side
(transmitter / receiver), delivery method (push / poll) and profile (default /
caep-interop), like the suite's variants (digest 11.1).

Severities follow the OpenID suite: FAILURE fails the run (non-zero exit), WARNING and
INFO are reported but do not.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = [
    "CHECKS",
    "MODULES",
    "Check",
    "CheckResult",
    "Module",
    "ModuleResult",
    "ModuleRun",
    "Outcome",
    "Severity",
    "SkipModule",
    "StopModule",
    "check",
    "module",
    "select_modules",
]

Side = Literal["transmitter", "receiver"]
DELIVERIES: Final = frozenset({"push", "poll"})
PROFILES: Final = frozenset({"default", "caep-interop"})


class Severity(enum.StrEnum):
    FAILURE = "FAILURE"
    WARNING = "WARNING"
    INFO = "INFO"


class Outcome(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Check:
    """One conformance requirement as the kit tests it."""

    id: str
    requirement: str
    severity: Severity
    title: str
    #: The CAEP interoperability profile makes some SHOULDs MUSTs (e.g. one event per SET).
    caep_severity: Severity | None = None

    def severity_for(self, profile: str) -> Severity:
        if profile == "caep-interop" and self.caep_severity is not None:
            return self.caep_severity
        return self.severity


CHECKS: dict[str, Check] = {}


def check(
    id_: str, requirement: str, severity: Severity, title: str, *, caep: Severity | None = None
) -> Check:
    """Declare (register) a check; ids are unique across the kit."""
    if id_ in CHECKS:
        raise ValueError(f"duplicate check id {id_}")
    c = Check(id_, requirement, severity, title, caep)
    CHECKS[id_] = c
    return c


@dataclass(slots=True)
class CheckResult:
    module: str
    check: Check
    severity: Severity
    outcome: Outcome
    message: str
    count: int = 1

    def to_json(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "id": self.check.id,
            "requirement": self.check.requirement,
            "severity": self.severity.value,
            "title": self.check.title,
            "outcome": self.outcome.value,
            "message": self.message,
            "count": self.count,
        }


class StopModule(Exception):
    """A failed precondition: the rest of the module cannot run (the suite's 'stop')."""


class SkipModule(Exception):
    """The module does not apply to this peer (e.g. no add_subject_endpoint)."""


Listener = Callable[["CheckResult"], None]


class ModuleRun:
    """What one module records while it runs; repeated checks are merged (first failure wins)."""

    def __init__(self, name: str, profile: str, listener: Listener | None = None) -> None:
        self.name = name
        self.profile = profile
        self.results: dict[str, CheckResult] = {}
        self.log: list[str] = []
        self.skipped_reason: str | None = None
        self._listener = listener

    def record(self, c: Check, ok: bool | None, message: str = "", *, stop: bool = False) -> bool:
        """Record one observation of ``c``: True passed, False failed, None skipped."""
        outcome = Outcome.SKIPPED if ok is None else Outcome.PASSED if ok else Outcome.FAILED
        sev = c.severity_for(self.profile)
        prev = self.results.get(c.id)
        if prev is None:
            res = CheckResult(self.name, c, sev, outcome, message)
            self.results[c.id] = res
        else:
            prev.count += 1
            if outcome is Outcome.FAILED and prev.outcome is not Outcome.FAILED:
                prev.outcome, prev.message = outcome, message
            elif prev.outcome is Outcome.SKIPPED and outcome is Outcome.PASSED:
                prev.outcome, prev.message = outcome, message
            res = prev
        if prev is None and self._listener is not None:
            self._listener(res)
        if ok is False and stop:
            raise StopModule(f"{c.id}: {message}")
        return bool(ok)

    def expect(self, c: Check, ok: bool, failure: str, success: str = "", *, stop: bool = False) -> bool:
        return self.record(c, ok, success if ok else failure, stop=stop)

    def expect_status(
        self, c: Check, status: int, allowed: Iterable[int], what: str, *, stop: bool = False
    ) -> bool:
        allowed = tuple(allowed)
        want = " or ".join(str(a) for a in allowed)
        return self.expect(
            c,
            status in allowed,
            f"{what}: got HTTP {status}, expected {want}",
            f"{what}: {status}",
            stop=stop,
        )

    def skip(self, c: Check, reason: str) -> None:
        self.record(c, None, reason)

    def note(self, text: str) -> None:
        self.log.append(text)


@dataclass(slots=True)
class ModuleResult:
    name: str
    summary: str
    origin: str
    results: list[CheckResult]
    log: list[str]
    skipped_reason: str | None = None
    stopped: str | None = None
    error: str | None = None
    duration: float = 0.0

    @property
    def failed_failure(self) -> bool:
        return any(r.outcome is Outcome.FAILED and r.severity is Severity.FAILURE for r in self.results)

    def to_json(self) -> dict[str, Any]:
        return {
            "module": self.name,
            "summary": self.summary,
            "origin": self.origin,
            "skipped": self.skipped_reason,
            "stopped": self.stopped,
            "error": self.error,
            "duration": round(self.duration, 3),
            "checks": [r.to_json() for r in self.results],
            "log": self.log,
        }


ModuleFunc = Callable[[Any, ModuleRun], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Module:
    name: str
    side: Side
    summary: str
    func: ModuleFunc
    checks: tuple[Check, ...]
    deliveries: frozenset[str] = DELIVERIES
    profiles: frozenset[str] = PROFILES
    origin: str = "suite"

    def applies(self, delivery: str, profile: str) -> bool:
        return delivery in self.deliveries and profile in self.profiles

    async def run(self, ctx: Any, profile: str, listener: Listener | None = None) -> ModuleResult:
        run = ModuleRun(self.name, profile, listener)
        started = time.monotonic()
        stopped = error = None
        try:
            await self.func(ctx, run)
        except SkipModule as exc:
            run.skipped_reason = str(exc)
        except StopModule as exc:
            stopped = str(exc)
        except Exception as exc:  # the peer misbehaved in a way no check anticipated
            error = f"{type(exc).__name__}: {exc}"
            run.record(MODULE_COMPLETED, False, f"module aborted: {error}")
        else:
            if run.skipped_reason is None:
                run.record(MODULE_COMPLETED, True, "module ran to completion")
        return ModuleResult(
            self.name,
            self.summary,
            self.origin,
            list(run.results.values()),
            run.log,
            run.skipped_reason,
            stopped,
            error,
            time.monotonic() - started,
        )


MODULE_COMPLETED = check(
    "module.completed",
    "SSF 8 / RFC 9110",
    Severity.FAILURE,
    "The module ran without the peer breaking the exchange (connection errors, non-JSON bodies)",
)

MODULES: dict[str, Module] = {}


def module(
    name: str,
    side: Side,
    summary: str,
    checks: Iterable[Check],
    *,
    deliveries: Iterable[str] = DELIVERIES,
    profiles: Iterable[str] = PROFILES,
    origin: str = "suite",
) -> Callable[[ModuleFunc], ModuleFunc]:
    """Register a module function under its (suite) name."""

    def wrap(func: ModuleFunc) -> ModuleFunc:
        if name in MODULES:
            raise ValueError(f"duplicate module {name}")
        MODULES[name] = Module(
            name,
            side,
            summary,
            func,
            tuple(checks),
            frozenset(deliveries),
            frozenset(profiles),
            origin,
        )
        return func

    return wrap


@dataclass(slots=True)
class Selection:
    modules: list[Module] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def select_modules(
    side: Side,
    delivery: str,
    profile: str,
    only: Iterable[str] = (),
    skip: Iterable[str] = (),
) -> Selection:
    """The plan: modules of ``side`` for the variant, filtered by ``--only`` / ``--skip``.

    Names match exactly or as shell patterns (``*verification*``).
    """
    from fnmatch import fnmatchcase

    only, skip = list(only), list(skip)
    sel = Selection()
    candidates = [m for m in MODULES.values() if m.side == side and m.applies(delivery, profile)]
    everything = [m.name for m in MODULES.values() if m.side == side]
    for pat in [*only, *skip]:
        if not any(fnmatchcase(n, pat) for n in everything):
            sel.unknown.append(pat)
    for m in candidates:
        if only and not any(fnmatchcase(m.name, p) for p in only):
            continue
        if any(fnmatchcase(m.name, p) for p in skip):
            continue
        sel.modules.append(m)
    return sel
