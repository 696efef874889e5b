"""Measurements a test reports (not asserts): printed at the end of the run and,
with TEST_REPORT_DIR set, written there as JSON, one file per report."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# Every report of the run, where the test reports arrive (tests/conftest.py).
REPORTS: dict[str, dict[str, Any]] = {}
# The reports made since the running test began, in the process running it.
_PENDING: dict[str, dict[str, Any]] = {}


def report(name: str, values: dict[str, Any]) -> None:
    _PENDING[name] = values
    folder = os.environ.get("TEST_REPORT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{name}.json").write_text(json.dumps(values, indent=2) + "\n")


def drain_reports() -> dict[str, dict[str, Any]]:
    """The reports made since the last call, forgotten here (they travel with
    the test's report, to the process that prints the run's summary)."""
    pending = dict(_PENDING)
    _PENDING.clear()
    return pending
