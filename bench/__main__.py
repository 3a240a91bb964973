"""Dispatch ``python -m bench <name> [args]`` to one benchmark module's ``main(argv)``."""

from __future__ import annotations

import importlib
import sys

#: Benchmark name → module (each has ``main(argv: list[str]) -> int``).
BENCHMARKS: dict[str, str] = {
    "prune": "bench.prune_bench",
    "set": "bench.set_bench",
    "receiver": "bench.receiver_bench",
    "transmitter": "bench.transmitter_bench",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help") or args[0] not in BENCHMARKS:
        names = ", ".join(sorted(BENCHMARKS))
        print(f"usage: python -m bench <name> [args]   (names: {names})", file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    module = importlib.import_module(BENCHMARKS[args[0]])
    result: int = module.main(args[1:])
    return result


if __name__ == "__main__":
    sys.exit(main())
