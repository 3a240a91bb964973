"""Where the services' log lines go: every logger (uvicorn's included) into a bounded queue,
and one writer thread that formats them (``ssf/logs.py``: JSON or text, secrets scrubbed) and
writes them to stderr, so logging never blocks the event loop, even when nobody reads stderr.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
import threading
from typing import TextIO

from ssf.logs import JsonFormatter, TextFormatter

__all__ = ["configure_logging", "dropped_records", "stop_logging"]


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


class _StartupFailure(logging.Filter):
    """Starlette hands uvicorn a failed lifespan start-up (Redis or the transmitter out of
    reach) as the text of its traceback, which uvicorn logs as one message: keep its last
    line, the reason, unless the level is debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        if (
            isinstance(msg, str)
            and msg.startswith("Traceback (most recent call last)")
            and not logging.getLogger().isEnabledFor(logging.DEBUG)
        ):
            record.msg = "start-up failed: " + msg.rstrip().splitlines()[-1]
            record.args = None
        return True


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
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
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
    startup = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _StartupFailure) for f in startup.filters):
        startup.addFilter(_StartupFailure())
