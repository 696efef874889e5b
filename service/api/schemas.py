"""The documents the API answers, described for the OpenAPI document.

Handlers build their documents as dicts from database rows and return them as
responses (`jsonapi.respond`, `jsonapi.listing`): FastAPI validating and
re-encoding a response model cost about a third of a list's throughput
(docs/benchmarks.md). The models here only describe those documents: a route
names one as its `response_model`, which FastAPI writes into /openapi.json and
never applies to a `Response` a handler returns.

They are made from the same attribute models the handlers take their attribute
names from (`attribute_names`), so a described attribute is an answered one;
members they do not name are refused by the schema (`additionalProperties:
false`), so tests/test_api_openapi.py and the fuzzing test, which check real
answers against the document, see any drift.
"""

from __future__ import annotations

import operator
import uuid
from functools import cache, reduce
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, create_model


class Described(BaseModel):
    """A documented shape: a member it does not name is drift.

    Built only when first used (`defer_build`): a worker never validates an
    answer against these, so their validators and serializers, and those of
    the response fields FastAPI makes of them, wait for /openapi.json (0.3 MiB
    of a worker's memory otherwise)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


# Any JSON object as stored (its limits are those of the request bodies).
StoredObject = Annotated[dict[str, Any], WithJsonSchema({"type": "object"})]


class JsonApiVersion(Described):
    version: Literal["1.1"]


class SelfLink(Described):
    self: str


class PageLinks(Described):
    self: str
    next: str | None = Field(description="The next page; null on the last one")


class PageSize(Described):
    size: int


class PageMeta(Described):
    page: PageSize


def attribute_names(attributes: type[BaseModel]) -> tuple[str, ...]:
    """The attributes a resource object of this model holds, in its order."""
    return tuple(attributes.model_fields)


def described(name: str, **fields: Any) -> type[BaseModel]:
    """A documented model made at run time: `fields` as pydantic's `create_model` takes them."""
    return create_model(name, __base__=Described, **fields)


def list_of(*models: type[BaseModel]) -> Any:
    """The type of a list whose items are any of `models`."""
    return list.__class_getitem__(reduce(operator.or_, models))


@cache
def _identifier(resource_type: str) -> type[BaseModel]:
    name = _model_name(resource_type) + "Identifier"
    return described(name, type=(Literal[resource_type], ...), id=(uuid.UUID, ...))


@cache
def to_one(resource_type: str) -> type[BaseModel]:
    """A to-one relationship, null when there is no related resource."""
    return described(
        _model_name(resource_type) + "ToOne", data=(_identifier(resource_type) | None, ...)
    )


@cache
def to_many(resource_type: str) -> type[BaseModel]:
    return described(
        _model_name(resource_type) + "ToMany", data=(list_of(_identifier(resource_type)), ...)
    )


def resource_object(
    name: str,
    resource_type: str,
    attributes: type[BaseModel],
    relationships: dict[str, type[BaseModel]] | None = None,
    *,
    links: bool = True,
) -> type[BaseModel]:
    """A resource object: its type, id, attributes, relationships and self link."""
    fields: dict[str, Any] = {
        "type": (Literal[resource_type], ...),
        "id": (uuid.UUID, ...),
        "attributes": (attributes, ...),
    }
    if relationships:
        # Relationship names like "api-keys" are no Python names: aliases.
        members = {
            key.replace("-", "_"): (model, Field(alias=key)) for key, model in relationships.items()
        }
        fields["relationships"] = (described(name + "Relationships", **members), ...)
    if links:
        fields["links"] = (SelfLink, ...)
    return described(name, **fields)


def single_document(resource: type[BaseModel], **members: Any) -> type[BaseModel]:
    """`{"data": <resource>, "jsonapi": ...}`, with any further top-level members."""
    return described(
        resource.__name__ + "Document",
        data=(resource, ...),
        jsonapi=(JsonApiVersion, ...),
        **members,
    )


def list_document(resource: type[BaseModel]) -> type[BaseModel]:
    """A page of resources with its links (`next` continues it) and size."""
    return described(
        resource.__name__ + "List",
        data=(list_of(resource), ...),
        links=(PageLinks, ...),
        meta=(PageMeta, ...),
        jsonapi=(JsonApiVersion, ...),
    )


def _model_name(resource_type: str) -> str:
    return "".join(part.capitalize() for part in resource_type.split("-"))
