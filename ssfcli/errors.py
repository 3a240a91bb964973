"""What the ``ssf`` command prints when a setting is wrong or a service is out of reach.

A user who mistypes ``SSF_RECEIVER_DELIVERY`` or starts a command while the database is down
should read one line naming the variable or the service, not a page of traceback; an error
that is none of these is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import re
from typing import Any

import httpx
import typer
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsError
from sqlalchemy.exc import ArgumentError, OperationalError
from typer.core import TyperGroup

from ssf.errors import SSFError

__all__ = ["ReportingGroup", "UsageProblem", "explain"]

#: Settings whose value is never echoed back (secrets, and URLs that may carry a password).
_SENSITIVE = re.compile(r"SECRET|TOKEN|PASSWORD|AUTHORIZATION|_URL$|_KEY$", re.IGNORECASE)


class UsageProblem(Exception):
    """A setting the user must fix (exit status 2, like a bad option)."""


def _settings_classes() -> list[type[BaseSettings]]:
    found: list[type[BaseSettings]] = []
    todo: list[type[BaseSettings]] = [BaseSettings]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            found.append(sub)
            todo.append(sub)
    return found


def _prefix(model_name: str) -> str:
    for cls in _settings_classes():
        if cls.__name__ == model_name:
            return str(cls.model_config.get("env_prefix") or "")
    return ""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _validation(exc: ValidationError) -> str:
    prefix = _prefix(exc.title)
    parts = []
    for err in exc.errors(include_url=False):
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        loc = err.get("loc") or ()
        if not loc:
            parts.append(f"invalid {prefix}* settings: {msg}" if prefix else msg)
            continue
        var = prefix + str(loc[0]).upper()
        value: Any = err.get("input")
        if isinstance(value, str) and not _SENSITIVE.search(var):
            parts.append(f"{var}={value!r}: {msg}")
        else:
            parts.append(f"{var}: {msg}")
    return _one_line("; ".join(parts))


def _settings_error(exc: SettingsError) -> str:
    """pydantic-settings could not even parse a value (a list or object that is not JSON)."""
    match = re.search(r'field "([^"]+)"', str(exc))
    cause = f": {exc.__cause__}" if exc.__cause__ else ""
    if match:
        field = match.group(1).upper()
        for cls in _settings_classes():
            var = str(cls.model_config.get("env_prefix") or "") + field
            if var in os.environ:
                return _one_line(f"{var} is not valid JSON{cause}")
    return _one_line(f"{exc}{cause}")


def explain(exc: BaseException) -> tuple[str, int] | None:
    """One line and an exit status for an error the user can act on; None for a bug."""
    from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeoutError

    from transmitter.auth import AuthError

    if isinstance(exc, ValidationError):
        return _validation(exc), 2
    if isinstance(exc, SettingsError):
        return _settings_error(exc), 2
    if isinstance(exc, UsageProblem):
        return _one_line(str(exc)), 2
    if isinstance(exc, ArgumentError):
        return _one_line(f"invalid database URL: {exc}"), 2
    if isinstance(exc, OperationalError):
        orig = exc.orig if exc.orig is not None else exc
        lines = str(orig).strip().splitlines()
        first = lines[0] if lines else type(orig).__name__
        return f"the database is unreachable or refused the command: {first}", 1
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        return _one_line(f"Redis is unreachable: {exc}"), 1
    if isinstance(exc, httpx.HTTPError):
        from receiver.transport import describe

        try:
            where = f" {exc.request.url}"
        except RuntimeError:  # no request attached
            where = ""
        return f"cannot reach{where}: {describe(exc)}", 1
    if isinstance(exc, (SSFError, AuthError)):
        return _one_line(exc.description), 1
    if isinstance(exc, OSError) and exc.strerror:
        if exc.filename:
            return _one_line(f"{exc.strerror}: {exc.filename}"), 1
        # asyncio's bind error names the address in its text only, not in its attributes
        return _one_line(re.sub(r"^\[Errno \d+\] ", "", str(exc))), 1
    return None


class ReportingGroup(TyperGroup):
    """The root ``ssf`` group: known errors become ``error: …`` on stderr and an exit status."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            known = explain(exc)
            if known is None:
                raise
            line, code = known
            typer.echo(f"error: {line}", err=True)
            raise typer.Exit(code) from None
