"""The ``ssf`` command: assembles each part's commands under one name."""

from __future__ import annotations

import typer

from conformance.cli import app as conformance_app
from receiver.cli import app as receiver_app
from ssfcli.core import keys_app, set_app
from ssfcli.errors import ReportingGroup
from transmitter.cli import app as transmitter_app

app = typer.Typer(
    help="OpenID Shared Signals Framework 1.0 tools.", no_args_is_help=True, cls=ReportingGroup
)
app.add_typer(keys_app, name="keys")
app.add_typer(set_app, name="set")
app.add_typer(transmitter_app, name="transmitter")
app.add_typer(receiver_app, name="receiver")
app.add_typer(conformance_app, name="conformance")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
