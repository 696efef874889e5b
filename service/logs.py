"""Logging set-up for the service's own loggers (uvicorn configures its own)."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s %(levelname)s %(name)s [pid %(process)d] %(message)s"


def configure_logging(level: str) -> None:
    """Send the `service` loggers to stderr once per process, at the given level."""
    service_logger = logging.getLogger("service")
    service_logger.setLevel(level)
    if not any(getattr(handler, "_service", False) for handler in service_logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._service = True  # type: ignore[attr-defined]
        service_logger.addHandler(handler)
        service_logger.propagate = False
