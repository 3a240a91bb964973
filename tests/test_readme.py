"""The README's configuration reference names every setting the services read."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from demo.idp_settings import IdPSettings
from receiver.settings import ReceiverSettings
from transmitter.settings import TransmitterSettings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


@pytest.mark.parametrize("settings", [TransmitterSettings, ReceiverSettings, IdPSettings])
def test_every_setting_is_in_the_configuration_reference(settings: type[BaseSettings]) -> None:
    prefix = settings.model_config.get("env_prefix", "")
    missing = [
        f"{prefix}{name.upper()}"
        for name in settings.model_fields
        if f"`{prefix}{name.upper()}`" not in README
    ]
    assert not missing, f"README.md does not document {missing}"


def test_quick_start_is_exactly_the_two_make_commands() -> None:
    """Issue 2: the README opens with a quick start of exactly `make demo` and `make test`."""
    headings = [line for line in README.splitlines() if line.startswith("## ")]
    assert headings[0] == "## Quick start"  # it opens the README
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = quick.split("```")[1::2]
    assert len(blocks) == 1, "the quick start has one code block"
    lines = [line.split("#", 1)[0].strip() for line in blocks[0].splitlines()[1:]]
    assert [line for line in lines if line] == ["make demo", "make test"]


def test_make_targets_build_their_own_environment() -> None:
    """Both commands work on a fresh machine: each depends on the target that makes .venv."""
    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    for target in ("demo", "test"):
        (rule,) = [line for line in makefile.splitlines() if line.startswith(f"{target}:")]
        assert "$(STAMP)" in rule, rule
    assert "-m venv $(VENV)" in makefile and "pip install" in makefile


def test_ci_runs_exactly_make_test_and_passes_its_failure_on() -> None:
    """Issue 2: `.ci/run` runs exactly the README's `make test`; its exit status is CI's."""
    root = Path(__file__).resolve().parent.parent
    ci = root / ".ci" / "run"
    assert ci.stat().st_mode & 0o111, ".ci/run must be executable"
    script = ci.read_text()
    commands = [line.strip() for line in script.splitlines() if line.strip() and not line.startswith("#")]
    assert "set -euo pipefail" in commands
    assert commands[-1] == "exec make test"  # exec: make's exit status is the script's
    assert sum("make " in c for c in commands) == 1
    makefile = (root / "Makefile").read_text()
    (rule,) = [line for line in makefile.splitlines() if line.startswith("test:")]
    assert rule.split(":", 1)[1].split() == ["$(STAMP)", "lint", "pytest"]
    assert "$(BIN)/mypy ssf transmitter receiver conformance ssfcli demo" in makefile
    assert "$(BIN)/ruff check" in makefile
    assert "[tool.mypy]\nstrict = true" in (root / "pyproject.toml").read_text()  # mypy --strict
