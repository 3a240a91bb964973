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
