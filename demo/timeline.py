"""What the demo prints: a timeline anyone can follow, and the results table."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Final

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

__all__ = ["INTRO", "Outcome", "Timeline"]

INTRO: Final = """\
An API usually checks an OAuth access token [bold]once[/]: the signature is good and it has not
expired, so the request is let in, and so is every request with that token until it expires
(here: in 60 minutes). If the user's session is ended, their laptop falls out of compliance or
their sign-in is no longer strong enough, the API does not know. The token is still valid.

[bold]Continuous authorization[/] closes that gap. With the OpenID Shared Signals Framework (SSF),
the identity provider publishes each such change as a signed Security Event Token (SET,
with CAEP event types) through an [bold]SSF transmitter[/]; every API subscribed to it runs an
[bold]SSF receiver[/] that gets the SET (pushed to it, or fetched by polling), validates it and
applies it at once, so the [bold]very next request[/] with the stale token is refused.

Below, real services talk over real HTTP on this machine. Watch each token go from
[green]allowed[/] to [red]refused[/] while it is still cryptographically valid and unexpired."""

ACTOR_STYLE: Final = {
    "IdP": "bold magenta",
    "transmitter": "bold blue",
    "demo": "bold white",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One API's answer to one change: what was expected and what happened."""

    scenario: str
    event: str
    api: str
    expected: str
    got: str
    #: Milliseconds from the publish call returning to the first refused request.
    latency_ms: float | None
    #: Requests the API still allowed while the SET was in flight.
    allowed_in_flight: int
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.got == self.expected


@dataclass
class Timeline:
    console: Console
    started: float = field(default_factory=time.perf_counter)
    lines: list[str] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def log(self, actor: str, text: str) -> None:
        """One timeline line: ``+seconds  actor  what happened`` (``text`` is rich markup)."""
        style = ACTOR_STYLE.get(actor, "bold cyan")
        stamp = f"+{self.elapsed():7.3f}s"
        self.lines.append(f"{stamp} {actor}: {text}")
        self.console.print(f"[dim]{stamp}[/]  [{style}]{escape(actor):<13}[/] {text}", highlight=False)

    def section(self, title: str, explanation: str) -> None:
        self.console.print()
        self.console.rule(f"[bold]{escape(title)}")
        self.console.print(f"[italic]{explanation}[/]", highlight=False)

    def intro(self) -> None:
        self.console.print(Panel(INTRO, title="[bold]Continuous authorization with SSF", expand=False))

    def summary(self) -> Table:
        table = Table(title="What happened (time from the publish call returning to the first refusal)")
        for col in ("change at the identity provider", "CAEP event", "API", "expected", "got", "time"):
            table.add_column(col, justify="right" if col == "time" else "left")
        for o in self.outcomes:
            took = f"{o.latency_ms:.1f} ms" if o.latency_ms is not None else "-"
            style = "green" if o.ok else "red"
            table.add_row(o.scenario, o.event, o.api, o.expected, f"[{style}]{escape(o.got)}[/]", took)
        return table
