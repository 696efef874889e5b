"""The secrets a run must never show in a log, and where they showed.

Each test's processes are scanned in the process that ran the test, when the
test ends (their logs may live in a folder the test removes); what pytest
captured is scanned where the reports arrive. Both work the same whether the
run is one process or several (pytest-xdist)."""

from __future__ import annotations

import re

from tests.support.processes import OPERATOR_TOKEN, PROCESS_LOGS, PROCESS_OUTPUTS

API_KEY = re.compile(r"psk_[A-Za-z0-9_-]{43}")
# The database password of this run, once the server is known.
PASSWORDS: list[str] = []


def secrets_in(where: str, text: str) -> list[str]:
    """What of a password, the operator token or an API key `text` shows."""
    found = []
    if any(password in text for password in PASSWORDS):
        found.append(f"{where}: the database password")
    if OPERATOR_TOKEN in text:
        found.append(f"{where}: the operator token")
    if API_KEY.search(text):
        found.append(f"{where}: an API key")
    return found


def drain_process_leaks(test: str) -> list[str]:
    """Scan the logs and output of every process started since the last call
    (by `test`, and the fixtures it used), then forget them."""
    texts = {
        f"{test}: log {path}": path.read_text(errors="replace")
        for path in PROCESS_LOGS
        if path.exists()
    }
    texts.update({f"{test}: process output {n}": text for n, text in enumerate(PROCESS_OUTPUTS)})
    PROCESS_LOGS.clear()
    PROCESS_OUTPUTS.clear()
    return [leak for where, text in texts.items() for leak in secrets_in(where, text)]
