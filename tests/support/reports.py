"""Measurements a test reports (not asserts): printed at the end of the run and,
with TEST_REPORT_DIR set, written there as JSON, one file per report."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPORTS: dict[str, dict[str, Any]] = {}


def report(name: str, values: dict[str, Any]) -> None:
    REPORTS[name] = values
    folder = os.environ.get("TEST_REPORT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{name}.json").write_text(json.dumps(values, indent=2) + "\n")
