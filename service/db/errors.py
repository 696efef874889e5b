"""Database errors on the request path: which ones a client should retry.

The migrator's own classification (alembic_lockstep/errors.py) asks whether
to wait for an unreachable database; a request asks something broader: may a
request that failed this way succeed if retried shortly (the API's 503 with
Retry-After, not a 500)? Answered by SQLSTATE class, since every code of these
classes is a condition of the server or the connection, never of the request.
"""

from __future__ import annotations

import asyncpg
from alembic_lockstep import sqlstate
from sqlalchemy.exc import DBAPIError, InterfaceError

# A statement cancelled by a timeout, a full server, an authentication failure
# (a rotated secret) or a missing database (being created) answer 503.
_TRANSIENT_CLASSES = ("08", "53", "57", "28", "3D")


def is_transient(error: BaseException) -> bool:
    """True when a request that failed this way may succeed shortly (503, not 500):
    the database is unreachable, restarting, full, or refuses us for now (a
    rotated secret, a database being created)."""
    if isinstance(error, OSError | TimeoutError | asyncpg.exceptions.ConnectionDoesNotExistError):
        return True
    if isinstance(error, DBAPIError) and (
        error.connection_invalidated
        or isinstance(error, InterfaceError)
        or isinstance(error.orig, OSError)
    ):
        return True
    code = sqlstate(error)
    return code is not None and code.startswith(_TRANSIENT_CLASSES)


_UNDEFINED_TABLE = "42P01"


def command_line_problem(error: BaseException) -> str:
    """One line for an operator command that failed on the database: what kind
    of failure, the server's words (never a statement or its parameters), and
    what to do when that is known."""
    from alembic_lockstep import describe_error, failure_kind

    kind = "unreachable" if isinstance(error, OSError) else failure_kind(error)
    line = f"the command failed on the database ({kind}): {describe_error(error)}"
    if sqlstate(error) == _UNDEFINED_TABLE:
        line += (
            "; the schema is not at head: run `python -m service migrate` (or start the service)"
        )
    return line
