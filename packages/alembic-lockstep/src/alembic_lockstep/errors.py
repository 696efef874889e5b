"""What a database error means for the migrator, and how to describe it.

Descriptions go to logs and to /readyz, so they carry the server's message and
SQLSTATE but never a URL, a statement's parameters or a password.

The question, answered by exact SQLSTATE codes (never by class: class 57 holds
both a cancelled statement and a server shutting down): is the database only
unreachable for now, so that the bootstrap should wait and try again
(`is_unreachable`)? Only a lost or refused connection is; a statement timeout,
a cancel, a failed authentication or authorisation, a missing database are
final: waiting would not fix them, and retrying a cancelled migration would
overrule the operator who cancelled it (`failure_kind` names what they are).
"""

from __future__ import annotations

import ssl
import traceback

import asyncpg
from sqlalchemy.exc import DBAPIError, InterfaceError

_CONNECTION_EXCEPTION_CLASS = "08"
# The server is shutting down, crashed or starting: the connection is lost or
# refused, and the next one may succeed.
_SERVER_GOING_AWAY = {"57P01", "57P02", "57P03"}
_TOO_MANY_CONNECTIONS = "53300"
# A protocol violation is no network trouble: PgBouncer answers it to startup
# parameters it does not pass on (the migration session's lock_timeout, ...).
_PROTOCOL_VIOLATION = "08P01"
_LOCK_NOT_AVAILABLE = "55P03"
_QUERY_CANCELED = "57014"

# What a final error is, by SQLSTATE, for /readyz and the log.
# A prepared statement that does not exist (26000) or already exists (42P05).
_PREPARED_STATEMENT_LOST_OR_SHARED = frozenset({"26000", "42P05"})
_KINDS = {
    _LOCK_NOT_AVAILABLE: "lock_timeout",
    "42501": "permission_denied",
    "3D000": "missing_database",
    "28P01": "authentication_failed",
    "28000": "authentication_failed",
}


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a database error, whether wrapped by SQLAlchemy or not."""
    if isinstance(error, DBAPIError):
        error = error.orig or error
    code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return code if isinstance(code, str) else None


def _lost_or_refused_connection(error: BaseException) -> bool:
    if isinstance(error, DBAPIError) and error.orig is not None:
        if _lost_or_refused_connection(error.orig):
            return True
        return error.connection_invalidated or isinstance(error, InterfaceError)
    if _is_tls_error(error):
        # A certificate that does not verify stays so, and so does a server
        # without TLS asked for it (sslmode=require): a configuration error.
        return False
    return isinstance(
        error, OSError | TimeoutError | asyncpg.exceptions.ConnectionDoesNotExistError
    )


def is_unreachable(error: BaseException) -> bool:
    """True when the connection was lost or refused: waiting may fix it."""
    if _lost_or_refused_connection(error):
        return True
    code = sqlstate(error)
    if code is None or code == _PROTOCOL_VIOLATION:
        return False
    return (
        code.startswith(_CONNECTION_EXCEPTION_CLASS)
        or code in _SERVER_GOING_AWAY
        or code == _TOO_MANY_CONNECTIONS
    )


def is_lock_timeout(error: BaseException) -> bool:
    return sqlstate(error) == _LOCK_NOT_AVAILABLE


def is_statement_timeout(error: BaseException) -> bool:
    """A statement cut by its session's statement_timeout."""
    return sqlstate(error) == _QUERY_CANCELED and "statement timeout" in str(error)


def failure_kind(error: BaseException) -> str:
    """A word for what a final error is: statement_timeout, cancelled,
    lock_timeout, permission_denied, authentication_failed, missing_database,
    tls, pooler, or error."""
    code = sqlstate(error)
    if code == _PROTOCOL_VIOLATION and "startup parameter" in str(error):
        return "pooler"
    if code in _PREPARED_STATEMENT_LOST_OR_SHARED and "prepared statement" in str(error):
        # A session's prepared statement gone, or another's already there: a
        # transaction-pooling pooler hands one server session to many clients.
        return "pooler"
    if code == _QUERY_CANCELED:
        return "statement_timeout" if "statement timeout" in str(error) else "cancelled"
    if code in _KINDS:
        return _KINDS[code]
    original = error.orig if isinstance(error, DBAPIError) and error.orig else error
    return "tls" if _is_tls_error(original) else "error"


def _is_tls_error(error: BaseException) -> bool:
    # asyncpg's words when the server answers "no TLS here" to a client that requires it.
    return isinstance(error, ssl.SSLError) or (
        isinstance(error, ConnectionError) and "rejected SSL upgrade" in str(error)
    )


def describe_error(error: BaseException) -> str:
    """A one-line description without the statement text or its parameters."""
    original: BaseException = error
    if isinstance(error, DBAPIError) and error.orig is not None:
        original = error.orig.__cause__ or error.orig
    message = str(original).strip().splitlines()[0] if str(original).strip() else ""
    code = sqlstate(error)
    name = type(original).__name__
    described = f"{name}: {message}" if message else name
    return f"{described} (SQLSTATE {code})" if code else described


def one_traceback(error: BaseException) -> str:
    """The frames of `error` alone, ending with its one-line description: the
    driver's errors it wraps (asyncpg's, SQLAlchemy's adaptation of it) would
    tell the same failure twice more, with the statement's text. Logged as the
    record's `error_trace` (the service's formatters print it)."""
    frames = "".join(traceback.format_tb(error.__traceback__))
    return f"Traceback (most recent call last):\n{frames}{describe_error(error)}"
