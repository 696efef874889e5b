"""Flags as a JSON:API resource under /v1, and their evaluation for clients
that are not the smplkit SDK: `POST /v1/flags/{id}/evaluate` answers the
value the SDK would compute for an environment and contexts, with the rule
that matched (service/flags/evaluation.py, the SDK's own JSON Logic library).

The rules and the rows are the core's (service/flags/); this module parses,
authorises, calls it and shapes the documents.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Request, Response
from pydantic import Field, StringConstraints

from service.api.dependencies import Database, Member, Viewer, reader_of, reads_by_key
from service.api.errors import JsonApiResponse, UnprocessableContent
from service.api.flag_bodies import (
    AllowedValue,
    Description,
    EnvironmentKey,
    EnvironmentSettings,
    FlagAttributes,
    Key,
    Name,
    TypeName,
)
from service.api.jsonapi import (
    Document,
    JsonApiBody,
    PageQuery,
    Strict,
    changed_attributes,
    expect_type,
    listing,
    resource,
    respond,
    single,
)
from service.api.limits import (
    MAX_USER_ATTRIBUTES_BYTES,
    NO_NUL,
    JsonObject,
    JsonValue,
    bounded_json,
)
from service.api.routers import V1_PATH, dialect_router
from service.api.schemas import Described, list_document, resource_object, single_document
from service.flags import store
from service.flags.evaluation import EvaluationContext, evaluate, evaluation_data
from service.flags.logic import numeric_text_problem
from service.storage import read_in_account

router = dialect_router(V1_PATH, "/flags", tags=["flags"])
TYPE = "flags"
EVALUATION = "flag-evaluations"
MAX_CONTEXTS = 20
# A rule's array operations walk a context's arrays: kept short, an
# evaluation stays a bounded amount of work (service/flags/logic.py).
MAX_CONTEXT_ARRAY = 100
ATTRIBUTES = ("key", "name", "description", "type", "default", "values", "environments")
ContextType = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NO_NUL)]
ContextKey = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=NO_NUL)]


class FlagCreate(FlagAttributes):
    key: Key


class FlagUpdate(Strict):
    name: Name | None = None
    description: Description | None = None
    default: JsonValue = None
    values: Annotated[list[AllowedValue], Field(max_length=100)] | None = None
    environments: (
        Annotated[dict[EnvironmentKey, EnvironmentSettings], Field(max_length=100)] | None
    ) = None
    managed: bool | None = None
    # Sent only to be refused when it differs: a flag's type never changes.
    type: TypeName | None = None


class EvaluatedContext(Strict):
    type: ContextType
    key: ContextKey
    attributes: JsonObject | None = None


class EvaluationRequest(Strict):
    # null, or an environment the flag does not configure: the flag's default.
    environment: EnvironmentKey | None = None
    contexts: list[EvaluatedContext] = Field(default_factory=list, max_length=MAX_CONTEXTS)


def flag_resource(row: Any) -> dict[str, Any]:
    return resource(
        TYPE,
        {**row, "values": row["allowed_values"]},
        (*ATTRIBUTES, "managed", "created_at", "updated_at"),
    )


class FlagView(Described):
    key: str
    name: str
    description: str | None
    type: Literal["BOOLEAN", "STRING", "NUMERIC", "JSON"]
    default: Any
    values: list[dict[str, Any]] | None = Field(description="null: unconstrained")
    environments: dict[str, Any] = Field(
        description="By environment key: {enabled, default, rules: [{logic, value, description}]}"
    )
    managed: bool
    created_at: datetime
    updated_at: datetime


class EvaluationView(Described):
    value: Any = Field(description="What the SDK computes for this environment and contexts")
    reason: Literal["RULE_MATCH", "ENVIRONMENT_DEFAULT", "DISABLED", "FLAG_DEFAULT"]
    rule: int | None = Field(description="The matching rule's position in the environment's rules")


FlagResource = resource_object("Flag", TYPE, FlagView)
FlagDocument = single_document(FlagResource)
FlagList = list_document(FlagResource)
# Its id is the flag's.
EvaluationDocument = single_document(
    resource_object("FlagEvaluation", EVALUATION, EvaluationView, links=False)
)


def _longest_array(value: Any) -> int:
    longest = 0
    pending = [value]
    while pending:
        current = pending.pop()
        if isinstance(current, list):
            longest = max(longest, len(current))
            pending.extend(current)
        elif isinstance(current, dict):
            pending.extend(current.values())
    return longest


@router.get("", response_class=JsonApiResponse, response_model=FlagList, summary="List flags")
@reads_by_key
async def list_flags(request: Request, page: PageQuery) -> Response:
    reader = reader_of(request)
    found = await store.keyset_page(
        reader.connection, reader, page.size, page.after, page.descending
    )
    return listing(request, page, found, flag_resource)


@router.get(
    "/{flag_id}", response_class=JsonApiResponse, response_model=FlagDocument, summary="Get a flag"
)
@reads_by_key
async def get_flag(flag_id: uuid.UUID, request: Request) -> JsonApiResponse:
    reader = reader_of(request)
    row = await read_in_account(reader.connection, reader, store.flags, flag_id)
    return respond(single(flag_resource(row)))


@router.post(
    "",
    status_code=201,
    response_class=JsonApiResponse,
    response_model=FlagDocument,
    summary="Create a flag (MEMBER)",
)
async def create_flag(
    body: Annotated[Document[FlagCreate], JsonApiBody], caller: Member, connection: Database
) -> JsonApiResponse:
    expect_type(body, TYPE)
    attributes = body.data.attributes
    row = await store.create(connection, caller.account_id, attributes.key, attributes.write())
    return respond(single(flag_resource(row)), 201, {"Location": f"/v1/flags/{row['id']}"})


@router.patch(
    "/{flag_id}",
    response_class=JsonApiResponse,
    response_model=FlagDocument,
    summary="Update a flag; its type never changes (MEMBER)",
)
async def update_flag(
    flag_id: uuid.UUID,
    body: Annotated[Document[FlagUpdate], JsonApiBody],
    caller: Member,
    connection: Database,
) -> JsonApiResponse:
    expect_type(body, TYPE, flag_id)
    changes = changed_attributes(body, not_null=("name", "default", "environments", "type"))
    key = await store.key_of(connection, caller.account_id, flag_id)
    current = store.attributes(await store.get(connection, caller.account_id, key, lock=True))
    merged = {
        name: current[name]
        for name in ("name", "description", "type", "default", "values", "environments")
    }
    merged.update(changes)
    try:
        attributes = FlagAttributes.model_validate(merged)
    except ValueError as error:
        raise UnprocessableContent(str(error), pointer="/data/attributes") from None
    row = await store.replace(connection, caller.account_id, key, attributes.write())
    return respond(single(flag_resource(row)))


@router.delete("/{flag_id}", status_code=204, summary="Delete a flag (MEMBER)")
async def delete_flag(flag_id: uuid.UUID, caller: Member, connection: Database) -> Response:
    key = await store.key_of(connection, caller.account_id, flag_id)
    await store.remove(connection, caller.account_id, key)
    return Response(status_code=204)


@router.post(
    "/{flag_id}/evaluate",
    response_class=JsonApiResponse,
    response_model=EvaluationDocument,
    summary="The flag's value for an environment and contexts, as the SDK computes it",
)
async def evaluate_flag(
    flag_id: uuid.UUID,
    body: Annotated[Document[EvaluationRequest], JsonApiBody],
    caller: Viewer,
    connection: Database,
) -> JsonApiResponse:
    expect_type(body, EVALUATION)
    asked = body.data.attributes
    for position, context in enumerate(asked.contexts):
        where = f"/data/attributes/contexts/{position}/attributes"
        try:
            bounded_json(MAX_USER_ATTRIBUTES_BYTES)(context.attributes or {})
        except ValueError as error:
            raise UnprocessableContent(f"the attributes {error}", pointer=where) from None
        if _longest_array(context.attributes or {}) > MAX_CONTEXT_ARRAY:
            raise UnprocessableContent(
                f"a context's arrays hold at most {MAX_CONTEXT_ARRAY} items", pointer=where
            )
        if (problem := numeric_text_problem(context.attributes or {})) is not None:
            raise UnprocessableContent(f"the attributes {problem}", pointer=where)
        if (problem := numeric_text_problem(context.key)) is not None:
            raise UnprocessableContent(
                f"the key {problem}", pointer=f"/data/attributes/contexts/{position}/key"
            )
    key = await store.key_of(connection, caller.account_id, flag_id)
    row = await store.get(connection, caller.account_id, key)
    contexts = [EvaluationContext(c.type, c.key, c.attributes or {}) for c in asked.contexts]
    result = evaluate(
        row["default"], row["environments"], asked.environment, evaluation_data(contexts)
    )
    attributes = {"value": result.value, "reason": result.reason.value, "rule": result.rule}
    return respond(single({"type": EVALUATION, "id": str(flag_id), "attributes": attributes}))
