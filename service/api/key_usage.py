"""When each API key's last-used time was last written by this process."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field


@dataclass
class KeyUsage:
    """When each key's last-used time was last written by this process.

    The time is written at most once per interval per key and process, so a
    busy key costs no write per request.
    """

    interval: float
    written: dict[uuid.UUID, float] = field(default_factory=dict)

    def due(self, key_id: uuid.UUID) -> bool:
        now = time.monotonic()
        if now - self.written.get(key_id, -self.interval) < self.interval:
            return False
        self.written[key_id] = now
        return True
