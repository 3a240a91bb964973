"""``ssf keys`` and ``ssf set``: key generation, SET signing and decoding."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console

from ssf.errors import SSFError
from ssf.events import parse_event
from ssf.keys import SIGNING_ALGORITHMS, KeySet, PublicKeys, generate_signing_key, load_signing_key
from ssf.set import (
    DEFAULT_ALGORITHMS,
    SecurityEventToken,
    SETVerifier,
    UnknownKeyID,
    decode_unverified,
    parse_claims,
    sign_set,
)
from ssf.subjects import parse_subject

keys_app = typer.Typer(help="Generate and inspect signing keys.", no_args_is_help=True)
set_app = typer.Typer(help="Sign and decode Security Event Tokens.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


@keys_app.command("generate")
def keys_generate(
    alg: str = typer.Option("RS256", help=f"One of {', '.join(SIGNING_ALGORITHMS)}."),
    kid: str | None = typer.Option(None, help="Key id (random when omitted)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the private JWKS here."),
    public: Path | None = typer.Option(None, help="Also write the public JWKS here."),
) -> None:
    """Generate a signing key and print (or write) it as a private JWKS."""
    try:
        key = generate_signing_key(alg, kid=kid, created_at=int(time.time()))
    except SSFError as exc:
        err_console.print(f"[red]{exc.description}[/red]")
        raise typer.Exit(2) from None
    ks = KeySet([key])
    text = json.dumps(ks.private_jwks(), indent=2)
    if out:
        try:
            _write_private(out, text + "\n")
        except OSError as exc:
            err_console.print(f"[red]cannot write {out}:[/red] {exc.strerror or exc}")
            raise typer.Exit(2) from None
        err_console.print(f"wrote private key {key.kid} ({alg}) to {out}")
    else:
        sys.stdout.write(text + "\n")
    if public:
        public.write_text(json.dumps(ks.jwks(), indent=2))


def _write_private(path: Path, text: str) -> None:
    """Owner-only from the first byte: a chmod after writing would leave a window in which
    the private key is readable by others."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # an existing file keeps its mode on O_CREAT
        f.write(text)


def _load_key(path: Path) -> Any:
    data = path.read_text()
    obj = json.loads(data) if data.lstrip().startswith("{") else None
    if isinstance(obj, dict) and "keys" in obj:
        return KeySet.from_private_jwks(obj).active
    return load_signing_key(data)


@set_app.command("sign")
def set_sign(
    key: Path = typer.Option(..., help="Private key: JWKS, JWK or PEM file."),
    iss: str = typer.Option(..., help="Issuer."),
    aud: list[str] = typer.Option(..., help="Audience (repeat for several)."),
    event: str = typer.Option(..., help="Event type URI."),
    subject: str = typer.Option(..., help='Subject identifier JSON, e.g. {"format":"email","email":"a@b"}'),
    payload: str = typer.Option("{}", help="Event members as JSON."),
    txn: str | None = typer.Option(None),
) -> None:
    """Build, validate and sign one SET; prints the compact JWS."""
    try:
        signing_key = _load_key(key)
        token = SecurityEventToken.create(
            iss=iss,
            aud=aud[0] if len(aud) == 1 else aud,
            sub_id=parse_subject(json.loads(subject)),
            event=parse_event(event, json.loads(payload)),
            event_type=event,
            txn=txn,
        )
        sys.stdout.write(sign_set(token, signing_key) + "\n")
    except (SSFError, ValueError, OSError) as exc:
        err_console.print(f"[red]cannot sign:[/red] {getattr(exc, 'description', exc)}")
        raise typer.Exit(2) from None


@set_app.command("decode")
def set_decode(
    token: str = typer.Argument(..., help="The compact SET, or - to read standard input."),
    jwks: str | None = typer.Option(None, help="JWKS file or URL to verify the signature against."),
    issuer: str | None = typer.Option(None, help="Expected issuer (defaults to the SET's iss)."),
    audience: str | None = typer.Option(None, help="Expected audience."),
) -> None:
    """Pretty-print a SET's header and claims, validate its event, and verify it if given keys."""
    text = sys.stdin.read().strip() if token == "-" else token.strip()
    try:
        header, claims = decode_unverified(text)
    except SSFError as exc:
        err_console.print(f"[red]not a SET:[/red] {exc.description}")
        raise typer.Exit(2) from None
    console.print_json(json.dumps(header))
    console.print_json(json.dumps(claims))
    if jwks is None:
        try:
            parse_claims(claims)
            console.print("[green]claims and event are valid[/green] (signature not checked: no --jwks)")
        except SSFError as exc:
            console.print(f"[red]invalid ({exc.err}):[/red] {exc.description}")
            raise typer.Exit(1) from None
        return
    try:
        keys = PublicKeys.from_jwks(_fetch_jwks(jwks))
    except (SSFError, httpx.HTTPError, OSError, ValueError) as exc:
        reason = exc.description if isinstance(exc, SSFError) else str(exc)
        console.print(f"[red]could not load the JWKS:[/red] {reason}")
        raise typer.Exit(2) from None
    verifier = SETVerifier(
        issuer=issuer or str(claims.get("iss", "")),
        audience=audience,
        keys=keys,
        algorithms=DEFAULT_ALGORITHMS,
    )
    try:
        verifier.verify(text)
    except UnknownKeyID as exc:
        held = ", ".join(sorted(keys.kids())) or "none"
        console.print(
            f"[red]does not verify ({exc.err}):[/red] no key in the JWKS fits kid {exc.kid!r} "
            f"and alg {header.get('alg')!r} (kids held: {held})"
        )
        raise typer.Exit(1) from None
    except SSFError as exc:
        console.print(f"[red]does not verify ({exc.err}):[/red] {exc.description}")
        raise typer.Exit(1) from None
    console.print("[green]signature, claims and event verify[/green]")


def _fetch_jwks(source: str) -> Any:
    """A JWKS document from a file or an http(s) URL; a non-2xx answer is an error, not keys."""
    if source.startswith(("http://", "https://")):
        response = httpx.get(source, timeout=10, headers={"Accept": "application/json"})
        response.raise_for_status()
        return response.json()
    return json.loads(Path(source).read_text())
