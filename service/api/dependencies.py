"""Request dependencies: the readiness gate, the transaction, the caller and its
role, then the request itself.

Order matters and is the same on every route: the schema must be ready, the
caller authenticated (and rate limited), its role checked; only then are the
query parameters and the body looked at (`checked_request`), so an anonymous
caller learns nothing about the API from its answers.

Writes (and the reads not yet made one statement) take `Database`, one
transaction, and a role (`Viewer` ... `Owner`), which looks the caller up
first. The hot reads are marked `reads_by_key`: no transaction, and the
caller's check rides in the read's own statement (service/accounts/callers.py),
admitted before the core looks at what it read. FastAPI validates a route's own
parameters before its handler runs, so a read refused there is admitted by
a lookup of its own first (`PENDING_ADMISSION`, service/api/errors.py): the
order above holds for both.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote_plus, unquote_to_bytes

from alembic_lockstep import Phase, describe_error, sqlstate
from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.routing import BaseRoute

from service.accounts import key_secrets as keys
from service.accounts.callers import CALLER
from service.accounts.keys import capped_role
from service.api.account_shares import SCOPE_ACCOUNT
from service.api.errors import (
    DEFERRED_PROBLEM,
    PENDING_ADMISSION,
    ApiError,
    BadRequest,
    Forbidden,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
)
from service.api.json_body import body_problem, close_when_handled, text_problem
from service.api.rate_limits import retry_after
from service.db.driver import Autocommit, Connection, DriverStatement, Row, autocommit
from service.db.errors import is_transient
from service.db.statement_pool import StatementPool
from service.models import Role
from service.problems import Problem
from service.state import state_of

logger = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_AFTER_SECONDS = "5"

# Every write runs the first, straight on the driver (service/db/driver.py);
# a read asks for its caller in its own statement (service/accounts/callers.py).
_CALLER = DriverStatement(CALLER.format(digest="$1"))
_TOUCH_KEY = DriverStatement("UPDATE api_keys SET last_used_at = now() WHERE id = $1")
# The operator's requests share one bucket of the per-key limit.
_OPERATOR = "operator"


async def require_ready(request: Request) -> None:
    """Refuse API work until the schema is at head.

    Every dependency here is a coroutine function: FastAPI runs a plain
    function in its thread pool, a hop that cost a tenth of a point read's CPU
    and most of its p99 (docs/benchmarks/api.notes.md)."""
    bootstrap = state_of(request)["bootstrap"]
    status = bootstrap.status
    # A worker failed for a cause that can go away turns ready as soon as the
    # schema is at head, in this very request (bootstrap.recover_if_at_head).
    if not status.ready and not await bootstrap.recover_if_at_head():
        raise ServiceUnavailable(
            _NOT_SERVING.get(
                status.phase, f"the service is starting: database schema {status.phase.value}"
            ),
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )


# Why a worker that is not starting does not serve (its /readyz says more).
_NOT_SERVING = {
    Phase.FAILED: "the service is not serving: its database migration failed; it serves "
    "again once the schema is at head",
    Phase.HELD: "the service is not serving: a revision it needs is held by an operator",
    Phase.SCHEMA_CHANGED: "the service is not serving: its database schema is no longer "
    "at head; it serves again once it is",
}


def checked_request(request: Request) -> None:
    """Once the caller is known: its query parameters, a parameter's problem
    found before the caller was known, then its body's problem."""
    if (problem := request_problem(request)) is not None:
        request.scope.pop(DEFERRED_PROBLEM, None)
        raise problem


def request_problem(request: Request) -> ApiError | None:
    """The first refusal of the request itself, in `checked_request`'s order,
    if any, without raising it."""
    try:
        known_query_parameters(request)
    except ApiError as problem:
        return problem
    deferred: ApiError | None = request.scope.get(DEFERRED_PROBLEM)
    return deferred if deferred is not None else body_problem(request.scope)


