"""`ssf transmitter` commands: serve, clients and tokens, publishing, keys."""

from __future__ import annotations

import json
import logging
import os
import sys
from types import FrameType
from typing import TYPE_CHECKING

import typer
import uvicorn
from sqlalchemy.exc import OperationalError

from ssf.errors import SSFError

if TYPE_CHECKING:
    from transmitter.notify import Notifier
    from transmitter.service import Transmitter

app = typer.Typer(help="SSF transmitter commands.", no_args_is_help=True)
client_app = typer.Typer(help="OAuth clients of the built-in token endpoint.", no_args_is_help=True)
keys_app = typer.Typer(help="Signing keys.", no_args_is_help=True)
app.add_typer(client_app, name="client")
app.add_typer(keys_app, name="keys")
streams_app = typer.Typer(help="Operator actions on streams.", no_args_is_help=True)
app.add_typer(streams_app, name="streams")


@app.callback()
def _root() -> None:
    """SSF transmitter commands (configured by SSF_TRANSMITTER_* variables)."""


def _tx() -> Transmitter:
    from transmitter.service import Transmitter
    from transmitter.settings import TransmitterSettings

    return Transmitter(TransmitterSettings())


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8080, help="TCP port."),
    ssl_certfile: str | None = typer.Option(None, help="TLS certificate chain (PEM) to serve https."),
    ssl_keyfile: str | None = typer.Option(None, help="TLS private key (PEM)."),
    log_format: str = typer.Option(
        "json", envvar="SSF_LOG_FORMAT", help="json (one object per line) or text."
    ),
    log_level: str = typer.Option("info", envvar="SSF_LOG_LEVEL", help="debug, info, warning, error."),
) -> None:
    """Run the transmitter (uvicorn, uvloop, httptools, no access log; TLS >= 1.2 with a cert)."""

    from ssfcli.logs import configure_logging
    from transmitter.app import create_app
    from transmitter.settings import TransmitterSettings

    try:
        configure_logging(log_format, log_level)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    for option, path in (("--ssl-certfile", ssl_certfile), ("--ssl-keyfile", ssl_keyfile)):
        if path is not None and not os.path.isfile(path):  # ssl's own error names no file
            typer.echo(f"error: {option}: no such file: {path}", err=True)
            raise typer.Exit(2)
    try:
        application = create_app(TransmitterSettings())
    except ValueError as exc:  # a setting (pydantic's errors are ValueErrors too): one line
        from ssfcli.errors import explain

        known = explain(exc)
        typer.echo(f"error: {known[0] if known else exc}", err=True)
        raise typer.Exit(2) from None
    except OperationalError as exc:
        # Exit for the supervisor to restart us; a traceback would only bury the reason.
        typer.echo(f"error: the database is unreachable: {_first_line(exc)}", err=True)
        raise typer.Exit(1) from None
    config = uvicorn.Config(
        application,
        host=host,
        port=port,
        access_log=False,
        log_level="warning",
        log_config=None,  # keep configure_logging's handler
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        # A backstop: open long polls are answered at once on shutdown (_StoppingServer);
        # anything still running after this is cut, and un-acknowledged SETs are served again.
        timeout_graceful_shutdown=5,
    )
    scheme = "https" if ssl_certfile else "http"
    # uvicorn's own start-up lines are off (log level warning): say where we listen.
    logging.getLogger("transmitter").info(
        "starting on %s://%s:%d (issuer %s)", scheme, host, port, application.state.transmitter.issuer
    )
    _StoppingServer(config, application.state.transmitter.notifier).run()


