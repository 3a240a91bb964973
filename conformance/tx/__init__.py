"""The transmitter plan: the kit plays the receiver."""

from __future__ import annotations

from conformance.registry import Side
from conformance.report import Report
from conformance.runner import Reporter, http_client, run_modules
from conformance.tx.context import TransmitterKit, TransmitterOptions
from conformance.tx.sink import PushSink, serve_app

__all__ = ["TransmitterOptions", "run_transmitter_plan"]

SIDE: Side = "transmitter"


async def run_transmitter_plan(
    opts: TransmitterOptions,
    *,
    only: list[str] | None = None,
    skip: list[str] | None = None,
    reporter: Reporter | None = None,
) -> Report:
    """Run every applicable transmitter module against the peer described by ``opts``."""
    plan = (
        "openid-ssf-transmitter-caep-test-plan"
        if opts.profile == "caep-interop"
        else "openid-ssf-transmitter-test-plan"
    )
    report = Report(plan, {"delivery": opts.delivery, "profile": opts.profile})
    async with http_client(opts.http_timeout) as http:
        sink = PushSink()
        async with serve_app(sink.app, opts.push_host, opts.push_port) as base:
            sink.base_url = base
            kit = TransmitterKit(opts, http, sink)
            await run_modules(
                SIDE,
                kit,
                delivery=opts.delivery,
                profile=opts.profile,
                only=only or [],
                skip=skip or [],
                report=report,
                reporter=reporter,
            )
    return report
