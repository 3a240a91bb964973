"""The SET benchmark harness runs end to end (no timing is asserted: figures live in bench/)."""

from __future__ import annotations

import json

import pytest

from bench.__main__ import main as bench_main
from bench.set_bench import main


def test_set_bench_runs_and_reports_every_column(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--alg", "ES256", "--rounds", "1", "--min-time", "0.001", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert [(r["alg"], r["op"]) for r in rows] == [("ES256", "sign"), ("ES256", "verify")]
    for row in rows:
        assert row["ours"] > 0 and row["raw"] > 0 and row["joserfc"] > 0 and row["ratio"] > 0


def test_dispatcher_knows_set_and_rejects_unknown_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["nope"]) == 2
    assert "set" in capsys.readouterr().err
    assert bench_main(["--help"]) == 0