def _first_line(exc: OperationalError) -> str:
    text = str(exc.orig if exc.orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _StoppingServer(uvicorn.Server):
    """On SIGTERM/SIGINT, open long polls answer (empty) at once instead of holding the stop."""

    def __init__(self, config: uvicorn.Config, notifier: Notifier) -> None:
        super().__init__(config)
        self._notifier = notifier

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._notifier.close()
        super().handle_exit(sig, frame)


@client_app.command("add")
def client_add(
    name: str = typer.Argument(..., help="A name of your choosing (for list, token, remove)."),
    scope: list[str] = typer.Option(None, "--scope", help="Scopes (repeat); default ssf.read ssf.manage."),
    publisher: bool = typer.Option(False, "--publisher", help="A publishing client (scope ssf.publish)."),
    audience: str | None = typer.Option(None, help="The `aud` of this receiver's SETs (default: client_id)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Register a client and print its client_id and client_secret."""
    scopes = [x for s in scope or [] for x in s.split()]
    if publisher:
        scopes.append("ssf.publish")
    try:
        info, secret = _tx().auth.add_client(name, scopes or None, audience)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        body = {"client_id": info.client_id, "client_secret": secret, "scope": " ".join(info.scopes)}
        sys.stdout.write(json.dumps(body) + "\n")
        return
    typer.echo(f"client_id={info.client_id}")
    typer.echo(f"client_secret={secret}")
    typer.echo(f"scope={' '.join(info.scopes)}")


@client_app.command("list")
def client_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Registered clients (never their secrets)."""
    clients = _tx().auth.clients()
    if as_json:
        rows = [
            {"name": c.name, "client_id": c.client_id, "scopes": list(c.scopes), "audience": c.audience}
            for c in clients
        ]
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    for c in clients:
        typer.echo(f"{c.name}\t{c.client_id}\t{' '.join(c.scopes)}\taud={c.audience}")


@client_app.command("remove")
def client_remove(name: str) -> None:
    """Delete a client; its tokens stop working at once."""
    if not _tx().auth.remove_client(name):
        typer.echo("no such client", err=True)
        raise typer.Exit(1)


@client_app.command("token")
def client_token(
    name: str,
    scope: str | None = typer.Option(None, help="Narrower scope."),
    as_json: bool = typer.Option(False, "--json", help="Print the RFC 6749 token response as JSON."),
) -> None:
    """Print a bearer token for a registered client (for scripts)."""
    tx = _tx()
    info = tx.auth.client_by_name(name)
    if info is None:
        typer.echo("no such client", err=True)
        raise typer.Exit(1)
    body = tx.auth.issue_token(info, scope)
    typer.echo(json.dumps(body) if as_json else body["access_token"])


@app.command()
def publish(
    event_uri: str = typer.Argument(..., help="Event type URI, e.g. a CAEP session-revoked."),
    subject: str = typer.Option(..., "--subject", help="Subject identifier as JSON."),
    payload: str = typer.Option("{}", "--payload", help="Event members as JSON."),
    txn: str | None = typer.Option(None, "--txn", help="Transaction id."),
) -> None:
    """Publish one event to every matching stream; prints {"jti": {stream_id: jti}}."""
    try:
        result = _tx().publish(json.loads(subject), {event_uri: json.loads(payload)}, txn)
    except (ValueError, SSFError) as exc:
        typer.echo(f"error: {getattr(exc, 'description', exc)}", err=True)
        raise typer.Exit(2) from None
    sys.stdout.write(json.dumps({"jti": result}) + "\n")


@keys_app.command("rotate")
def keys_rotate(
    alg: str | None = typer.Option(None, help="Algorithm of the new key."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Add a new signing key; older keys stay in the JWKS for the configured overlap."""
    key = _tx().keys.rotate(alg)
    if as_json:
        sys.stdout.write(json.dumps({"kid": key.kid, "alg": key.alg, "created_at": key.created_at}) + "\n")
        return
    typer.echo(f"new signing key {key.kid} ({key.alg})")


@keys_app.command("import")
def keys_import(
    path: str = typer.Argument(..., help="A private JWK, private JWKS (its active key) or PEM file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Make a key from a file the active signing key; the current one stays in the JWKS for the overlap."""
    from pathlib import Path

    from transmitter.keystore import read_key_file

    try:
        key = read_key_file(Path(path))
    except (OSError, ValueError, SSFError) as exc:
        typer.echo(f"error: {path}: {getattr(exc, 'description', None) or exc}", err=True)
        raise typer.Exit(2) from None
    added = _tx().keys.import_key(key)
    if as_json:
        sys.stdout.write(json.dumps({"kid": key.kid, "alg": key.alg, "imported": added}) + "\n")
        return
    typer.echo(f"{'imported' if added else 'already stored:'} signing key {key.kid} ({key.alg})")


@keys_app.command("list")
def keys_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Signing keys: the active one and those retired but still published."""
    tx = _tx()
    active = tx.keys.active.kid
    if as_json:
        rows = [
            {
                "kid": k.kid,
                "alg": k.alg,
                "created_at": k.created_at,
                "retired_at": k.retired_at,
                "active": k.kid == active,
            }
            for k in tx.keys.all()
        ]
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    for k in tx.keys.all():
        state = "active" if k.kid == active else f"retired_at={k.retired_at}"
        typer.echo(f"{k.kid}\t{k.alg}\tcreated_at={k.created_at}\t{state}")


@streams_app.command("list")
def streams_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every stream with its owner, method, status and queue."""
    tx = _tx()
    if as_json:
        rows = [
            {
                "stream_id": st.stream_id,
                "owner": st.owner,
                "method": st.method,
                "status": st.status,
                "reason": st.reason,
                "endpoint_url": st.endpoint_url,
                "outbox": tx.outbox_counts(st.stream_id),
            }
            for st in tx.list_streams()
        ]
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    for st in tx.list_streams():
        counts = tx.outbox_counts(st.stream_id)
        queue = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        typer.echo(f"{st.stream_id}\t{st.owner}\t{st.method}\t{st.status}\t{st.endpoint_url or ''}\t{queue}")


@streams_app.command("status")
def streams_status(
    stream_id: str,
    status: str = typer.Argument(..., help="enabled, paused or disabled"),
    reason: str | None = typer.Option(None, help="Reason sent in the stream-updated event."),
) -> None:
    """Change a stream's status as the operator: the receiver gets a stream-updated event."""
    try:
        body = _tx().set_status(stream_id, status, reason)
    except SSFError as exc:
        typer.echo(f"error: {exc.description}", err=True)
        raise typer.Exit(2) from None
    sys.stdout.write(json.dumps(body) + "\n")


@streams_app.command("verify")
def streams_verify(stream_id: str, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Send a transmitter-initiated verification event (it carries no state)."""
    try:
        jti = _tx().send_verification(stream_id)
    except SSFError as exc:
        typer.echo(f"error: {exc.description}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps({"stream_id": stream_id, "jti": jti}) if as_json else jti)


from transmitter import cli_ops as _cli_ops  # noqa: E402, F401  (more commands)
