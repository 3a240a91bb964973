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


def test_quick_start_is_the_two_make_commands() -> None:
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make demo" in quick and "make test" in quick
