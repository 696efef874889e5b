"""Discovery: the configs and items an SDK's code declares, registered in bulk.

`POST /api/v1/configs/bulk` creates each declared config that does not exist
yet, unmanaged (`managed` false), with its declared name, description, parent
and items, and never changes one that exists. What the SDK declares is
inferred from its code's defaults, so a declaration that breaks a rule is
adapted rather than refused (one bad declaration would silence a whole batch):
a default that does not match its declared type makes the item JSON; an item
an ancestor declares with another type takes the ancestor's type when the
default fits it, and is left out otherwise; a parent that is neither stored
nor declared in the batch, or too deep, is left out. Parents declared in the
same batch are created first.

A request is registered in batches of DISCOVERY_BATCH configs, each its own
transaction under the account's tree lock: a request of 1,000 chained configs
holds the lock for one batch at a time, and concurrent discoveries of the
account take turns by batch instead of waiting for (or timing out behind) a
whole request. Each batch that created configs is announced as it commits;
a batch over QUOTA_CONFIGS is refused (409) and rolled back, the batches
before it stay registered (discovery only ever adds what is missing, so the
SDK's next attempt finishes it).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import (
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from service.api.config_chains import ancestors, types_along
from service.api.config_events import MANY_CHANGED, announce
from service.api.configs import Description, Key, Name, lock_tree
from service.api.dependencies import Database, Member
from service.api.errors import JsonApiResponse
from service.api.item_types import ItemType, definitions_of, matches
from service.api.json_body import JsonApiRoute
from service.api.jsonapi import JsonApiBody, Strict, respond
from service.api.limits import (
    MAX_CHAIN_DEPTH,
    NAMES_WITHOUT_NUL,
    NO_NUL,
)
from service.api.quotas import Quotas
from service.api.sdk.configs import ItemDefinition, oversized_items
from service.api.sdk.schemas import DiscoveryResult
from service.models import Config, table
from service.quotas import Kind

logger = logging.getLogger("service.api.sdk.discovery")
router = APIRouter(prefix="/configs", tags=["configs (smplkit SDK)"], route_class=JsonApiRoute)
configs = table(Config)
# The SDK sends batches of 50 (more only from an explicit flush of a long backlog).
MAX_DISCOVERED = 1000
# Configs registered per transaction: the account's tree lock is held for one
# batch (about 100 round trips), never for a whole request of MAX_DISCOVERED.
DISCOVERY_BATCH = 50
Context = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]


class DiscoveredConfig(Strict):
    id: Key
    name: Name | None = None
    description: Description | None = None
    parent: Key | None = None
    items: dict[str, ItemDefinition] | None = Field(
        default=None, json_schema_extra=NAMES_WITHOUT_NUL
    )
    service: Context | None = None
    environment: Context | None = None

    @model_validator(mode="after")
    def _items_within_limits(self) -> DiscoveredConfig:
        if self.items and (problem := oversized_items(self.items)):
            raise ValueError(problem)
        return self


_ENTRY = TypeAdapter(DiscoveredConfig)


@dataclass(frozen=True)
class Skipped:
    index: int
    detail: str


class Discovery(Strict):
    """A batch of discovered configs. An entry that is not a valid config is
    left out (and answered in `skipped`), not the whole batch: one odd key in
    an application must not keep the SDK from registering the others."""

    configs: Annotated[list[DiscoveredConfig], Field(max_length=MAX_DISCOVERED)]
    _skipped: list[Skipped] = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _leave_out_invalid_entries(
        cls, data: Any, handler: ModelWrapValidatorHandler[Discovery]
    ) -> Discovery:
        entries = data.get("configs") if isinstance(data, dict) else None
        if not isinstance(entries, list) or len(entries) > MAX_DISCOVERED:
            return handler(data)
        kept, skipped = [], []
        for index, entry in enumerate(entries):
            try:
                _ENTRY.validate_python(entry)
            except ValidationError as error:
                skipped.append(Skipped(index, _first_problem(error)))
            else:
                kept.append(entry)
        discovery = handler({**data, "configs": kept})
        discovery._skipped = skipped
        return discovery

    @property
    def skipped(self) -> list[Skipped]:
        return self._skipped


def _first_problem(error: ValidationError) -> str:
    problem = error.errors(include_url=False)[0]
    where = "/".join(str(part) for part in problem["loc"])
    message = str(problem["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def display_name(key: str) -> str:
    """The SDK's default name for a key (`smplkit/_helpers.py`)."""
    return key.replace("-", " ").replace("_", " ").title()


