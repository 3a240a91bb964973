"""``python -m demo`` (``make demo``): continuous authorization end to end, in one command."""

from __future__ import annotations

import argparse

from demo.run import main

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
raise SystemExit(main(deliveries, serve=args.serve))
