"""`ssf receiver` commands: run the service, show the stream and state, manage the stream."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from types import FrameType

    import httpx
    import uvicorn

    from receiver.client import TransmitterClient
    from receiver.core import Receiver
    from receiver.settings import ReceiverSettings

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
    from ssfcli.logs import configure_logging

    try:
        configure_logging(log_format, log_level)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None

    from rich.markup import escape

    from receiver.credential import SecretUnavailable

    application = create_app(protected_demo=not no_demo)
    receiver = application.state.receiver
    if receiver.generates_credential:
        try:
            receiver.prepare_secret()
        except SecretUnavailable as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True, highlight=False)
            raise typer.Exit(1) from None
    config = uvicorn.Config(
        application,
        host=host,
        port=port,
        http=application.http_protocol,
        access_log=False,
        log_level="warning",
        log_config=None,  # keep configure_logging's handler
    )
    # uvicorn's own start-up lines are off (log level warning): say where we listen.
    logging.getLogger("receiver").info("starting on http://%s:%d", host, port)
    _server(config, application.state.receiver).run()


def _server(config: uvicorn.Config, receiver: Receiver) -> uvicorn.Server:
    """uvicorn's server, except that SIGTERM/SIGINT also cut a start-up that is still
    retrying an unreachable transmitter (uvicorn only acts on the signal once started)."""
    import uvicorn

    class InterruptingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            receiver.interrupt()
            super().handle_exit(sig, frame)

    return InterruptingServer(config)


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


# --- `ssf receiver streams …`: the stream at the transmitter (SSF §8.1) ---------------------
streams = typer.Typer(
    help="Read, update, replace, pause/enable, verify or delete this receiver's stream at the "
    "transmitter (SSF §8.1). Configured by SSF_RECEIVER_* variables.",
    no_args_is_help=True,
)
app.add_typer(streams, name="streams")
err_console = Console(stderr=True)

_STREAM_ID_HELP = "The stream; default: SSF_RECEIVER_STREAM_ID, else the stored stream record."
_JSON_HELP = "Print JSON."
_STATUSES = ("enabled", "paused", "disabled")


class _CLIError(Exception):
    """A failure the operator can act on: printed as one line, exit 1."""


class _Session:
    """Discovery, an authorized client and the stream id, for one command."""

    def __init__(
        self,
        settings: ReceiverSettings,
        http: httpx.AsyncClient,
        client: TransmitterClient,
        record: dict[str, Any],
    ) -> None:
        self.settings = settings
        self.http = http
        self.client = client
        #: The stored stream record (may be empty); ``_receiver`` holds our own push credential.
        self.record = record
        #: The stream the command acts on, once known (for error messages).
        self.sid: str | None = None

    def stream_id(self, given: str | None) -> str:
        sid = given or self.settings.stream_id or self.record.get("stream_id")
        if not isinstance(sid, str) or not sid:
            raise _CLIError(
                "no stream id: pass --stream-id, set SSF_RECEIVER_STREAM_ID, or start the receiver once"
            )
        self.sid = sid
        return sid


async def _stored_record(settings: ReceiverSettings, issuer: str) -> dict[str, Any]:
    from receiver.store import make_store

    store = make_store(settings.database_url, settings.redis_url, settings.redis_namespace)
    try:
        await store.open()
        try:
            record = await store.load_stream(issuer)
        finally:
            await store.close()
    except Exception as exc:  # any backend failure: say so, no traceback
        raise _CLIError(f"cannot read the stored stream record: {type(exc).__name__}: {exc}") from None
    return record if isinstance(record, dict) else {}


def _stored_credential(settings: ReceiverSettings, record: dict[str, Any]) -> str | None:
    """The receiver's generated push credential, decrypted with its secret (a PUT must send it)."""
    from receiver.credential import PushCredential, make_box

    own = record.get("_receiver")
    if own is None:
        return None
    try:
        box = make_box(settings, create=False)
    except (OSError, ValueError) as exc:
        raise _CLIError(f"cannot read the receiver's secret: {exc}") from None
    cred, _ = PushCredential.from_record(own, box)
    if cred is not None and cred.value is None:
        raise _CLIError(
            "the stored push credential cannot be decrypted with this receiver's secret: run the "
            "command with the receiver's SSF_RECEIVER_SECRET_KEY or _SECRET_FILE, or set "
            "SSF_RECEIVER_PUSH_AUTHORIZATION"
        )
    return cred.value if cred is not None else None