@router.post(
    "/bulk",
    response_class=JsonApiResponse,
    response_model=DiscoveryResult,
    summary="Register configs an SDK discovered: creates the missing ones, unmanaged (MEMBER)",
)
async def discover(
    body: Annotated[Discovery, JsonApiBody],
    caller: Member,
    connection: Database,
    quotas: Quotas,
) -> JsonApiResponse:
    declared: dict[str, tuple[int, DiscoveredConfig]] = {}
    for position, entry in enumerate(body.configs):
        declared.setdefault(entry.id, (position, entry))
    ordered = _parents_first(declared)
    # The request's transaction only authenticated the caller: each batch is
    # a transaction of its own, so the account's tree lock is held for one
    # batch at a time and a concurrent discovery waits for a batch, not for
    # this whole request.
    await connection.commit()
    created = 0
    for start in range(0, len(ordered), DISCOVERY_BATCH):
        batch = ordered[start : start + DISCOVERY_BATCH]
        created_now = await _register(connection, caller.account_id, batch)
        if created_now:
            await quotas.hold(connection, caller.account_id, Kind.CONFIGS)
            # One refetch per client and batch rather than a GET per new config.
            await announce(connection, caller.account_id, MANY_CHANGED)
        await connection.commit()
        created += created_now
    for skipped in body.skipped:
        logger.info("discovery left out entry %d: %s", skipped.index, skipped.detail)
    return respond({"registered": created, "skipped": [vars(skipped) for skipped in body.skipped]})


def _parents_first(
    declared: dict[str, tuple[int, DiscoveredConfig]],
) -> list[tuple[int, DiscoveredConfig]]:
    """The entries, each after the parent it names when that is declared too
    (by depth within the batch; a cycle is cut where it is found)."""
    depths: dict[str, int] = {}
    for key in declared:
        path: list[str] = []
        while key in declared and key not in depths and key not in path:
            path.append(key)
            key = declared[key][1].parent or ""
        depth = depths.get(key, -1)
        for step in reversed(path):
            depth += 1
            depths[step] = depth
    return sorted(declared.values(), key=lambda item: (depths[item[1].id], item[0]))


async def _register(
    connection: AsyncConnection, account_id: uuid.UUID, batch: list[tuple[int, DiscoveredConfig]]
) -> int:
    """Create the batch's missing configs under the account's tree lock; how
    many were created. Parents are read again in each batch: one stored by
    an earlier batch may have been deleted since."""
    await lock_tree(connection, account_id)
    ids = await _stored_ids(connection, account_id, _named_keys(batch))
    created = 0
    for position, entry in batch:
        if entry.id in ids:
            continue
        parent_id = ids.get(entry.parent) if entry.parent else None
        new_id = await _create(connection, account_id, position, entry, parent_id)
        if new_id is None:
            ids.update(await _stored_ids(connection, account_id, {entry.id}))
        else:
            ids[entry.id] = new_id
            created += 1
    return created


def _named_keys(entries: Iterable[tuple[int, DiscoveredConfig]]) -> set[str]:
    keys: set[str] = set()
    for _, entry in entries:
        keys.add(entry.id)
        if entry.parent:
            keys.add(entry.parent)
    return keys


async def _stored_ids(
    connection: AsyncConnection, account_id: uuid.UUID, keys: set[str]
) -> dict[str, uuid.UUID]:
    found = await connection.execute(
        select(configs.c.key, configs.c.id).where(
            configs.c.account_id == account_id, configs.c.key.in_(sorted(keys))
        )
    )
    return {row.key: row.id for row in found}


async def _create(
    connection: AsyncConnection,
    account_id: uuid.UUID,
    position: int,
    entry: DiscoveredConfig,
    parent_id: uuid.UUID | None,
) -> uuid.UUID | None:
    """The new config's id; None when another request created it meanwhile."""
    chain = await ancestors(connection, account_id, parent_id) if parent_id else []
    if len(chain) >= MAX_CHAIN_DEPTH:
        parent_id, chain = None, []
    inherited = types_along(chain)
    values, types, descriptions = _adapted_items(entry.items or {}, inherited)
    statement = (
        insert(configs)
        .values(
            account_id=account_id,
            key=entry.id,
            name=entry.name or display_name(entry.id),
            description=entry.description,
            parent_id=parent_id,
            items=values,
            item_definitions=definitions_of(types, descriptions),
            environments={},
            managed=False,
        )
        .on_conflict_do_nothing(constraint="configs_account_id_key_key")
        .returning(configs.c.id)
    )
    new_id: uuid.UUID | None = await connection.scalar(statement)
    return new_id


def _adapted_items(
    items: dict[str, ItemDefinition], inherited: dict[str, ItemType]
) -> tuple[dict[str, Any], dict[str, ItemType], dict[str, str | None]]:
    """Values, types and descriptions of the declared items, adapted to the rules."""
    values: dict[str, Any] = {}
    types: dict[str, ItemType] = {}
    descriptions: dict[str, str | None] = {}
    for key, item in items.items():
        item_type = inherited.get(key) or (
            item.type if matches(item.type, item.value) else ItemType.JSON
        )
        if not matches(item_type, item.value):
            continue
        values[key], types[key], descriptions[key] = item.value, item_type, item.description
    return values, types, descriptions
