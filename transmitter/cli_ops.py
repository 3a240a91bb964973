"""More `ssf transmitter` commands for operators: streams show/delete, tail, bulk publish.

They work on the transmitter's database directly (the operator's view: every stream, whoever
owns it), configured by the same ``SSF_TRANSMITTER_*`` variables as ``serve``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import select

from ssf.errors import SSFError
from ssf.set import decode_unverified
from transmitter.cli import _tx, app, streams_app
from transmitter.db import begin, outbox_t

console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


@streams_app.command("show")
def streams_show(
    stream_id: str,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """A stream's configuration, status, outbox counts and last error."""
    tx = _tx()
    try:
        stream = tx.stream(stream_id)
    except SSFError as exc:
        raise _fail(exc.description, 1) from None
    with begin(tx.engine) as conn:
        err = conn.execute(
            select(outbox_t.c.last_error)
            .where(outbox_t.c.stream_id == stream_id, outbox_t.c.last_error.is_not(None))
            .order_by(outbox_t.c.id.desc())
            .limit(1)
        ).first()
    body: dict[str, Any] = {
        "configuration": stream.config(tx.issuer),
        "owner": stream.owner,
        "status": stream.status,
        "reason": stream.reason,
        "outbox": tx.outbox_counts(stream_id),
        "last_error": err[0] if err else None,
    }
    if as_json:
        sys.stdout.write(json.dumps(body) + "\n")
        return
    cfg = body["configuration"]
    console.print(f"[bold]{stream_id}[/bold]  owner={stream.owner}  status={stream.status}")
    if stream.reason:
        console.print(f"reason: {stream.reason}")
    console.print(f"delivery: {cfg['delivery'].get('method')} {cfg['delivery'].get('endpoint_url', '')}")
    console.print(f"aud: {cfg['aud']}")
    console.print("events delivered: " + (", ".join(cfg["events_delivered"]) or "none"))
    console.print("outbox: " + (" ".join(f"{k}={v}" for k, v in sorted(body["outbox"].items())) or "empty"))
    if body["last_error"]:
        console.print(f"last error: {body['last_error']}")


@streams_app.command("delete")
def streams_delete(
    stream_id: str,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete a stream and its queued SETs (as the operator; the receiver is not told)."""
    from transmitter.auth import MANAGE, Principal

    tx = _tx()
    try:
        stream = tx.stream(stream_id)
    except SSFError as exc:
        raise _fail(exc.description, 1) from None
    if not yes and not typer.confirm(f"delete stream {stream_id} of {stream.owner}?"):
        raise typer.Exit(1)
    tx.delete_stream(Principal(stream.owner, frozenset({MANAGE}), ""), stream_id)
    err_console.print(f"deleted {stream_id}")


def _row_json(row: Any) -> dict[str, Any]:
    try:
        header, claims = decode_unverified(row.token)
    except SSFError:
        header, claims = {}, {}
    return {
        "stream_id": row.stream_id,
        "jti": row.jti,
        "event_type": row.event_type,
        "state": row.state,
        "attempts": row.attempts,
        "created_at": row.created_at,
        "last_error": row.last_error,
        "header": header,
        "claims": claims,
    }


@app.command()
def tail(
    stream_id: str = typer.Argument(..., help="The stream to follow."),
    follow: bool = typer.Option(True, "--follow/--no-follow", help="Keep waiting for new SETs."),
    last: int = typer.Option(10, "--last", "-n", help="Start with this many recent SETs."),
    interval: float = typer.Option(0.5, help="Seconds between looks at the outbox."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per SET and line."),
    limit: int | None = typer.Option(None, help="Stop after this many SETs."),
) -> None:
    """Follow the SETs queued for a stream, decoded (claims unverified: they are our own)."""
    tx = _tx()
    try:
        tx.stream(stream_id)
    except SSFError as exc:
        raise _fail(exc.description, 1) from None
    with begin(tx.engine) as conn:
        rows = conn.execute(
            select(outbox_t)
            .where(outbox_t.c.stream_id == stream_id)
            .order_by(outbox_t.c.id.desc())
            .limit(last)
        ).all()
    rows = list(reversed(rows))
    cursor = rows[-1].id if rows else 0
    if not rows:
        with begin(tx.engine) as conn:
            top = conn.execute(select(outbox_t.c.id).order_by(outbox_t.c.id.desc()).limit(1)).first()
        cursor = top[0] if top else 0
    shown = 0
    if follow:
        # stderr, so --json output stays clean; scripts may wait for this line
        err_console.print(f"following {stream_id} (Ctrl-C to stop)", highlight=False, soft_wrap=True)
    try:
        while True:
            for row in rows:
                item = _row_json(row)
                if as_json:
                    sys.stdout.write(json.dumps(item) + "\n")
                    sys.stdout.flush()
                else:
                    claims = item["claims"]
                    when = time.strftime("%H:%M:%S", time.localtime(row.created_at))
                    console.print(
                        f"[dim]{when}[/dim] [bold]{row.event_type.rsplit('/', 1)[-1]}[/bold] "
                        f"jti={row.jti} txn={claims.get('txn')} state={row.state}"
                    )
                    console.print_json(json.dumps({k: claims.get(k) for k in ("sub_id", "events")}))
                shown += 1
                if limit is not None and shown >= limit:
                    return
            if not follow:
                return
            time.sleep(interval)
            with begin(tx.engine) as conn:
                rows = conn.execute(
                    select(outbox_t)
                    .where(outbox_t.c.stream_id == stream_id, outbox_t.c.id > cursor)
                    .order_by(outbox_t.c.id)
                ).all()
            if rows:
                cursor = rows[-1].id
    except KeyboardInterrupt:
        return
    finally:
        tx.close()


@app.command("publish-file")
def publish_file(
    path: Path = typer.Argument(..., help='JSON lines: {"subject": ..., "events": {uri: {...}}, "txn"?}'),
    batch: int = typer.Option(100, help="Events per transaction."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Publish many events from a file, with a progress bar; prints how many SETs were queued."""
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        items = []
        for n, line in enumerate(lines, 1):
            obj = json.loads(line)
            if not isinstance(obj, dict) or "subject" not in obj or "events" not in obj:
                raise ValueError(f"line {n}: needs 'subject' and 'events'")
            items.append((obj["subject"], obj["events"], obj.get("txn")))
    except (OSError, ValueError) as exc:
        raise _fail(str(exc)) from None
    tx = _tx()
    queued = 0
    with Progress(
        TextColumn("publishing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=as_json,
    ) as progress:
        task = progress.add_task("publish", total=len(items))
        for i in range(0, len(items), batch):
            chunk = items[i : i + batch]
            try:
                results = tx.publish_many(chunk)
            except SSFError as exc:
                raise _fail(f"events {i + 1}-{i + len(chunk)}: {exc.description}") from None
            queued += sum(len(r) for r in results)
            progress.advance(task, len(chunk))
    summary = {"events": len(items), "sets_queued": queued}
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        console.print(f"published {len(items)} events: {queued} SETs queued")
