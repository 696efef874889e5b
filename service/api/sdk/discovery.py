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

The configs core registers a request (service/configs/discovery.py) in
batches of DISCOVERY_BATCH configs, each its own transaction under the
account's tree lock: a request of 1,000 chained configs holds the lock for
one batch at a time, and concurrent discoveries of the account take turns by
batch instead of waiting for (or timing out behind) a whole request. Each batch that created configs is announced as it commits;
a batch over QUOTA_CONFIGS is refused (409) and rolled back, the batches
before it stay registered (discovery only ever adds what is missing, so the
SDK's next attempt finishes it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from service.api.config_bodies import Description, ItemDefinition, Key, Name
from service.api.dependencies import Database, Member
from service.api.errors import JsonApiResponse
from service.api.jsonapi import JsonApiBody, Strict, respond
from service.api.limits import NAMES_WITHOUT_NUL, NO_NUL
from service.api.quotas import Quotas
from service.api.routers import SDK_PATH, dialect_router
from service.api.sdk.schemas import DiscoveryResult
from service.configs import discovery
from service.configs.items import oversized_items

logger = logging.getLogger("service.api.sdk.discovery")
router = dialect_router(SDK_PATH, "/configs", tags=["configs (smplkit SDK)"])
# The SDK sends batches of 50 (more only from an explicit flush of a long backlog).
MAX_DISCOVERED = 1000
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
        if self.items and (
            problem := oversized_items(
                {key: item.value for key, item in self.items.items()},
                {key: item.description for key, item in self.items.items()},
            )
        ):
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
    # The request's transaction only authenticated the caller: each batch is
    # a transaction of its own, so the account's tree lock is held for one
    # batch at a time and a concurrent discovery waits for a batch, not for
    # this whole request.
    created = await discovery.register(connection, caller.account_id, body.configs, quotas)
    if body.skipped:
        # One line a request, whatever the client sent: the answer lists each.
        first = body.skipped[0]
        logger.info(
            "discovery left out %d entries (the answer lists them); the first, entry %d: %s",
            len(body.skipped),
            first.index,
            first.detail,
        )
    return respond({"registered": created, "skipped": [vars(skipped) for skipped in body.skipped]})
