"""Placeholder demo until the full continuous-authorization demo lands: a SET end to end."""

from __future__ import annotations

from rich.console import Console

from ssf.events import SessionRevoked
from ssf.keys import KeySet, PublicKeys, generate_signing_key
from ssf.set import SecurityEventToken, SETVerifier, sign_set
from ssf.subjects import Subject


def main() -> int:
    console = Console()
    key = generate_signing_key("RS256", kid="demo-1")
    token = SecurityEventToken.create(
        iss="https://idp.example",
        aud="https://api.example",
        sub_id=Subject.email("ada@example.com"),
        event=SessionRevoked(initiating_entity="policy", reason_admin={"en": "demo"}),
    )
    compact = sign_set(token, key)
    console.print(f"signed SET ({len(compact)} bytes): {compact[:60]}…")
    verifier = SETVerifier(
        issuer="https://idp.example",
        audience="https://api.example",
        keys=PublicKeys.from_key_set(KeySet([key])),
    )
    decoded = verifier.verify(compact)
    console.print(f"verified: {decoded.event_type} for {decoded.sub_id.to_dict()}")
    return 0


raise SystemExit(main())
