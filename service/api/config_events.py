"""The SDK's events as the account, user, key and environment routers still
import them; they live in the configs core (service/configs/events.py), which
both dialects' config routers and the event hub use directly."""

from __future__ import annotations

from service.configs.events import MANY_CHANGED as MANY_CHANGED
from service.configs.events import announce as announce
from service.configs.events import announce_revoked_keys as announce_revoked_keys
