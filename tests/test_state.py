"""One typed path from the lifespan to the handlers: the lifespan yields the
whole `State`, nothing is kept on `app.state`, and no module reaches the state
by an attribute name."""

from __future__ import annotations

import ast

import httpx
from alembic_lockstep import Bootstrap
from asgi_lifespan import LifespanManager
from sqlalchemy.engine import URL

from service.app import create_app
from service.state import State
from tests.support.configs import settings_for
from tests.support.processes import OPERATOR, OPERATOR_TOKEN, PROJECT_ROOT
from tests.support.readiness import wait_for_phase


def test_no_module_of_the_service_reads_a_state_by_attribute() -> None:
    found = []
    for path in sorted((PROJECT_ROOT / "service").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        found += [
            f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr == "state"
        ]
    assert found == []


async def test_the_lifespan_yields_every_field_of_the_state(migrated_database: URL) -> None:
    app = create_app(settings_for(migrated_database))
    async with app.router.lifespan_context(app) as state:
        assert state is not None
        assert set(state) == set(State.__required_keys__)
        assert isinstance(state["bootstrap"], Bootstrap)
        assert state["operator_token"] == OPERATOR_TOKEN


async def test_handlers_serve_from_the_lifespan_state_alone(migrated_database: URL) -> None:
    app = create_app(settings_for(migrated_database))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            await wait_for_phase(client, "ready")
            # The operator token, the metrics, the migration and the database
            # all come from the lifespan state: app.state holds nothing.
            assert (await client.get("/metrics", headers=OPERATOR)).status_code == 200
            assert (await client.get("/metrics")).status_code == 401
            assert (await client.get("/v1/service")).status_code == 401
    assert vars(app.state)["_state"] == {}
