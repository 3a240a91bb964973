"""Structured logs: one JSON object per line, with secrets scrubbed.

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

import atexit
import json
import logging
import logging.handlers
import queue
import re
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, Final, TextIO

__all__ = [
    "JsonFormatter",
    "RedactingFilter",
    "configure_logging",
    "dropped_records",
    "redact",
    "stop_logging",
]

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


class _TextFormatter(logging.Formatter):
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


class _QueueHandler(logging.handlers.QueueHandler):
    """Hands records to the writer thread without ever blocking the caller: a full queue (a
    stalled stderr reader) drops the record and counts it in ``dropped``."""

    dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # In place, not on a copy as the standard handler does (a third of the caller's cost):
        # this handler sits on the root logger, the last to see a record, and what it changes
        # (arguments applied, traceback rendered) reads the same to any handler after it.
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = record.getMessage()
        record.args = None
        record.exc_info = None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            type(self).dropped += 1


class _Writer:
    """The writer thread: wakes every ``interval`` and writes all queued records at once (one
    write and one flush). A thread blocked on ``queue.get`` would be woken, and take the GIL
    from the event loop, once per record; at a few thousand SETs a second, each logged, that
    hand-over cost more than the rest of logging together."""

    def __init__(
        self, q: queue.Queue[logging.LogRecord], handler: logging.StreamHandler[TextIO], interval: float
    ) -> None:
        self.queue, self.handler, self.interval = q, handler, interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ssf-log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write out what is queued, then end the thread (waits a little for a stalled stream)."""
        self._stopping.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            while self._drain():
                pass
        while self._drain():
            pass

    def _drain(self) -> bool:
        """Write up to one queue's worth of records; True when that many were waiting. (Records
        arriving faster than they are formatted still get written in bounded pieces; the queue,
        not a list here, bounds the memory.)"""
        lines: list[str] = []
        batch = self.queue.maxsize or 10_000
        taken = 0
        for _ in range(batch):
            try:
                record = self.queue.get_nowait()
            except queue.Empty:
                break
            taken += 1
            try:
                lines.append(self.handler.format(record))
            except Exception:  # a record that cannot be formatted must not stop the writer
                self.handler.handleError(record)
        if lines:
            stream = self.handler.stream
            try:
                stream.write("\n".join(lines) + "\n")
                stream.flush()
            except (OSError, ValueError):  # stderr closed or gone: nothing more to do with these
                pass
        return taken == batch


_listener: _Writer | None = None


def dropped_records() -> int:
    """Records dropped so far because the writer could not keep up (a stalled stderr)."""
    return _QueueHandler.dropped


def stop_logging() -> None:
    """Write out what is queued and stop the writer thread (also run at exit)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


atexit.register(stop_logging)


def configure_logging(
    fmt: str = "json",
    level: str | int = "INFO",
    stream: TextIO | None = None,
    queue_size: int = 10_000,
    interval: float = 0.02,
) -> None:
    """Route every logger (uvicorn's included) to ``stream`` (stderr), through a bounded queue
    and a writer thread: logging never blocks the event loop, even when nobody reads stderr."""
    global _listener
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif fmt == "text":
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        raise ValueError("log format must be json or text")
    stop_logging()
    # Neither format shows the caller's file and line, process or thread: do not look them up
    # for every record (the stack walk alone costs a fifth of a record on the caller's thread).
    # ``_srcfile = None`` is the switch the logging module's source documents for this.
    logging._srcfile = None
    logging.logProcesses = logging.logMultiprocessing = logging.logThreads = False
    q: queue.Queue[logging.LogRecord] = queue.Queue(queue_size)
    # No filter here: the formatters redact on the writer thread, off the caller's path.
    front = _QueueHandler(q)
    _listener = _Writer(q, handler, interval)
    _listener.start()
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(front)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