def known_query_parameters(request: Request) -> None:
    """400 for a query parameter the route does not declare (JSON:API: a server
    MUST NOT ignore what it does not understand), one given twice (which one
    was meant is not known), or one whose value is not UTF-8 (the framework
    would read it with replacement characters) or could not be compared by
    PostgreSQL (a NUL character)."""
    allowed = _declared_query_parameters(request.scope["route"])
    seen: set[str] = set()
    for name, value in request.query_params.multi_items():
        if name not in allowed:
            listed = ", ".join(sorted(allowed)) or "none"
            raise BadRequest(f"unknown query parameter {name!r}; allowed: {listed}", parameter=name)
        if name in seen:
            raise BadRequest(f"{name} is given more than once", parameter=name)
        seen.add(name)
        if "\ufffd" in value and not _is_utf8(request.scope["query_string"], name):
            raise BadRequest(f"{name} is not valid UTF-8 once percent-decoded", parameter=name)
        if problem := text_problem(value):
            raise BadRequest(f"{name} {problem}", parameter=name)


def _is_utf8(query_string: bytes, name: str) -> bool:
    """Whether every value of `name` in the raw query string decodes as UTF-8
    (a replacement character in the decoded value may be the client's own)."""
    for part in query_string.split(b"&"):
        raw_name, _, raw_value = part.partition(b"=")
        if unquote_plus(raw_name.decode("latin-1")) != name:
            continue
        try:
            unquote_to_bytes(raw_value.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


_QUERY_NAMES = "_service_query_parameters"


def _declared_query_parameters(route: BaseRoute) -> frozenset[str]:
    """The query parameters a route declares, its dependencies' included;
    kept on the route (routes are not hashable), worked out once."""
    names: frozenset[str] | None = getattr(route, _QUERY_NAMES, None)
    if names is None:
        names = frozenset(_query_names(route.dependant))  # type: ignore[attr-defined]
        setattr(route, _QUERY_NAMES, names)
    return names


def _query_names(dependant: Dependant) -> set[str]:
    names = {parameter.alias for parameter in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_names(dependency)
    return names


async def database(request: Request) -> AsyncConnection:
    """One transaction per request: committed when the handler succeeds, rolled
    back otherwise, by the request's route once its handler is done
    (`close_when_handled`), so the commit happens before the answer is sent
    and a commit that fails is answered as the error it is: a 2xx always
    means committed.

    A handler may commit early and go on in a new transaction (discovery
    commits each bounded batch): whatever is open at the end is committed or
    rolled back the same way."""
    connection = await _connected(request)
    await connection.begin()
    return connection


async def _connected(request: Request) -> AsyncConnection:
    """A pooled connection its route ends (`_end`) once the handler is done,
    whatever happens from here on."""
    connection = await state_of(request)["engine"].connect()
    try:
        close_when_handled(request.scope, lambda error: _end(connection, error))
    except BaseException:
        await connection.close()
        raise
    return connection


async def _end(connection: AsyncConnection, error: BaseException | None) -> None:
    """Commit the transaction open on the connection, if any (roll it back
    after `error`; whatever is open then, after early commits), and close it."""
    try:
        if connection.in_transaction():
            await (_commit(connection) if error is None else connection.rollback())
    finally:
        await connection.close()


# SQLSTATE classes after which a COMMIT's outcome is not known: the session
# was ended from the server (57P: a terminated backend, a shutdown) or the
# connection failed (08).
_COMMIT_UNKNOWN_CLASSES = ("57P", "08")


async def _commit(connection: AsyncConnection) -> None:
    """Commit; a COMMIT the database never answered is answered as what it is."""
    try:
        await connection.commit()
    except Exception as error:
        if (unknown := _unconfirmed(error)) is not None:
            raise unknown from error
        raise


def _unconfirmed(error: Exception) -> ServiceUnavailable | None:
    """The answer to a commit (a COMMIT, or a statement that commits on its
    own) that failed with `error` without the database's answer, if so.

    An error the server reports for the commit itself (a deferred
    constraint, a serialization failure) means nothing was written, and is
    answered as that error. But a commit whose answer never came (the
    connection lost, the wait cut by the request's timeout, as when a
    synchronous standby is gone and PostgreSQL keeps the commit locally) may
    have been made: "the database is unavailable; retry shortly" would have
    the client write it twice."""
    state = sqlstate(error)
    answered = state is not None and not state.startswith(_COMMIT_UNKNOWN_CLASSES)
    if answered or not is_transient(error):
        return None
    logger.warning(
        "the database did not confirm a commit (%s): answered 503, outcome unknown",
        describe_error(error),
    )
    return ServiceUnavailable(
        "the database did not confirm the commit: the change may have been made; "
        "read it before trying again"
    )


Database = Annotated[AsyncConnection, Depends(database)]


async def reading(request: Request) -> Connection:
    """A connection for a read that is one statement, closed by the request's
    route when its handler is done (`close_when_handled`): outside any
    transaction (no BEGIN, no COMMIT: a statement is atomic and sees one
    snapshot), where the session's statement_timeout bounds it
    (service/db/statement_timeout.py). Where it would not (a pooler whose
    sessions have no timeout), the read runs in a transaction as a write
    does."""
    state = state_of(request)
    statements, bound = state["statements"], state["read_bound"]
    if statements is not None and bound.known is not False:
        lent = await _lent(request, statements)
        if await bound.holds(lent.driver):
            return lent
        await statements.release(lent)  # its later release does nothing
    connection = await _connected(request)
    if statements is None:
        reads = await autocommit(connection)
        if await bound.holds(reads.driver):
            return reads
    await connection.begin()
    return connection


async def _lent(request: Request, statements: StatementPool) -> Autocommit:
    """A connection of the statement pool, given back by the request's route
    once its handler is done."""
    lent = await statements.acquire()
    try:
        close_when_handled(request.scope, lambda _: statements.release(lent))
    except BaseException:
        await statements.release(lent)
        raise
    return lent


@dataclass(frozen=True)
class Caller:
    """Who is calling: an API key, acting as its user, in its account.

    `role` is the key's power: its user's role now, capped at `max_role`, the
    role its maker had when the key was made (None for a key made by the
    previous release during a rolling deploy: no cap).
    """

    key_id: uuid.UUID
    account_id: uuid.UUID
    user_id: uuid.UUID
    role: Role


def _unauthorized(detail: str, realm: str = "platform") -> Unauthorized:
    return Unauthorized(detail, headers={"WWW-Authenticate": f'Bearer realm="{realm}"'})


def _too_many(detail: str, wait: float) -> TooManyRequests:
    return TooManyRequests(detail, headers={"Retry-After": retry_after(wait)})


def _client(request: Request) -> str:
    """Whose failures a request counts as: its client's IPv4 address, or the
    /64 network of its IPv6 address (one host is given a whole /64, and would
    otherwise have a fresh count, and a fresh entry in memory, per address)."""
    host = request.client.host if request.client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return host


async def _failed(request: Request, error: ApiError) -> ApiError:
    """A failed authentication, counted against the client's address: `error`
    (401) while the address is within its limit, 429 once it is over. Only
    failures are counted and refused: a right credential from the same
    address is always checked and served."""
    limits = state_of(request)["rate_limits"]
    if wait := await limits.take_failure(_client(request)):
        return _too_many("too many failed authentications from this address; retry later", wait)
    return error


def _bearer(request: Request) -> str | None:
    """The bearer credential; None for none, or for more than one
    Authorization header (which one was meant is not known)."""
    given = request.headers.getlist("authorization")
    if len(given) != 1:
        return None
    scheme, _, credential = given[0].partition(" ")
    return credential.strip() if scheme.lower() == "bearer" and credential.strip() else None


def _one_authorization(request: Request) -> None:
    """400 for a request with more than one Authorization header: neither is
    taken (the first used to be, whatever the second said)."""
    if len(request.headers.getlist("authorization")) > 1:
        raise BadRequest("the Authorization header is given more than once; send one")


async def presented_key(request: Request) -> bytes:
    """The digest of the key in `Authorization: Bearer <key>`, within the
    key's rate (429); a missing or malformed key is a failed authentication
    (no database work)."""
    _one_authorization(request)
    key = _bearer(request)
    if key is None:
        raise await _failed(
            request, _unauthorized("an API key is required: Authorization: Bearer <key>")
        )
    if not keys.looks_like_key(key):
        raise await _failed(request, _unauthorized("the API key is not valid"))
    digest = keys.digest(key)
    # The key's own rate, before any database work: a key over it costs no
    # read (a one-statement read would otherwise run before its caller is
    # admitted, and be thrown away). Counted for every well-formed key, valid
    # or not: a 429 tells nothing of that.
    if wait := await state_of(request)["rate_limits"].take_key(digest.hex()):
        raise _too_many("too many requests with this API key; retry later", wait)
    return digest


async def authenticated(
    request: Request,
    digest: Annotated[bytes, Depends(presented_key)],
    connection: Database,
) -> Caller:
    """The caller behind the presented key, or 401 (429 for an address that
    failed too often); a key over its own limit was refused before (429).

    Every well-formed key is looked up, whatever its address did before: one
    indexed lookup by digest. A client's failures can then never lock out
    another client's right key behind the same address (a proxy, a NAT)."""
    row = await _CALLER.fetchrow(connection, digest)
    return await _admitted(request, digest, connection, row)


async def _admitted(
    request: Request,
    digest: bytes,
    connection: Connection,
    row: Row | None,
    *,
    after_commit: bool = False,
) -> Caller:
    """The caller of a key's row (its `caller_*` columns), or the refusal.
    `after_commit`: the request's write is committed already, so a failure to
    record the key's use is logged, not answered (a retry would write twice)."""
    # The lookup is by digest; compare in constant time all the same.
    if row is None or not hmac.compare_digest(bytes(row["caller_secret_hash"]), digest):
        raise await _failed(request, _unauthorized("the API key is not valid or was revoked"))
    key_id = row["caller_key_id"]
    if state_of(request)["key_usage"].due(key_id):
        try:
            await _TOUCH_KEY.execute(connection, key_id)
        except Exception as error:
            if not after_commit:
                raise
            logger.warning(
                "could not record the use of key %s after its write committed (%s)",
                key_id,
                describe_error(error),
            )
    return Caller(
        key_id,
        row["caller_account_id"],
        row["caller_user_id"],
        capped_role(row["caller_role"], row["caller_max_role"]),
    )


def _allowed(request: Request, caller: Caller, minimum: Role) -> None:
    """403 below `minimum`; then the request's own checks (service/api: an
    anonymous or refused caller learns nothing of the API from them)."""
    if not caller.role.at_least(minimum):
        raise Forbidden(f"this needs the role {minimum} or higher; the key acts as {caller.role}")
    checked_request(request)
    # For the account's share of the worker (service/api/account_shares.py).
    request.scope[SCOPE_ACCOUNT] = caller.account_id


def role_at_least(minimum: Role) -> Callable[..., Coroutine[Any, Any, Caller]]:
    async def check(request: Request, caller: Annotated[Caller, Depends(authenticated)]) -> Caller:
        _allowed(request, caller, minimum)
        return caller

    return check


class KeyRead:
    """A read by a presented key, not yet admitted: the core reads with the
    key's check in the same statement and admits the caller through `admit`
    before it looks at what it read (service/accounts/callers.py). Any key
    that is valid may read (VIEWER is every role's floor)."""

    __slots__ = ("caller", "connection", "digest", "request")
    minimum = Role.VIEWER
    writes_alone = False

    def __init__(self, request: Request, digest: bytes, connection: Connection) -> None:
        self.request = request
        self.digest = digest
        self.connection = connection
        self.caller: Caller | None = None
        request.scope[PENDING_ADMISSION] = self._admit_alone

    async def admit(self, row: Row | None) -> uuid.UUID:
        self.request.scope.pop(PENDING_ADMISSION, None)
        # A write in one statement on a connection outside a transaction has
        # committed by now.
        committed = self.writes_alone and isinstance(self.connection, Autocommit)
        self.caller = await _admitted(
            self.request, self.digest, self.connection, row, after_commit=committed
        )
        _allowed(self.request, self.caller, self.minimum)
        return self.caller.account_id

    async def forget(self, _: BaseException | None) -> None:
        """Leave the request's scope once its handler is done. The scope holds
        the read and the read its request, which holds the scope: a cycle only
        the garbage collector would free, each request's (about 70 objects),
        piling up between its collections (docs/benchmarks/api.notes.md)."""
        self.request.scope.pop(_READER, None)

    async def _admit_alone(self) -> None:
        """The caller checked by a lookup of its own, for a request whose
        parameters FastAPI refused before its read could run (the read's
        connection is gone by then): refusals of the caller come first."""
        async with state_of(self.request)["engine"].connect() as connection:
            self.connection = connection
            await self.admit(await _CALLER.fetchrow(connection, self.digest))
            await connection.commit()


@cache
def _roles_at_least(minimum: Role) -> list[str]:
    """The names of the roles with every power of `minimum` (a statement's text[])."""
    return [role.value for role in Role if role.at_least(minimum)]


class KeyWrite(KeyRead):
    """A write by a presented key, not yet admitted. A write that is one
    statement checks the key in it (`roles`: the roles that may write) and
    commits on its own, then admits the caller (service/accounts/callers.py);
    any other begins its transaction and admits the caller by a lookup first
    (`transaction`). The handler runs its write through `writes`, which keeps
    the order of refusals of every route."""

    __slots__ = ()
    minimum = Role.MEMBER
    writes_alone = True

    @property
    def roles(self) -> list[str]:
        return _roles_at_least(self.minimum)

    async def transaction(self) -> tuple[Caller, AsyncConnection]:
        """Begin the write's transaction and admit the caller by a lookup in it."""
        connection = self.connection
        if self.caller is not None:
            assert isinstance(connection, AsyncConnection)
            return self.caller, connection
        if isinstance(connection, Autocommit):
            if connection.connection is None:
                # The statement pool's: given back now (its later release
                # does nothing), so a transaction holds one connection, not two.
                statements = state_of(self.request)["statements"]
                assert statements is not None
                await statements.release(connection)
                self.connection = await _connected(self.request)
            else:
                self.connection = connection.connection
            connection = self.connection
        if not connection.in_transaction():
            await connection.begin()
        await self.admit(await _CALLER.fetchrow(connection, self.digest))
        assert self.caller is not None
        return self.caller, connection

    async def writes(self, write: Awaitable[T]) -> T:
        """Await the handler's write. A refusal of the request found before
        the caller was admitted comes after the caller's own refusals (a
        lookup of its own first), as on every route; a write in one statement
        whose commit was never confirmed is answered as such (`_commit`)."""
        try:
            return await write
        except (ApiError, Problem):
            if PENDING_ADMISSION in self.request.scope:
                await self._admit_alone()
            raise
        except Exception as error:
            # Not yet admitted on a connection outside a transaction: the
            # statement that failed was the write's own, and its commit.
            alone = PENDING_ADMISSION in self.request.scope
            if alone and isinstance(self.connection, Autocommit):
                unknown = _unconfirmed(error)
                if unknown is not None:
                    raise unknown from error
            raise


async def key_read(request: Request) -> KeyRead:
    """The presented key (401 without a well-formed one, before any database
    work) and the read's connection (`reading`). One dependency, not three:
    FastAPI's solving costs per dependency, on the hottest routes."""
    digest = await presented_key(request)
    return KeyRead(request, digest, await reading(request))


async def key_write(request: Request) -> KeyWrite:
    """The presented key (as `key_read`) and the write's connection, outside
    any transaction until the write begins one (`KeyWrite.transaction`)."""
    digest = await presented_key(request)
    write = KeyWrite(request, digest, await reading(request))
    if request_problem(request) is not None:
        # A write in one statement runs before its caller is admitted, so only
        # for a request refused by nothing known now. This one is: the
        # caller's refusals first (a lookup of its own), then the request's,
        # before FastAPI validates the body.
        await write.transaction()
    return write


# The handlers whose route takes the presented key (`reads_by_key`).
READS_BY_KEY: set[Callable[..., Any]] = set()
_READER = "service.reader"
E = TypeVar("E", bound=Callable[..., Any])


def reads_by_key(endpoint: E) -> E:
    """Mark `endpoint` a read in one statement, the caller's check included:
    its route (service/api/routers.py) takes the presented key and the read's
    connection (`key_read`) before FastAPI solves the handler's parameters,
    and the handler has them from `reader_of(request)`. The connection
    returns to the pool before the answer is sent, as `Database`'s.

    Not a dependency: FastAPI's solving of one (its cache key, its kind, its
    parameters of every source) cost more than the read's own work in Python,
    about a tenth of a point read (docs/benchmarks/api.notes.md). The order
    of refusals is a dependency's: the key's (401, 429) before the request's
    parameters (`PENDING_ADMISSION`)."""
    READS_BY_KEY.add(endpoint)
    return endpoint


async def take_reader(request: Request) -> None:
    reader = await key_read(request)
    request.scope[_READER] = reader
    close_when_handled(request.scope, reader.forget)


def reader_of(request: Request) -> KeyRead:
    """The read by the presented key of a handler marked `reads_by_key`."""
    reader = request.scope.get(_READER)
    if not isinstance(reader, KeyRead):
        raise RuntimeError("reader_of needs a handler marked reads_by_key")
    return reader


# A MEMBER's write, one statement when it can be (`KeyWrite`).
MemberWrite = Annotated[KeyWrite, Depends(key_write)]
Viewer = Annotated[Caller, Depends(role_at_least(Role.VIEWER))]
Member = Annotated[Caller, Depends(role_at_least(Role.MEMBER))]
Admin = Annotated[Caller, Depends(role_at_least(Role.ADMIN))]
Owner = Annotated[Caller, Depends(role_at_least(Role.OWNER))]


def configured_operator_token(request: Request) -> str | None:
    """The operator token this process was configured with, if any."""
    return state_of(request)["operator_token"]


def operator_token(request: Request) -> str:
    """The configured operator token, or 403 when there is none."""
    token = configured_operator_token(request)
    if token is None:
        raise Forbidden("operator routes are disabled: OPERATOR_TOKEN is not set")
    return token


def is_operator(request: Request) -> bool:
    """Whether the request carries the operator token (no rate limit, no error).

    Compared as digests: equal lengths, so the comparison takes the same time
    whatever the presented value, its length included."""
    token = configured_operator_token(request)
    presented = _bearer(request)
    if token is None or presented is None:
        return False
    return hmac.compare_digest(_token_digest(presented), _token_digest(token))


def _token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def require_operator(request: Request) -> None:
    """The operator token, or 401 (a failed authentication: 429 for an address
    that failed too often), or 429 over the operator's own limit. The right
    token is served whatever its address did before."""
    operator_token(request)
    _one_authorization(request)
    if not is_operator(request):
        raise await _failed(
            request, _unauthorized("the operator token is required", realm="operator")
        )
    limits = state_of(request)["rate_limits"]
    if wait := await limits.take_key(_OPERATOR):
        raise _too_many("too many requests with the operator token; retry later", wait)
    checked_request(request)


Operator = Depends(require_operator)
