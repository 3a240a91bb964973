"""`ssf conformance`: run the transmitter or receiver plan against a peer and report.

The very last line printed is ``N passed, M failed`` (``, K skipped`` may follow); the exit
code is 1 when any FAILURE-level check failed, 2 on a usage error, 0 otherwise.
"""

from __future__ import annotations

import asyncio
import errno
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from conformance.registry import MODULES, Side
from conformance.report import ConsoleReporter, Report, summary_line

app = typer.Typer(
    help="SSF conformance kit: judge a transmitter or a receiver by the wire.", no_args_is_help=True
)
err = Console(stderr=True, soft_wrap=True)

DELIVERIES = ("push", "poll")
PROFILES = ("default", "caep-interop")


@app.callback()
def _root() -> None:
    """SSF conformance commands."""


def _split(values: list[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise typer.BadParameter(f"must be one of {', '.join(choices)}", param_hint=name)


def _list(side: Side, delivery: str, profile: str) -> None:
    from conformance.runner import load_modules

    load_modules()
    console = Console(soft_wrap=True, highlight=False)
    console.print(f"[bold]{side} plan[/bold] (delivery={delivery}, profile={profile})")
    for m in MODULES.values():
        if m.side != side or not m.applies(delivery, profile):
            continue
        console.print(f"[bold cyan]{m.name}[/bold cyan] [{m.origin}] {escape(m.summary)}")
        for c in m.checks:
            sev = c.severity_for(profile).value
            console.print(f"    {c.id:42} {sev:8} {escape(c.requirement):28} {escape(c.title)}")


def _plan_choices(side: Side, delivery: str, profile: str, list_: bool) -> None:
    """Validate --delivery/--profile; with --list, print the plan and exit."""
    _check_choice("--delivery", delivery, DELIVERIES)
    _check_choice("--profile", profile, PROFILES)
    if list_:
        _list(side, delivery, profile)
        raise typer.Exit(0)


def _run_plan(
    run_plan: Callable[..., Coroutine[Any, Any, Report]],
    opts: object,
    only: list[str],
    skip: list[str],
    verbose: bool,
    json_out: Path | None,
    junit: Path | None,
    listen_options: str,
) -> None:
    """Run one plan with the console reporter, write the reports and exit with the plan's verdict."""
    try:
        report = asyncio.run(
            run_plan(opts, only=_split(only), skip=_split(skip), reporter=ConsoleReporter(verbose=verbose))
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--only/--skip") from None
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        # the bind error names no address: say which option chose it
        raise typer.BadParameter("that address is in use", param_hint=listen_options) from None
    _finish(report, json_out, junit)


def _finish(report: Report, json_out: Path | None, junit: Path | None) -> None:
    if json_out is not None:
        report.write_json(json_out)
        err.print(f"wrote {json_out}")
    if junit is not None:
        report.write_junit(junit)
        err.print(f"wrote {junit}")
    sys.stdout.flush()
    print(summary_line(report), flush=True)
    raise typer.Exit(1 if report.failed else 0)


@app.command("transmitter")
def transmitter(
    issuer: str | None = typer.Option(
        None, "--issuer", help="Transmitter issuer (discovery by path insertion)."
    ),
    metadata_url: str | None = typer.Option(
        None, "--metadata-url", help="Metadata URL, instead of --issuer."
    ),
    token: str | None = typer.Option(None, "--token", help="Static bearer token for the management API."),
    client_id: str | None = typer.Option(None, "--client-id", help="OAuth client for client_credentials."),
    client_secret: str | None = typer.Option(None, "--client-secret", help="Secret of --client-id."),
    token_endpoint: str | None = typer.Option(
        None, "--token-endpoint", help="Default: from RFC 8414 metadata."
    ),
    scope: str = typer.Option("ssf.read ssf.manage", "--scope"),
    delivery: str = typer.Option("push", "--delivery", help="push or poll."),
    profile: str = typer.Option("default", "--profile", help="default or caep-interop."),
    publish_cmd: str | None = typer.Option(
        None,
        "--publish-cmd",
        help="Shell command that makes the transmitter emit an event; {event_type} {subject} {payload}"
        " {stream_id} {txn} are filled in (also as SSF_* environment variables).",
    ),
    publish_url: str | None = typer.Option(
        None, "--publish-url", help="Publish API (default: <issuer>/events)."
    ),
    publish_token: str | None = typer.Option(
        None, "--publish-token", help="Bearer token with scope ssf.publish."
    ),
    publish_client_id: str | None = typer.Option(
        None, "--publish-client-id", help="Client with scope ssf.publish (instead of --publish-token)."
    ),
    publish_client_secret: str | None = typer.Option(
        None, "--publish-client-secret", help="Secret of --publish-client-id."
    ),
    status_cmd: str | None = typer.Option(
        None,
        "--status-cmd",
        help="Command that changes a stream's status on the transmitter's side ({stream_id} {status}).",
    ),
    rotate_cmd: str | None = typer.Option(None, "--rotate-cmd", help="Command that rotates the signing key."),
    push_host: str = typer.Option("127.0.0.1", "--push-host", help="Where the kit's push endpoint listens."),
    push_port: int = typer.Option(0, "--push-port", help="Port of the kit's push endpoint (0: any)."),
    push_base_url: str | None = typer.Option(
        None, "--push-base-url", help="Public URL of the kit's push endpoint."
    ),
    allow_http_loopback: bool = typer.Option(
        False, "--allow-http-loopback", help="Accept http:// metadata URLs on loopback (skipped, not failed)."
    ),
    event_timeout: float = typer.Option(
        5.0, "--event-timeout", help="Seconds to wait for a SET after a trigger."
    ),
    settle: float = typer.Option(1.0, "--settle", help="Quiet seconds that mean 'nothing more arrives'."),
    max_wait: float = typer.Option(60.0, "--max-wait", help="Cap on waits the transmitter asks for."),
    long_poll_timeout: float = typer.Option(
        35.0, "--long-poll-timeout", help="Client timeout of the kit's long polls, seconds."
    ),
    http_timeout: float = typer.Option(10.0, "--http-timeout", help="Timeout of other calls, seconds."),
    key_rotation_wait: float = typer.Option(
        30.0, "--key-rotation-wait", help="Seconds a new key may take to appear in the JWKS."
    ),
    only: list[str] = typer.Option([], "--only", help="Run only these modules (names or shell patterns)."),
    skip: list[str] = typer.Option([], "--skip", help="Skip these modules."),
    list_: bool = typer.Option(False, "--list", help="List the plan's modules and checks, then exit."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the report as JSON."),
    junit: Path | None = typer.Option(None, "--junit", help="Write the report as JUnit XML."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show passed checks too."),
) -> None:
    """Run the transmitter plan: the kit plays the receiver."""
    _plan_choices("transmitter", delivery, profile, list_)
    if bool(issuer) == bool(metadata_url):
        raise typer.BadParameter("give exactly one of --issuer and --metadata-url", param_hint="--issuer")
    if not token and not (client_id and client_secret):
        raise typer.BadParameter("give --token, or --client-id and --client-secret", param_hint="--token")
    from conformance.tx import TransmitterOptions, run_transmitter_plan

    opts = TransmitterOptions(
        issuer=issuer,
        metadata_url=metadata_url,
        token=token,
        client_id=client_id,
        client_secret=client_secret,
        token_endpoint=token_endpoint,
        scope=scope,
        delivery=delivery,
        profile=profile,
        publish_cmd=publish_cmd,
        publish_url=publish_url,
        publish_token=publish_token,
        publish_client_id=publish_client_id,
        publish_client_secret=publish_client_secret,
        status_cmd=status_cmd,
        rotate_cmd=rotate_cmd,
        push_host=push_host,
        push_port=push_port,
        push_base_url=push_base_url,
        allow_http_loopback=allow_http_loopback,
        event_timeout=event_timeout,
        settle=settle,
        max_wait=max_wait,
        long_poll_timeout=long_poll_timeout,
        http_timeout=http_timeout,
        key_rotation_wait=key_rotation_wait,
    )
    _run_plan(run_transmitter_plan, opts, only, skip, verbose, json_out, junit, "--push-host/--push-port")


@app.command("receiver")
def receiver(
    push_url: str | None = typer.Option(
        None, "--push-url", help="Push the bad-SET corpus straight at this receiver endpoint."
    ),
    push_auth: str | None = typer.Option(
        None, "--push-auth", help="Authorization header value for --push-url."
    ),
    audience: str = typer.Option(
        "https://receiver.example.com", "--audience", help="aud of the SETs the kit signs."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Where the emulated transmitter listens."),
    port: int = typer.Option(0, "--port", help="Port of the emulated transmitter (0: any free port)."),
    path: str = typer.Option("/kit", "--path", help="Issuer path of the emulated transmitter."),
    delivery: str = typer.Option("push", "--delivery", help="push or poll (the plan variant)."),
    profile: str = typer.Option("default", "--profile", help="default or caep-interop."),
    client_id: str = typer.Option(
        "kit-receiver", "--client-id", help="Client the receiver authenticates as."
    ),
    client_secret: str = typer.Option(
        "kit-receiver-secret", "--client-secret", help="Secret of --client-id at the kit's token endpoint."
    ),
    static_token: str | None = typer.Option(None, "--static-token", help="Also accept this bearer token."),
    wait: float = typer.Option(120.0, "--wait", help="Seconds to wait for the receiver to create a stream."),
    idle: float = typer.Option(10.0, "--idle", help="Quiet seconds that end a phase."),
    event_timeout: float = typer.Option(
        10.0, "--event-timeout", help="Seconds to wait for a push answer or an ack."
    ),
    long_poll: float = typer.Option(10.0, "--long-poll", help="How long the kit holds an empty poll."),
    corpus: bool = typer.Option(True, "--corpus/--no-corpus", help="Deliver the bad-SET corpus."),
    start_cmd: str | None = typer.Option(
        None, "--start-cmd", help="Command run once the issuer is up ({issuer})."
    ),
    finish_cmd: str | None = typer.Option(
        None, "--finish-cmd", help="Command that makes the receiver delete its stream ({issuer} {stream_id})."
    ),
    stop_cmd: str | None = typer.Option(
        None,
        "--stop-cmd",
        help="Command that stops the receiver ({issuer}); with --start-cmd the kit restarts it at other"
        " issuers (wrong stream iss, bad TLS certificates).",
    ),
    probe_url: str | None = typer.Option(
        None,
        "--probe-url",
        help="A resource the receiver protects: the kit GETs it with access tokens it mints to see what"
        " the receiver enforces.",
    ),
    probe_audience: str = typer.Option(
        "https://resource.example.com", "--probe-audience", help="aud of the access tokens the kit mints."
    ),
    ca_file: str | None = typer.Option(
        None, "--ca-file", help="Where to write the kit's throwaway CA certificate ({ca_file} in commands)."
    ),
    probe_window: float = typer.Option(
        3.0, "--probe-window", help="Seconds a restarted receiver is watched after its first contact."
    ),
    only: list[str] = typer.Option([], "--only", help="Run only these modules (names or shell patterns)."),
    skip: list[str] = typer.Option([], "--skip", help="Skip these modules."),
    list_: bool = typer.Option(False, "--list", help="List the plan's modules and checks, then exit."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the report as JSON."),
    junit: Path | None = typer.Option(None, "--junit", help="Write the report as JUnit XML."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show passed checks too."),
) -> None:
    """Run the receiver plan: the kit plays the transmitter (point the receiver at the issuer it prints)."""
    _plan_choices("receiver", delivery, profile, list_)
    from conformance.rx import ReceiverOptions, run_receiver_plan

    def announce(issuer: str) -> None:
        err.print(
            f"[bold]Emulated transmitter issuer:[/bold] {issuer}\n"
            f"  client_credentials: client_id={client_id} client_secret={client_secret}"
            f" (scope ssf.read ssf.manage)\n"
            "  Point the receiver at this issuer: create a stream, verify it, then delete it."
        )

    opts = ReceiverOptions(
        push_url=push_url,
        push_auth=push_auth,
        audience=audience,
        delivery=delivery,
        profile=profile,
        host=host,
        port=port,
        path=path,
        client_id=client_id,
        client_secret=client_secret,
        static_token=static_token,
        wait=wait,
        idle=idle,
        event_timeout=event_timeout,
        long_poll=long_poll,
        corpus=corpus,
        start_cmd=start_cmd,
        finish_cmd=finish_cmd,
        stop_cmd=stop_cmd,
        probe_url=probe_url,
        probe_audience=probe_audience,
        ca_file=ca_file,
        probe_window=probe_window,
        announce=announce,
    )
    _run_plan(run_receiver_plan, opts, only, skip, verbose, json_out, junit, "--host/--port")
