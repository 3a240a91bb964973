"""`ssf transmitter` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="SSF transmitter commands.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """SSF transmitter commands."""
