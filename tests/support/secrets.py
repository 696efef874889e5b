"""The secrets a run must never show in a log, and where they showed."""

from __future__ import annotations

import re

from tests.support.processes import OPERATOR_TOKEN, PROCESS_LOGS, PROCESS_OUTPUTS

API_KEY = re.compile(r"psk_[A-Za-z0-9_-]{43}")
# The database password of this run, once the server is known.
PASSWORDS: list[str] = []
# What pytest captured of every test phase: the in-process apps' logs and output.
CAPTURED: list[str] = []


def leaked_secrets() -> list[str]:
    """Where the logs and output of the whole run (this process's captured
    output and every process the tests started) show a database password, the
    operator token or an API key."""
    texts = {
        f"log {path}": path.read_text(errors="replace") for path in PROCESS_LOGS if path.exists()
    }
    texts.update({f"process output {n}": text for n, text in enumerate(PROCESS_OUTPUTS)})
    texts.update({f"captured test output {n}": text for n, text in enumerate(CAPTURED)})
    found = []
    for where, text in texts.items():
        if any(password in text for password in PASSWORDS):
            found.append(f"{where}: the database password")
        if OPERATOR_TOKEN in text:
            found.append(f"{where}: the operator token")
        if API_KEY.search(text):
            found.append(f"{where}: an API key")
    return found
