"""The receiver plan: the kit plays the transmitter."""

from __future__ import annotations

from conformance.registry import Side, select_modules
from conformance.report import Report
from conformance.runner import Reporter, http_client, load_modules, run_modules
from conformance.rx.context import ReceiverKit, ReceiverOptions
from conformance.tx.sink import serve_app

__all__ = ["ReceiverKit", "ReceiverOptions", "run_receiver_plan"]

SIDE: Side = "receiver"


async def run_receiver_plan(
    opts: ReceiverOptions,
    *,
    only: list[str] | None = None,
    skip: list[str] | None = None,
    reporter: Reporter | None = None,
) -> Report:
    """Serve the emulated transmitter, run the session, then judge it module by module."""
    plan = (
        "openid-ssf-receiver-caep-test-plan"
        if opts.profile == "caep-interop"
        else "openid-ssf-receiver-test-plan"
    )
    load_modules()
    report = Report(plan, {"delivery": opts.delivery, "profile": opts.profile})
    async with http_client(opts.event_timeout) as http:
        kit = ReceiverKit(opts, http)
        sel = select_modules(SIDE, opts.delivery, opts.profile, only or [], skip or [])
        kit.wanted = {m.name for m in sel.modules}
        async with serve_app(kit.em.app, opts.host, opts.port) as base:
            kit.em.base_url = base
            try:
                await kit.session()
            finally:
                await kit.em.close()
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
