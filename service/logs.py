"""Logging: one event per line, as JSON for machines or as text for people.

LOG_FORMAT=json writes objects with time, level, logger, message, pid and,
where they apply, request_id (request logs and anything logged while serving
a request) and revision (migration logs). LOG_FORMAT=text is for local runs;
auto picks text on a terminal and JSON otherwise. uvicorn's own loggers go
through the same handler; its access log is replaced by the service's request
log, which carries the request id.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [pid %(process)d] %(message)s"
_EXTRA_FIELDS = ("request_id", "revision", "method", "path", "route", "status", "duration_ms")
_OWN_LOGGERS = ("service", "uvicorn", "uvicorn.error", "alembic")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
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
        return json.dumps(event, default=str)


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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if resolve_format(log_format) == "json" else logging.Formatter(_TEXT_FORMAT)
    )
    handler.addFilter(_RequestIdFilter())
    for name in _OWN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
    logging.getLogger("service").setLevel(level)
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
