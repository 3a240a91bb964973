"""``python -m demo`` (``make demo``): continuous authorization end to end, in one command."""

from __future__ import annotations

import argparse
import os

from rich.console import Console


def _main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="Start an identity provider, an SSF transmitter and an API protected by an SSF "
        "receiver, then show tokens being refused the moment the identity provider signals a change.",
    )
    parser.add_argument(
        "--delivery",
        choices=("both", "push", "poll"),
        default="both",
        help="Which SSF delivery method(s) the API receivers use (default: both, one API each).",
    )
    parser.add_argument(
        "--serve", action="store_true", help="Keep the services running afterwards, with their URLs printed."
    )
    args = parser.parse_args()
    deliveries = ("push", "poll") if args.delivery == "both" else (args.delivery,)
    # Every service of the demo is on loopback: keep a proxy from the environment out of it.
    for name in ("NO_PROXY", "no_proxy"):
        os.environ[name] = ",".join(filter(None, (os.environ.get(name), "127.0.0.1", "localhost")))
    console = Console()
    with console.status("Loading the transmitter, the receiver and the identity provider…"):
        from demo.run import main  # the services' imports take a moment; --help does not wait for them

    return main(deliveries, serve=args.serve, console=console)


raise SystemExit(_main())