def _run_streams(action: Callable[[_Session], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """Discover the transmitter, authorize, run ``action``; failures exit 1 with one line."""
    import httpx
    from pydantic import ValidationError
    from rich.markup import escape

    from receiver.client import (
        ClientCredentials,
        StaticToken,
        TokenProvider,
        TransmitterClient,
        TransmitterError,
    )
    from receiver.discovery import DiscoveryError, discover, discover_token_endpoint
    from receiver.settings import ReceiverSettings

    async def run() -> dict[str, Any]:
        settings = ReceiverSettings()
        if not settings.transmitter_issuer:
            raise _CLIError("SSF_RECEIVER_TRANSMITTER_ISSUER is not set")
        async with httpx.AsyncClient(timeout=settings.http_timeout) as http:
            meta = await discover(http, settings.transmitter_issuer, dev_mode=settings.dev_mode)
            auth: TokenProvider
            if settings.static_token is not None:
                auth = StaticToken(settings.static_token.get_secret_value())
            elif settings.client_id and settings.client_secret is not None:
                endpoint = settings.token_endpoint or await discover_token_endpoint(
                    http, meta.issuer, dev_mode=settings.dev_mode
                )
                auth = ClientCredentials(
                    http,
                    endpoint,
                    settings.client_id,
                    settings.client_secret.get_secret_value(),
                    settings.scope,
                )
            else:
                raise _CLIError("set SSF_RECEIVER_STATIC_TOKEN or SSF_RECEIVER_CLIENT_ID/_SECRET")
            record = await _stored_record(settings, meta.issuer)
            session = _Session(settings, http, TransmitterClient(meta, http, auth), record)
            try:
                return await action(session)
            except TransmitterError as exc:
                if exc.status == 404 and session.sid:
                    raise _CLIError(f"stream {session.sid} is unknown to the transmitter ({exc})") from None
                raise

    try:
        return asyncio.run(run())
    except (_CLIError, TransmitterError, DiscoveryError) as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True, highlight=False)
    except ValidationError as exc:  # SSF_RECEIVER_* values: one line naming the variable
        from ssfcli.errors import explain

        known = explain(exc)
        line = known[0] if known else str(exc)
        err_console.print(f"[red]error:[/red] {escape(line)}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    raise typer.Exit(1)


def _emit(out: dict[str, Any], as_json: bool, lines: Callable[[dict[str, Any]], list[str]]) -> None:
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    for line in lines(out):
        console.print(line, soft_wrap=True, highlight=False, markup=False)


def _config_lines(cfg: dict[str, Any]) -> list[str]:
    delivery = cfg.get("delivery") or {}
    lines = [
        f"stream: {cfg.get('stream_id')}",
        f"iss: {cfg.get('iss')}  aud: {cfg.get('aud')}",
        f"delivery: {delivery.get('method')}"
        + (f"  {delivery['endpoint_url']}" if delivery.get("endpoint_url") else ""),
        f"description: {cfg.get('description') or ''}",
    ]
    for name in ("events_requested", "events_delivered"):
        values = cfg.get(name) or []
        lines.append(f"{name}: {len(values)}")
        lines.extend(f"  {v}" for v in values)
    return lines


def _pending_or_config(sid: str, cfg: Any) -> dict[str, Any]:
    if cfg is None:  # 202: accepted, not yet applied
        return {"stream_id": sid, "pending": True}
    result: dict[str, Any] = cfg.to_json()
    return result


def _result_lines(out: dict[str, Any]) -> list[str]:
    if out.get("pending"):
        return [f"stream {out['stream_id']}: accepted, pending at the transmitter (202)"]
    return _config_lines(out)


def _split_events(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [e for v in values for e in (p.strip() for p in v.split(",")) if e]


@streams.command("read")
def streams_read(
    stream_id: str | None = typer.Option(None, "--stream-id", help=_STREAM_ID_HELP),
    all_streams: bool = typer.Option(False, "--all", help="List every stream (GET without stream_id)."),
    as_json: bool = typer.Option(False, "--json", help=_JSON_HELP),
) -> None:
    """GET the stream configuration (or the list of streams)."""

    async def action(s: _Session) -> dict[str, Any]:
        if all_streams:
            return {"streams": [c.to_json() for c in await s.client.list()]}
        sid = s.stream_id(stream_id)
        cfg = await s.client.read(sid)
        if cfg is None:
            raise _CLIError(f"stream {sid} is unknown to the transmitter (404)")
        result: dict[str, Any] = cfg.to_json()
        return result

    def lines(out: dict[str, Any]) -> list[str]:
        if "streams" not in out:
            return _config_lines(out)
        found: list[str] = [f"{len(out['streams'])} stream(s)"]
        for cfg in out["streams"]:
            found.extend(_config_lines(cfg))
        return found

    _emit(_run_streams(action), as_json, lines)


@streams.command("update")
def streams_update(
    stream_id: str | None = typer.Option(None, "--stream-id", help=_STREAM_ID_HELP),
    description: str | None = typer.Option(None, "--description", help="New description."),
    events: list[str] | None = typer.Option(
        None, "--events", help="Event type URIs requested (repeat, or comma-separated)."
    ),
    as_json: bool = typer.Option(False, "--json", help=_JSON_HELP),
) -> None:
    """PATCH the stream: only the properties given change (SSF §8.1.1.3)."""
    changes: dict[str, Any] = {}
    if description is not None:
        changes["description"] = description
    requested = _split_events(events)
    if requested is not None:
        changes["events_requested"] = requested
    if not changes:
        err_console.print("[red]error:[/red] nothing to update: give --description and/or --events")
        raise typer.Exit(2)

    async def action(s: _Session) -> dict[str, Any]:
        sid = s.stream_id(stream_id)
        return _pending_or_config(sid, await s.client.update(sid, changes))

    _emit(_run_streams(action), as_json, _result_lines)


@streams.command("replace")
def streams_replace(
    stream_id: str | None = typer.Option(None, "--stream-id", help=_STREAM_ID_HELP),
    description: str | None = typer.Option(None, "--description", help="Default: SSF_RECEIVER_DESCRIPTION."),
    events: list[str] | None = typer.Option(
        None, "--events", help="Event type URIs (repeat, or comma-separated); default: SSF_RECEIVER_EVENTS."
    ),
    as_json: bool = typer.Option(False, "--json", help=_JSON_HELP),
) -> None:
    """PUT the stream with every receiver-supplied property (SSF §8.1.1.4), from the settings."""
    from receiver.reconcile import desired_config

    async def action(s: _Session) -> dict[str, Any]:
        sid = s.stream_id(stream_id)
        st = s.settings
        push_auth = (
            st.push_authorization.get_secret_value()
            if st.push_authorization is not None
            else _stored_credential(st, s.record)
            if st.delivery == "push"
            else None
        )
        body = desired_config(
            events=_split_events(events) or list(st.events),
            delivery=st.delivery,
            push_url=st.push_url,
            push_authorization=push_auth,
            description=description if description is not None else st.description,
        )
        return _pending_or_config(sid, await s.client.replace(sid, body))

    _emit(_run_streams(action), as_json, _result_lines)


@streams.command("status")
def streams_status(
    stream_id: str | None = typer.Option(None, "--stream-id", help=_STREAM_ID_HELP),
    set_to: str | None = typer.Option(None, "--set", help="enabled, paused or disabled."),
    reason: str | None = typer.Option(None, "--reason", help="Why (with --set)."),
    as_json: bool = typer.Option(False, "--json", help=_JSON_HELP),
) -> None:
    """Read the stream status, or update it with --set (SSF §8.1.2)."""
    if set_to is not None and set_to not in _STATUSES:
        err_console.print(f"[red]error:[/red] --set must be one of {', '.join(_STATUSES)}")
        raise typer.Exit(2)
    if reason is not None and set_to is None:
        err_console.print("[red]error:[/red] --reason needs --set")
        raise typer.Exit(2)

    async def action(s: _Session) -> dict[str, Any]:
        sid = s.stream_id(stream_id)
        if set_to is None:
            return (await s.client.get_status(sid)).to_json()
        result = await s.client.set_status(sid, set_to, reason)
        if result is None:  # 202: accepted, not yet applied
            return {"stream_id": sid, "pending": True}
        return result.to_json()

    def lines(out: dict[str, Any]) -> list[str]:
        if out.get("pending"):
            return [f"stream {out['stream_id']}: status change accepted, pending (202)"]
        text = f"stream {out['stream_id']}: {out.get('status')}"
        return [text + (f" ({out['reason']})" if out.get("reason") else "")]

    _emit(_run_streams(action), as_json, lines)


@streams.command("verify")
def streams_verify(
    stream_id: str | None = typer.Option(None, "--stream-id", help=_STREAM_ID_HELP),
    state: str | None = typer.Option(
        None,
        "--state",
        help="The state the verification SET must echo; a running receiver refuses a state it did "
        "not ask for itself (invalid_state), so omit it to check delivery.",
    ),
    as_json: bool = typer.Option(False, "--json", help=_JSON_HELP),
) -> None:
    """Ask the transmitter for a verification event (SSF §8.1.4.2)."""

    async def action(s: _Session) -> dict[str, Any]:
        sid = s.stream_id(stream_id)
        await s.client.verify(sid, state)
        out: dict[str, Any] = {"stream_id": sid, "verification_requested": True}
        if state is not None:
            out["state"] = state
        return out

    def lines(out: dict[str, Any]) -> list[str]:
        suffix = f" (state {out['state']})" if "state" in out else ""
        return [f"stream {out['stream_id']}: verification requested{suffix}"]

    _emit(_run_streams(action), as_json, lines)


@streams.command("delete")
def streams_delete(
    stream_id: str | None = typer.Option(None, "--stream-id", help=_STREAM_ID_HELP),
    as_json: bool = typer.Option(False, "--json", help=_JSON_HELP),
) -> None:
    """DELETE the stream at the transmitter (SSF §8.1.1.5)."""

    async def action(s: _Session) -> dict[str, Any]:
        sid = s.stream_id(stream_id)
        await s.client.delete(sid)
        return {"stream_id": sid, "deleted": True}

    _emit(_run_streams(action), as_json, lambda out: [f"stream {out['stream_id']}: deleted"])
