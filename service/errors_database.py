"""Classifying and describing database errors.

Descriptions go to logs and to /readyz, so they carry the server's message and
SQLSTATE but never a URL, a statement's parameters or a password.
"""

from __future__ import annotations

import asyncpg
from sqlalchemy.exc import DBAPIError, InterfaceError

# SQLSTATE classes and codes after which trying again later can succeed.
_TRANSIENT_CLASSES = ("08", "53", "57", "28", "3D")
_LOCK_NOT_AVAILABLE = "55P03"


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a database error, whether wrapped by SQLAlchemy or not."""
    if isinstance(error, DBAPIError):
        error = error.orig or error
    code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return code if isinstance(code, str) else None


def is_transient(error: BaseException) -> bool:
    """True when the database is unreachable, restarting, full or not yet set up.

    Authentication failures and a missing database count too: they are fixed
    outside this process (a secret rotated, a database created), and crashing
    would only make the orchestrator restart us into the same state.
    """
    if isinstance(error, OSError | TimeoutError | asyncpg.exceptions.ConnectionDoesNotExistError):
        return True
    if isinstance(error, DBAPIError) and (
        error.connection_invalidated or isinstance(error, InterfaceError)
    ):
        return True
    if isinstance(error, DBAPIError) and isinstance(error.orig, OSError):
        return True
    code = sqlstate(error)
    return code is not None and code.startswith(_TRANSIENT_CLASSES)


def is_lock_timeout(error: BaseException) -> bool:
    return sqlstate(error) == _LOCK_NOT_AVAILABLE


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
