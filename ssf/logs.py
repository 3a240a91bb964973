"""Structured logs: one JSON object per line, with secrets scrubbed (the formatters; where the
lines go, a queue and a writer thread, is ``ssfcli/logs.py``: this package does no I/O).

Used by the transmitter and receiver services (``--log-format json``, the default of
``serve``). Fields given with ``extra={...}`` become members of the object, so a delivery line
reads ``{"ts": ..., "level": "info", "logger": "transmitter.delivery", "msg": "push delivered",
"stream_id": ..., "jti": ..., "txn": ...}``.

Nothing that looks like a credential reaches a log line: ``Bearer``/``Basic``/``DPoP``
credentials, JWTs (access tokens, SETs), ``authorization_header``/``client_secret``/``token``
members and URL user-info are replaced by ``[redacted]`` in the message, in every extra field
and in exception text.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["JsonFormatter", "RedactingFilter", "TextFormatter", "redact"]

REDACTED: Final = "[redacted]"
#: Extra fields whose values are never logged, whatever they hold.
SECRET_FIELDS: Final = frozenset(
    {
        "authorization",
        "authorization_header",
        "access_token",
        "token",
        "client_secret",
        "secret",
        "secret_key",
        "password",
        "cookie",
        "set_token",
    }
)
_PATTERNS: Final = (
    # Authorization-style credentials: "Bearer abc", "Basic abc=", "DPoP ..."
    (re.compile(r"(?i)\b(bearer|basic|dpop|token)(\s+|=)[A-Za-z0-9\-._~+/=]{4,}"), r"\1\2" + REDACTED),
    # Compact JWS/JWT (header always starts with eyJ = '{"')
    (re.compile(r"eyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*"), REDACTED),
    # user:password@ in URLs
    (re.compile(r"(?<=://)[^/@\s:]+:[^/@\s]+@"), REDACTED + "@"),
    # "authorization_header": "..." / client_secret=... inside a rendered text
    (
        re.compile(
            r"(?i)(authorization_header|authorization|client_secret|access_token)"
            r"""(["']?\s*[:=]\s*)("[^"]*"|'[^']*')"""
        ),
        r'\1\2"' + REDACTED + '"',
    ),
    (
        re.compile(
            r"(?i)(authorization_header|authorization|client_secret|access_token)"
            r"""(["']?\s*[:=]\s*)[^"',;}\s]+"""
        ),
        r"\1\2" + REDACTED,
    ),
)
# Attributes every LogRecord has: not copied as extra fields.
_STANDARD: Final = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys() | {"message", "asctime"}
)


#: Substrings (lower case) without which a pattern cannot match: most log values (ids, URLs,
#: event types) contain none of them, and skip the regular expressions.
_TRIGGERS: Final = (
    ("bearer", "basic", "dpop", "token"),
    ("eyj",),
    ("@",),
    ("authoriz", "client_secret", "access_token"),
    ("authoriz", "client_secret", "access_token"),
)


#: Any trigger, in one scan of the lower-cased text: most values hold none and come back as
#: they are (one generator of ``in`` tests per pattern cost two thirds of formatting a line).
_ANY_TRIGGER: Final = re.compile("|".join(re.escape(t) for t in dict.fromkeys(sum(_TRIGGERS, ()))))


def redact(text: str) -> str:
    """``text`` with anything that looks like a credential replaced."""
    lower = text.lower()
    if _ANY_TRIGGER.search(lower) is None:
        return text
    for (pattern, repl), triggers in zip(_PATTERNS, _TRIGGERS, strict=True):
        if any(t in lower for t in triggers):
            text = pattern.sub(repl, text)
    return text


def _clean(name: str, value: Any) -> Any:
    if name.lower() in SECRET_FIELDS:
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(k): _clean(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean("", v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


class RedactingFilter(logging.Filter):
    """Scrubs the message (arguments applied) and the extra fields of a record in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        for name in list(vars(record)):
            if name not in _STANDARD and not name.startswith("_"):
                setattr(record, name, _clean(name, getattr(record, name)))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the extra fields, exc (if any)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_") and name not in out:
                out[name] = _clean(name, value)
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            out["exc"] = redact(record.exc_text)
        return json.dumps(out, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``asctime level logger: message`` and then ``name=value`` for each extra field."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = {
            k: _clean(k, v)
            for k, v in vars(record).items()
            if k not in _STANDARD and not k.startswith("_") and k != "message"
        }
        if extras:
            base += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return redact(base)
