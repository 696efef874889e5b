"""Logging: one event per line, as JSON for machines or as text for people.

LOG_FORMAT=json writes objects with time, level, logger, message, pid and,
where they apply, request_id (request logs and anything logged while serving
a request) and revision (migration logs). LOG_FORMAT=text is for local runs;
auto picks text on a terminal and JSON otherwise. uvicorn's own loggers go
through the same handler; its access log is replaced by the service's request
log, which carries the request id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [pid %(process)d] %(message)s"
_EXTRA_FIELDS = ("request_id", "revision", "method", "path", "route", "status", "duration_ms")
_OWN_LOGGERS = ("service", "alembic_lockstep", "uvicorn", "uvicorn.error", "alembic")


# asyncpg names the value it could not encode: "invalid input for query
# argument $2: 'the value' (reason)". The value may be anything a client sent.
_ARGUMENT_VALUE = re.compile(r"(invalid input for query argument \$\d+): .*\((.*)\)", re.DOTALL)
# Control characters in a text log line would let a request forge lines or
# rewrite what a terminal shows: C0, DEL and C1 (NEL, CSI among them), the line
# and paragraph separators, and the bidirectional overrides and isolates.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def safe_traceback(error: BaseException) -> str:
    """The traceback of `error` and its causes, with each exception's message
    cut to its first line and freed of statement arguments (which
    hide_parameters keeps out of SQLAlchemy's text, but not out of asyncpg's)."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return "\n".join(
        "Traceback (most recent call last):\n"
        + "".join(traceback.format_tb(exception.__traceback__))
        + f"{type(exception).__module__}.{type(exception).__qualname__}: {_safe_message(exception)}"
        for exception in reversed(chain)
    )


def _safe_message(error: BaseException) -> str:
    message = _ARGUMENT_VALUE.sub(r"\1 (\2)", str(error))
    return message.strip().splitlines()[0] if message.strip() else ""


# What an API key looks like (service/accounts/key_secrets.py: "psk_" and URL-safe base64).
_API_KEY_IN_PATH = re.compile(r"psk_[A-Za-z0-9_-]{8,}")


def masked_path(path: str) -> str:
    """The path as logged: anything shaped like an API key is masked."""
    return _API_KEY_IN_PATH.sub("psk_(masked)", path) if "psk_" in path else path


def escape_controls(text: str) -> str:
    """ "\n" as the two characters backslash and n, "\u202e" as its six, and so
    on: one event, one line, shown as it is."""
    return _CONTROL.sub(lambda found: repr(found.group())[1:-1], text)


class TextFormatter(logging.Formatter):
    """For people: the message on one line (control characters escaped), the
    id of the request it belongs to at its end (`request_id=...`), and an
    error's traceback, when there is one, on the lines after it."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        text = super().formatMessage(record)
        current = getattr(record, "request_id", None)
        return text if current is None else f"{text} request_id={escape_controls(str(current))}"

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        trace = getattr(record, "error_trace", None)
        return f"{text}\n{trace}" if trace else text


class JsonFormatter(logging.Formatter):
    """One JSON object a line, encoded by orjson: a request's event in about a
    third of the standard library's time (docs/benchmarks/api.notes.md). A line
    stays ASCII, whatever the encoding of the stream it is written to: one that
    is not (a path with non-ASCII characters) and what orjson refuses (a lone
    surrogate in a logged value, an integer beyond 64 bits) are encoded by the
    standard library with its escapes, as every line was before."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for name in _EXTRA_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                event[name] = value
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        elif (trace := getattr(record, "error_trace", None)) is not None:
            event["exception"] = trace
        try:
            line = orjson.dumps(event, default=str, option=orjson.OPT_UTC_Z).decode()
        except orjson.JSONEncodeError:
            pass
        else:
            if line.isascii():
                return line
        event["time"] = event["time"].isoformat().replace("+00:00", "Z")
        return json.dumps(event, default=str, separators=(",", ":"))


# The request log's lines are written in batches (`RequestLineBatches`): at
# most this long after their request, or once this many characters wait.
BATCH_SECONDS = 0.02
BATCH_CHARACTERS = 32 * 1024
REQUEST_LOGGER = "service.requests"


class RequestLineBatches(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes the request log's lines in batches: under
    load a point read's line cost as much again in its write to the stream as
    in its making (docs/benchmarks/api.notes.md). A batch is written
    BATCH_SECONDS after its first line at most, once it holds
    BATCH_CHARACTERS, before any other line (so the order of lines holds), and
    at exit (the logging module's shutdown flushes every handler). Any other
    line, and a request's line where no event loop runs, is written at once.
    A worker killed outright (SIGKILL) loses the lines of its last
    BATCH_SECONDS."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._waiting: list[str] = []
        self._characters = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        self._waiting.append(line)
        self._characters += len(line)
        if record.name == REQUEST_LOGGER and self._characters < BATCH_CHARACTERS:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                pass
            else:
                # A batch waits on the running loop; one left on a loop that
                # ran before (and may be closed) is written by the next line.
                if self._timer is None or self._timer_loop is not loop:
                    self._timer = loop.call_later(BATCH_SECONDS, self.flush)
                    self._timer_loop = loop
                return
        self._write(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write(None)

    def _write(self, record: logging.LogRecord | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_loop = None
        if not self._waiting:
            return
        text = self.terminator.join(self._waiting) + self.terminator
        count = len(self._waiting)
        self._waiting.clear()
        self._characters = 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(
                record or logging.makeLogRecord({"msg": "%d log lines", "args": (count,)})
            )


class _RequestIdFilter(logging.Filter):
    """Adds the id of the request being served, if any, to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        return True


def resolve_format(log_format: str) -> str:
    if log_format == "auto":
        return "text" if sys.stderr.isatty() else "json"
    return log_format


def configure_logging(level: str, log_format: str = "text") -> None:
    """Route the service's, uvicorn's and Alembic's loggers to one stderr handler."""
    # No format shows a record's thread or process name: not gathered for each
    # record (the logging module's own switches), a few µs of every request's log.
    logging.logThreads = False
    logging.logMultiprocessing = False
    for name in _OWN_LOGGERS:
        for previous in logging.getLogger(name).handlers:
            previous.flush()
    handler = RequestLineBatches(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if resolve_format(log_format) == "json" else TextFormatter(_TEXT_FORMAT)
    )
    handler.addFilter(_RequestIdFilter())
    for name in _OWN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
    logging.getLogger("service").setLevel(level)
    logging.getLogger("alembic_lockstep").setLevel(level)
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False
    access.disabled = True


def json_events(text: str) -> list[dict[str, object]]:
    """The JSON events in a log's text (LOG_FORMAT=json), other lines skipped."""
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return found
