"""``ssf keys`` and ``ssf set``: key generation, SET signing and decoding."""

from __future__ import annotations

import json
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
from ssf.set import DEFAULT_ALGORITHMS, SecurityEventToken, SETVerifier, decode_unverified, sign_set
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
        out.write_text(text)
        out.chmod(0o600)
        err_console.print(f"wrote private key {key.kid} ({alg}) to {out}")
    else:
        sys.stdout.write(text + "\n")
    if public:
        public.write_text(json.dumps(ks.jwks(), indent=2))


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
        from ssf.set import parse_claims

        try:
            parse_claims(claims)
            console.print("[green]claims and event are valid[/green] (signature not checked: no --jwks)")
        except SSFError as exc:
            console.print(f"[red]invalid ({exc.err}):[/red] {exc.description}")
            raise typer.Exit(1) from None
        return
    try:
        if jwks.startswith(("http://", "https://")):
            doc = httpx.get(jwks, timeout=10).json()
        else:
            doc = json.loads(Path(jwks).read_text())
        verifier = SETVerifier(
            issuer=issuer or str(claims.get("iss", "")),
            audience=audience,
            keys=PublicKeys.from_jwks(doc),
            algorithms=DEFAULT_ALGORITHMS,
        )
        verifier.verify(text)
    except SSFError as exc:
        console.print(f"[red]does not verify ({exc.err}):[/red] {exc.description}")
        raise typer.Exit(1) from None
    except (httpx.HTTPError, OSError, ValueError) as exc:
        console.print(f"[red]could not load the JWKS:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print("[green]signature, claims and event verify[/green]")
