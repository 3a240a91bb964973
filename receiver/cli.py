"""`ssf receiver` commands: run the service, show the stream and state."""

from __future__ import annotations

import asyncio
import json

import typer
from rich.console import Console

app = typer.Typer(help="SSF receiver commands.", no_args_is_help=True)
console = Console()


@app.callback()
def _root() -> None:
    """SSF receiver commands (configured by SSF_RECEIVER_* variables)."""


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8090, help="Port to listen on."),
    no_demo: bool = typer.Option(False, "--no-demo", help="Do not mount GET /protected/whoami."),
    log_format: str = typer.Option(
        "json", envvar="SSF_LOG_FORMAT", help="json (one object per line) or text."
    ),
    log_level: str = typer.Option("info", envvar="SSF_LOG_LEVEL", help="debug, info, warning, error."),
) -> None:
    """Run the receiver service (push endpoint, health, protected demo)."""
    import uvicorn

    from receiver.app import create_app
    from ssf.logs import configure_logging

    try:
        configure_logging(log_format, log_level)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None

    uvicorn.run(
        create_app(protected_demo=not no_demo),
        host=host,
        port=port,
        access_log=False,
        log_level="warning",
        log_config=None,  # keep configure_logging's handler
    )


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print the stored stream and the revocation state counts."""
    from receiver.settings import ReceiverSettings
    from receiver.state import RevocationState
    from receiver.store import JtiTracker, make_store

    settings = ReceiverSettings()

    async def run() -> dict[str, object]:
        store = make_store(settings.database_url, settings.redis_url, settings.redis_namespace)
        await store.open()
        state, jtis = RevocationState(), JtiTracker(settings.jti_retention)
        try:
            await store.load(state, jtis)
            stream = (
                await store.load_stream(settings.transmitter_issuer or "")
                if settings.transmitter_issuer
                else None
            )
        finally:
            await store.close()
        if isinstance(stream, dict):
            stream.pop("_receiver", None)  # holds the push credential: never printed
        return {
            "issuer": settings.transmitter_issuer,
            "stream": stream,
            "state": state.counts(),
            "jtis": len(jtis),
        }

    out = asyncio.run(run())
    if as_json:
        console.print_json(json.dumps(out))
        return
    stream = out["stream"]
    console.print(f"transmitter: {out['issuer'] or '(not configured)'}")
    if isinstance(stream, dict):
        delivery = stream.get("delivery") or {}
        console.print(f"stream: {stream.get('stream_id')}  delivery: {delivery.get('method')}")
        console.print(f"events delivered: {len(stream.get('events_delivered') or [])}")
    else:
        console.print("stream: (none stored)")
    for name, value in dict(out["state"]).items():  # type: ignore[call-overload]
        console.print(f"{name}: {value}")
    console.print(f"jtis remembered: {out['jtis']}")
