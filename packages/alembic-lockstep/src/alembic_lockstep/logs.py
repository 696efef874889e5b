"""The bootstrap's progress, visible without any logging set-up.

Under plain `uvicorn app:app` nothing configures this package's loggers: Python
would print only warnings and errors, bare. So, when the bootstrap starts and
neither the `alembic_lockstep` logger nor the root logger has a handler (the
application set up no logging), the package gives its logger one on stderr at
INFO: waiting for the lock and its holder, each revision with its time, ready,
failed with the cause. `MigrationConfig.log_format` picks text or JSON, or
`off`. An application that configured logging (a handler on the root logger or
on `alembic_lockstep`) keeps its own format: nothing is added.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from alembic_lockstep.config import LogFormat

LOGGER = "alembic_lockstep"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [pid %(process)d] %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, pid, and the
    revision where a line is about one."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        revision = getattr(record, "revision", None)
        if revision is not None:
            event["revision"] = revision
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event, default=str)


class _DefaultHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler this module adds, recognisable so that it is added once."""


def make_visible(log_format: LogFormat) -> None:
    """Give the package's logger a stderr handler at INFO, unless the
    application configured logging (module docstring)."""
    if log_format is LogFormat.OFF:
        return
    logger = logging.getLogger(LOGGER)
    if logger.handlers or not logger.propagate or logging.getLogger().handlers:
        return
    handler = _DefaultHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format is LogFormat.JSON else logging.Formatter(TEXT_FORMAT)
    )
    logger.addHandler(handler)
    # Its lines are printed here; the root logger (without handlers) would
    # print warnings a second time through Python's last resort.
    logger.propagate = False
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
