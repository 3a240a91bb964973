"""Pruning of cutoffs and revoked sessions: how long one pass holds the event loop.

``python -m bench prune [--n N] [--rounds R]``

The state holds ``N`` revoked sessions and ``N`` user cutoffs, their times spread over the
retention window. A pass (``Receiver.prune_state``, memory store) runs beside a probe task
that notes the longest time between two of its wake-ups: the longest stall a request would
see. Three passes: nothing due (the common periodic pass), a tenth due (what a pass every
retention / 10 finds), everything due. For reference, ``full scan`` is the CPU time of the
one-go scan the previous version ran over every entry on each pass (a list comprehension
over the whole cutoff dict), which held the loop for all of it.

Figures are medians over ``--rounds`` fresh states; CPU seconds are the process's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import time
from typing import Any

from receiver.core import Receiver
from receiver.settings import ReceiverSettings
from receiver.state import CUTOFF, REVOKED, Mutation, RevocationState
from ssf.subjects import Subject

RETENTION = 86400.0


def _state(n: int, now: float) -> RevocationState:
    state = RevocationState()
    for i in range(n):
        at = now - RETENTION * 1.1 * (i / n)  # the oldest tenth is past the retention
        state.apply(Mutation(Subject.opaque(f"session-{i:09d}"), CUTOFF, math.inf, at))
        state.apply(Mutation(Subject.iss_sub("https://idp.example.com", f"user-{i:09d}"), CUTOFF, at, at))
    return state


def _full_scan(state: RevocationState, before: float) -> float:
    t0 = time.process_time()
    limit = REVOKED + before
    dead = [k for k, v in state.cutoffs.items() if v < before or REVOKED <= v < limit]
    del dead
    return time.process_time() - t0


async def _pass(state: RevocationState, before: float) -> dict[str, float]:
    rcv = Receiver(ReceiverSettings(database_url="memory"))
    rcv.state = state
    longest = 0.0
    done = False

    async def probe() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    task = asyncio.create_task(probe())
    await asyncio.sleep(0)
    cpu = time.process_time()
    pruned = await rcv.prune_state(before)
    cpu = time.process_time() - cpu
    done = True
    await task
    return {"pruned": pruned, "cpu_s": cpu, "longest_stall_s": longest}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench prune", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="revoked sessions (and as many cutoffs)")
    p.add_argument("--rounds", type=int, default=3)
    opts = p.parse_args(argv)
    rows: dict[str, list[dict[str, float]]] = {}
    for _ in range(opts.rounds):
        now = time.time()
        state = _state(opts.n, now)
        for name, before in (
            ("nothing due", now - RETENTION * 1.2),
            ("a tenth due", now - RETENTION),
            ("everything due", now + 120),
        ):
            scan = _full_scan(state, before)
            result = asyncio.run(_pass(state, before))
            rows.setdefault(name, []).append({**result, "full_scan_cpu_s": scan})
    out: dict[str, Any] = {"entries": 2 * opts.n}
    for name, results in rows.items():
        out[name] = {k: round(statistics.median(r[k] for r in results), 4) for k in results[0]}
    print(json.dumps(out, indent=1))
    return 0
