"""The lifespan state: the long-lived objects of a serving process.

The lifespan (service/app.py) yields it; Starlette gives each request a shallow
copy in `scope["state"]`, which `state_of` reads with its types. Handlers do
not read it themselves: they take the typed dependencies of
service/api/dependencies.py (`Database`, `Viewer`, `Operator`). Nothing is
kept on `app.state`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from alembic_lockstep import BootstrapState
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import HTTPConnection

from service.db.statement_pool import StatementPool
from service.db.statement_timeout import ReadBound
from service.observability.metrics import Metrics
from settings import Settings

if TYPE_CHECKING:
    # The API's own objects; service.api reads this module (an import cycle).
    from service.api.answer_budget import AnswerBudget
    from service.api.key_usage import KeyUsage
    from service.api.rate_limits import RateLimits
    from service.api.sdk.event_hub import EventHub


class State(BootstrapState):
    """What the lifespan shares with every request (and the bootstrap's
    readiness route, which reads `bootstrap`)."""

    # The HTTP protocol's limits come from it (http_protocol.py: uvicorn hands
    # the protocol the lifespan state of the app).
    settings: Settings
    engine: AsyncEngine
    # The driver's pool for statements that commit on their own, None when
    # they share the engine's (service/db/statement_pool.py).
    statements: StatementPool | None
    # Whether a read may run outside a transaction (service/db/statement_timeout.py).
    read_bound: ReadBound
    operator_token: str | None
    metrics: Metrics
    key_usage: KeyUsage
    rate_limits: RateLimits
    events: EventHub
    answers: AnswerBudget


def state_of(connection: HTTPConnection) -> State:
    """The lifespan state of the app serving this request."""
    return cast(State, connection.scope["state"])
