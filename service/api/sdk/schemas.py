"""The documents the SDK's dialect answers, described for the OpenAPI
document (as service/api/schemas.py does for /v1): the shapes of the SDK's
generated models (`smplkit/_generated/config/models/`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from service.api.schemas import Described, StoredObject
from service.configs.items import ItemType


class TypedItem(Described):
    value: Any = Field(description="The raw value; null: typed but unset")
    type: ItemType
    description: str | None


class SdkConfigView(Described):
    name: str
    description: str | None
    parent: str | None = Field(description="The parent config's key")
    items: dict[str, TypedItem]
    environments: dict[str, StoredObject] = Field(
        description="Overrides by environment key: raw values by item key"
    )
    managed: bool = Field(description="False for a config only discovered by an SDK")
    created_at: datetime
    updated_at: datetime


class SdkConfigResource(Described):
    type: Literal["config"]
    id: str = Field(description="The config's key")
    attributes: SdkConfigView


class SdkConfigDocument(Described):
    data: SdkConfigResource


class Pagination(Described):
    page: int
    size: int
    total: int | None = Field(default=None, description="With meta[total]=true")
    total_pages: int | None = Field(default=None, description="With meta[total]=true")


class ListMeta(Described):
    pagination: Pagination


class SdkConfigList(Described):
    data: list[SdkConfigResource]
    meta: ListMeta


class Registered(Described):
    registered: int = Field(description="The configs this request created")


class SkippedEntry(Described):
    index: int = Field(description="The entry's position in the batch, from 0")
    detail: str = Field(description="Why it is not a valid config")


class DiscoveryResult(Registered):
    skipped: list[SkippedEntry] = Field(
        description="Entries left out: not valid configs (the others are registered)"
    )


class SdkEnvironmentView(Described):
    name: str
    color: str | None = Field(description="#rgb, #rrggbb or #rrggbbaa, lower case")
    classification: Literal["STANDARD", "AD_HOC"]
    managed: bool
    created_at: datetime
    updated_at: datetime


class SdkEnvironmentResource(Described):
    type: Literal["environment"]
    id: str = Field(description="The environment's key")
    attributes: SdkEnvironmentView


class SdkEnvironmentDocument(Described):
    data: SdkEnvironmentResource


class SdkEnvironmentList(Described):
    data: list[SdkEnvironmentResource]
    meta: ListMeta


class SdkAccountView(Described):
    name: str
    created_at: datetime
    updated_at: datetime


class SdkAccountResource(Described):
    type: Literal["account"]
    id: str
    attributes: SdkAccountView


class SdkAccountDocument(Described):
    data: SdkAccountResource


class SdkFlagRule(Described):
    logic: dict[str, Any] = Field(description="JSON Logic over the contexts; {} never matches")
    value: Any = Field(description="Served when the logic is truthy")
    description: str | None


class SdkFlagEnvironment(Described):
    enabled: bool
    default: Any = Field(description="null: the flag's default")
    rules: list[SdkFlagRule] = Field(description="The first whose logic is truthy serves")


class SdkFlagValue(Described):
    name: str
    value: Any


class SdkFlagView(Described):
    name: str
    description: str | None
    type: Literal["BOOLEAN", "STRING", "NUMERIC", "JSON"]
    default: Any
    values: list[SdkFlagValue] | None = Field(description="null: unconstrained")
    environments: dict[str, SdkFlagEnvironment]
    managed: bool = Field(description="False for a flag only discovered by an SDK")
    created_at: datetime
    updated_at: datetime


class SdkFlagResource(Described):
    type: Literal["flag"]
    id: str = Field(description="The flag's key")
    attributes: SdkFlagView


class SdkFlagDocument(Described):
    data: SdkFlagResource


class SdkFlagList(Described):
    data: list[SdkFlagResource]
    meta: ListMeta


class SdkFlagSourceView(Described):
    flag: str = Field(description="The flag's key")
    service: str
    environment: str
    declared_type: str
    declared_default: Any
    first_observed: datetime
    last_seen: datetime
    created_at: datetime
    updated_at: datetime


class SdkFlagSourceResource(Described):
    type: Literal["flag_source"]
    id: str
    attributes: SdkFlagSourceView


class SdkFlagSourceList(Described):
    data: list[SdkFlagSourceResource]
    meta: ListMeta


class MetricsAccepted(Described):
    accepted: int = Field(description="The metrics counted")
