"""SET sign / verify throughput beside the raw ``cryptography`` primitive, in one run.

``python -m bench set [--rounds N] [--min-time S] [--alg RS256 --alg ES256 ...] [--json]``

For each algorithm it times, interleaved round by round (so drift hits every row alike):

* **ours sign**: ``SecurityEventToken.create(...)`` (fresh ``jti``/``iat``) + ``sign_set`` — the
  transmitter's path from a built event to a compact SET;
* **raw sign**: the bare ``cryptography`` signature over a signing input built in advance;
* **ours verify**: ``SETVerifier.verify`` — size, header, ``typ``/``alg``/``kid`` checks, the
  signature, claims rules, subject and event validation, ``iss``/``aud``/``iat``;
* **raw verify**: the bare ``cryptography`` verification of the same signing input (the ES256
  floor verifies a DER signature prepared in advance, as in docs/perf-anchors.md);
* for reference, **joserfc alone**: ``jws.serialize_compact`` of the ready payload bytes and
  ``jws.deserialize_compact`` with the imported key and a reused registry — the JOSE layer
  only, without any SET claim, subject or event work.

It reports medians of per-round rates and the median of the per-round ratios ours/raw (each
ratio pairs two batches timed back to back); the goal is ≥ 50 % everywhere. Time is the
process's CPU time by default (``--clock cpu``), so other processes competing for the cores
do not count against either side; ``--clock wall`` uses ``perf_counter``.
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cryptography
import joserfc
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jws

from ssf.events import SessionRevoked
from ssf.keys import KeySet, PublicKeys, SigningKey, generate_signing_key
from ssf.set import SecurityEventToken, SETVerifier, sign_set
from ssf.subjects import Subject

ALGORITHMS = ("RS256", "ES256", "EdDSA")
ISSUER = "https://transmitter.example.com"
AUDIENCE = "https://receiver.example.com/ssf"
GOAL = 0.5


@dataclass
class Row:
    alg: str
    op: str
    ours: float  # ops/s (median of rounds)
    raw: float
    ratio: float  # median of the per-round ratios ours/raw
    joserfc: float  # ops/s of joserfc's JWS API alone (reference)
    joserfc_ratio: float


def _event() -> SessionRevoked:
    return SessionRevoked(
        event_timestamp=1_700_000_000,
        initiating_entity="policy",
        reason_admin={"en": "Landspeed Policy Violation: C076E82F"},
        reason_user={"en": "Access attempt from multiple regions.", "es-410": "Intento de acceso."},
    )


def _b64d(seg: str) -> bytes:
    return base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))


def _raw_ops(
    key: SigningKey, signing_input: bytes, signature: bytes
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """The bare primitive on the same bytes: (sign, verify) closures."""
    private: Any = key.key.get_op_key("sign")
    public: Any = private.public_key()
    if key.alg == "RS256":
        pkcs1, sha = padding.PKCS1v15(), hashes.SHA256()
        return (
            lambda: private.sign(signing_input, pkcs1, sha),
            lambda: public.verify(signature, signing_input, pkcs1, sha),
        )
    if key.alg == "ES256":
        algo = ec.ECDSA(hashes.SHA256())
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        return (lambda: private.sign(signing_input, algo), lambda: public.verify(der, signing_input, algo))
    if key.alg == "EdDSA":
        return (lambda: private.sign(signing_input), lambda: public.verify(signature, signing_input))
    raise SystemExit(f"no raw primitive for {key.alg}")


CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}
_clock: Callable[[], float] = time.process_time


def _calibrate(fn: Callable[[], Any], min_time: float) -> int:
    n = 1
    while True:
        t0 = _clock()
        for _ in range(n):
            fn()
        if _clock() - t0 >= min_time:
            return n
        n *= 2


def _rate(fn: Callable[[], Any], n: int) -> float:
    t0 = _clock()
    for _ in range(n):
        fn()
    return n / (_clock() - t0)


def bench_alg(alg: str, rounds: int, min_time: float) -> list[Row]:
    key = generate_signing_key(alg, kid=f"bench-{alg.lower()}")
    subject = Subject.email("user@example.com")
    event = _event()

    def ours_sign() -> str:
        token = SecurityEventToken.create(
            iss=ISSUER, aud=AUDIENCE, sub_id=subject, event=event, txn="8675309"
        )
        return sign_set(token, key)

    compact = ours_sign()
    verifier = SETVerifier(issuer=ISSUER, audience=AUDIENCE, keys=PublicKeys.from_key_set(KeySet([key])))
    expected = verifier.verify(compact)  # a wrong result would make the numbers meaningless
    if expected.event != event or expected.sub_id != subject:
        raise SystemExit("verify did not round-trip the SET")
    header_b64, payload_b64, sig_b64 = compact.split(".")
    signing_input = f"{header_b64}.{payload_b64}".encode()
    raw_sign, raw_verify = _raw_ops(key, signing_input, _b64d(sig_b64))
    raw_verify()  # raises InvalidSignature if the floor were not verifying the same bytes

    registry = jws.JWSRegistry(algorithms=[alg])
    jose_header = {"alg": alg, "typ": "secevent+jwt", "kid": key.kid}
    payload = _b64d(payload_b64)
    public = verifier.keys.find(key.kid, alg)
    candidates: dict[str, Callable[[], Any]] = {
        "sign/ours": ours_sign,
        "sign/raw": raw_sign,
        "sign/joserfc": lambda: jws.serialize_compact(jose_header, payload, key.key, registry=registry),
        "verify/ours": lambda: verifier.verify(compact),
        "verify/raw": raw_verify,
        "verify/joserfc": lambda: jws.deserialize_compact(compact, public, registry=registry),
    }
    sizes = {name: _calibrate(fn, min_time) for name, fn in candidates.items()}
    rates: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            rates[name].append(_rate(fn, sizes[name]))
    med = {name: statistics.median(values) for name, values in rates.items()}
    rows = []
    for op in ("sign", "verify"):
        raw = rates[f"{op}/raw"]
        ratios = [o / r for o, r in zip(rates[f"{op}/ours"], raw, strict=True)]
        jose = [j / r for j, r in zip(rates[f"{op}/joserfc"], raw, strict=True)]
        rows.append(
            Row(
                alg,
                op,
                med[f"{op}/ours"],
                med[f"{op}/raw"],
                statistics.median(ratios),
                med[f"{op}/joserfc"],
                statistics.median(jose),
            )
        )
    return rows


def _table(rows: list[Row]) -> str:
    head = (
        f"{'alg':<6} {'op':<7} {'ours ops/s':>11} {'raw ops/s':>11} {'ours µs':>8} {'raw µs':>8} "
        f"{'ratio':>6}  {'goal':<5} | {'joserfc-only µs':>15} {'ratio':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        verdict = "ok" if r.ratio >= GOAL else "BELOW"
        lines.append(
            f"{r.alg:<6} {r.op:<7} {r.ours:>11,.0f} {r.raw:>11,.0f} {1e6 / r.ours:>8.1f} "
            f"{1e6 / r.raw:>8.1f} {r.ratio:>6.0%}  {verdict:<5} | {1e6 / r.joserfc:>15.1f} "
            f"{r.joserfc_ratio:>6.0%}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench set", description=__doc__.splitlines()[0])
    parser.add_argument("--alg", action="append", choices=ALGORITHMS, help="repeatable; default: all")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds per candidate")
    parser.add_argument("--min-time", type=float, default=0.1, help="seconds per timed batch")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu", help="CPU or wall time")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    global _clock
    _clock = CLOCKS[args.clock]
    rows: list[Row] = []
    for alg in args.alg or ALGORITHMS:
        rows.extend(bench_alg(alg, args.rounds, args.min_time))
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
    else:
        print(
            f"Python {platform.python_version()}, cryptography {cryptography.__version__}, "
            f"joserfc {joserfc.__version__ if hasattr(joserfc, '__version__') else '?'}; "
            f"{args.clock} clock, median of {args.rounds} interleaved rounds, one core"
        )
        print(_table(rows))
    return 0 if all(r.ratio >= GOAL for r in rows) else 1
