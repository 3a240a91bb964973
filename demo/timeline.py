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

INTRO: Final = " ".join(
    (
        "An API usually checks an OAuth access token [bold]once[/]: the signature is good and it has not",
        "expired, so the request is let in, and so is every request with that token until it expires",
        "(here: in 60 minutes). If the user's session is ended, their laptop falls out of compliance or",
        "their sign-in is no longer strong enough, the API does not know: the token is still valid.\n\n",
        "[bold]Continuous authorization[/] closes that gap. With the OpenID Shared Signals Framework (SSF),",
        "the identity provider publishes each such change as a signed Security Event Token (SET, with",
        "CAEP event types) through an [bold]SSF transmitter[/]; every API subscribed to it runs an",
        "[bold]SSF receiver[/] that gets the SET (pushed to it, or fetched by polling), validates it and",
        "applies it at once, so the [bold]very next request[/] with the stale token is refused.\n\n",
        "Below, real services talk over real HTTP on this machine. Watch each token go from",
        "[green]allowed[/] to [red]refused[/] while it is still correctly signed and unexpired.",
    )
).replace("\n\n ", "\n\n")

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
    #: Milliseconds from the identity provider's publish call returning (the event is durable at
    #: the transmitter) to the first API answer that shows it (delivery, validation, one API call).
    latency_ms: float | None
    #: Requests the API still answered the old way while the SET was in flight.
    allowed_in_flight: int
    #: Milliseconds the publish call took (identity provider → transmitter, durable).
    publish_ms: float | None = None

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

    def log(self, actor: str, text: str, *, at: float | None = None) -> None:
        """One timeline line: ``+seconds  actor  what happened`` (``text`` is rich markup).

        ``at`` (seconds since the start) stamps a line printed after the fact.
        """
        style = ACTOR_STYLE.get(actor, "bold cyan")
        stamp = f"+{self.elapsed() if at is None else at:.3f}s"
        self.lines.append(f"{stamp} {actor}: {text}")
        # A grid keeps wrapped text under its own column, so the time and actor stay readable.
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=8, justify="right", style="dim", no_wrap=True)
        grid.add_column(width=11, style=style, no_wrap=True)
        grid.add_column(ratio=1)
        grid.add_row(stamp, escape(actor), text)
        self.console.print(grid, highlight=False)

    def note(self, text: str) -> None:
        """An explanation under the timeline's text column."""
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=8)
        grid.add_column(width=11)
        grid.add_column(ratio=1, style="dim italic")
        grid.add_row("", "", text)
        self.console.print(grid, highlight=False)

    def section(self, title: str, explanation: str) -> None:
        self.console.print()
        self.console.rule(f"[bold]{escape(title)}")
        self.console.print(f"[italic]{explanation}[/]", highlight=False)

    def intro(self) -> None:
        self.console.print(Panel(INTRO, title="[bold]Continuous authorization with SSF", expand=False))

    def summary(self) -> Table:
        table = Table(
            title="[bold]What happened[/]",
            caption="publish: the identity provider's call to the transmitter's publish API, which "
            "returns once the event is durable. → answer: from that moment to the first API "
            "answer that reflects the change (delivery by push or poll, SET validation, one API call).",
            caption_justify="left",
        )
        table.add_column("change at the identity provider")
        table.add_column("API")
        table.add_column("the API now answers")
        table.add_column("publish", justify="right")
        table.add_column("→ answer", justify="right")
        for o in self.outcomes:
            took = f"{o.latency_ms:.1f} ms" if o.latency_ms is not None else "-"
            pub = f"{o.publish_ms:.1f} ms" if o.publish_ms is not None else "-"
            mark = "[green]✓[/]" if o.ok else f"[red]✗ expected {escape(_label(o.expected))}[/]"
            table.add_row(
                f"{escape(o.scenario)}\n[dim]{escape(o.event)}[/]",
                escape(o.api.removeprefix("API (").removesuffix(")")),
                f"{escape(_label(o.got))} {mark}",
                pub,
                took,
            )
        return table


def _label(kind: str) -> str:
    return {
        "allowed": "200 allowed",
        "invalid_token": "401 invalid_token",
        "insufficient_user_authentication": "401 step-up",
    }.get(kind, kind)
