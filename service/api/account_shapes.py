"""The HTTP shapes of accounts, users, API keys and environments that more
than one door uses: the bodies that create an account and a user (the
operator's command line checks its options with them too), the environment's
key, name and colour as both dialects take them, and the /v1 resource
objects that an account's creation includes. Not a router: the routers and
the command line share it; the rules are the core's (service/accounts/)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from service.accounts.environments import COLOR_PATTERN, KEY_PATTERN
from service.accounts.keys import NewKey
from service.accounts.users import SUBJECT_LENGTH, NewUser
from service.api.jsonapi import Strict, resource
from service.api.limits import NO_NUL, UserAttributes
from service.api.schemas import Described, StoredObject, attribute_names, resource_object, to_one
from service.models import Role

USERS = "users"
API_KEYS = "api-keys"
ENVIRONMENTS = "environments"

# No "@", spaces or control characters in either part. Spelt with explicit
# ranges, not \s, which Python and the JSON Schema (ECMA) regex of the OpenAPI
# document read differently (Python counts \x1c-\x1f as spaces).
_EMAIL_PART = r"[^@\x00-\x20\x7f]+"
# 254: the longest address SMTP carries (RFC 5321's path limit).
Email = Annotated[
    str, StringConstraints(max_length=254, pattern=f"^{_EMAIL_PART}@{_EMAIL_PART}\\.{_EMAIL_PART}$")
]
Provider = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
]
Subject = Annotated[str, StringConstraints(min_length=1, max_length=SUBJECT_LENGTH, pattern=NO_NUL)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]
EnvironmentKey = Annotated[str, StringConstraints(pattern=KEY_PATTERN)]
Color = Annotated[str, StringConstraints(pattern=COLOR_PATTERN)]


class UserCreate(Strict):
    email: Email
    role: Role = Role.MEMBER
    auth_provider: Provider = "email"
    auth_subject: Subject | None = Field(
        default=None, description="Defaults to the lower-cased email."
    )
    attributes: UserAttributes = Field(default_factory=dict)

    def new_user(self) -> NewUser:
        return NewUser(
            self.email, self.role, self.auth_provider, self.auth_subject, self.attributes
        )


class AccountOwner(UserCreate):
    """The account's first user: its OWNER, whose role need not be spelled out."""

    role: Role = Role.OWNER


class AccountCreate(Strict):
    name: Name
    owner: AccountOwner


class UserView(Described):
    email: str
    role: Role
    auth_provider: str
    auth_subject: str
    attributes: StoredObject
    created_at: datetime
    updated_at: datetime


USER_ATTRIBUTES = attribute_names(UserView)
UserResource = resource_object("User", USERS, UserView)


def user_resource(row: Any) -> dict[str, Any]:
    return resource(USERS, row, USER_ATTRIBUTES)


class ApiKeyView(Described):
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it by")
    max_role: Role | None = Field(
        description="The role the key is capped at: its maker's when it was made"
    )
    last_used_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ApiKeyCreatedView(ApiKeyView):
    secret: str = Field(description="The key itself: shown in this answer only")


KEY_ATTRIBUTES = attribute_names(ApiKeyView)
_KEY_RELATIONSHIPS = {"user": to_one(USERS), "created_by": to_one(USERS)}
ApiKeyResource = resource_object("ApiKey", API_KEYS, ApiKeyView, _KEY_RELATIONSHIPS)
ApiKeyCreatedResource = resource_object(
    "ApiKeyCreated", API_KEYS, ApiKeyCreatedView, _KEY_RELATIONSHIPS
)


def key_resource(row: Any, secret: str | None = None) -> dict[str, Any]:
    document = resource(
        API_KEYS,
        row,
        KEY_ATTRIBUTES,
        {"user": (USERS, row["user_id"]), "created_by": (USERS, row["created_by_user_id"])},
    )
    document["links"] = {"self": f"/v1/api-keys/{row['id']}"}
    if secret is not None:
        document["attributes"]["secret"] = secret
    return document


def new_key_resource(key: NewKey) -> dict[str, Any]:
    """A key just issued, with its secret: the only answer that shows it."""
    return key_resource(key.row, key.secret)


class EnvironmentView(Described):
    key: str
    name: str
    color: str | None
    position: int
    created_at: datetime
    updated_at: datetime


ENVIRONMENT_ATTRIBUTES = attribute_names(EnvironmentView)
EnvironmentResource = resource_object("Environment", ENVIRONMENTS, EnvironmentView)


def environment_resource(row: Any) -> dict[str, Any]:
    return resource(ENVIRONMENTS, row, ENVIRONMENT_ATTRIBUTES)
