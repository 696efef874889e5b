"""`python -m service accounts ...`: the operator's actions on accounts.

They run with the operator's own database access (MIGRATION_DATABASE_URL, else
DATABASE_URL: a direct connection), not through the API, and each writes a
row to operator_audit in the same transaction as the action itself: what was
done, to which account, user and key, why (--reason, required), by whom (the
operating system's user, or --operator), from which host and process, as
which database user, with which version of the service.

    accounts create --name NAME --email EMAIL [--reason TEXT] [--operator NAME]
                    [--allow-duplicate] [--json]
        An account with its OWNER (EMAIL), the default environments and a first
        API key, as `POST /v1/accounts` makes them: the way in on a new
        installation. The key's secret is printed once, on standard output.
        An account of that name whose OWNER has that email is not made twice
        (a getting-started step run again) unless --allow-duplicate says so.

    accounts recover ACCOUNT_ID --reason TEXT [--email EMAIL] [--operator NAME] [--json]
        A new API key for an OWNER of the account, capped at OWNER: for an
        account whose owners lost every key. Its secret is printed once, on
        standard output; nothing else is.

Heavy imports wait until a command runs: building this parser must stay cheap
for every other command of `python -m service`.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import re
import socket
import sys
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from settings import Settings

EXIT_FAILED = 1
MAX_REASON_LENGTH = 1000


def add_accounts_commands(commands: Any) -> None:
    """Add the `accounts` group to the command line's subcommands."""
    accounts = commands.add_parser(
        "accounts", help="operator actions on accounts (audited in operator_audit)"
    )
    actions = accounts.add_subparsers(dest="accounts_command", required=True)
    create = actions.add_parser(
        "create", help="an account with its OWNER, environments and a first API key"
    )
    create.add_argument("--name", required=True, type=_name, help="the account's name")
    create.add_argument("--email", required=True, type=_email, help="its OWNER's email")
    create.add_argument(
        "--reason",
        type=_reason,
        default="a new account, from the command line",
        help="why (kept in the audit)",
    )
    create.add_argument(
        "--operator", type=_operator, help="who acts (default: the operating system's user)"
    )
    create.add_argument(
        "--allow-duplicate",
        action="store_true",
        help="make it even when an account of that name with that OWNER exists",
    )
    create.add_argument("--json", action="store_true", help="print JSON")
    recover = actions.add_parser(
        "recover", help="a new OWNER key for an account whose owners lost every key"
    )
    recover.add_argument("account_id", type=_uuid, help="the account's id")
    recover.add_argument("--reason", required=True, type=_reason, help="why (kept in the audit)")
    recover.add_argument(
        "--email", type=_email, help="the OWNER to give the key to, when there are several"
    )
    recover.add_argument(
        "--operator", type=_operator, help="who acts (default: the operating system's user)"
    )
    recover.add_argument("--json", action="store_true", help="print JSON")


def run_accounts_command(settings: Settings, options: argparse.Namespace) -> int:
    command = _COMMANDS[options.accounts_command]
    return asyncio.run(command(settings, options))


class OperatorError(Exception):
    """The action cannot be done; the message says why."""


async def recover(settings: Settings, options: argparse.Namespace) -> int:
    from service.accounts import accounts, keys
    from service.models import Role

    engine = _operator_engine(settings)
    try:
        async with engine.begin() as connection:
            if not await accounts.exists(connection, options.account_id):
                raise OperatorError(f"no account with id {options.account_id}")
            owner = await _owner(connection, options.account_id, options.email)
            key = await keys.issue(
                connection,
                options.account_id,
                owner["id"],
                "recovery key",
                max_role=Role.OWNER,
                made_by=None,
            )
            audit_id = await _audit(
                connection,
                options,
                "accounts recover",
                account_id=options.account_id,
                user_id=owner["id"],
                api_key_id=key.row["id"],
            )
    except OperatorError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await engine.dispose()
    secret = key.secret
    summary = {
        "account_id": str(options.account_id),
        "user_id": str(owner["id"]),
        "key_id": str(key.row["id"]),
    }
    if options.json:
        print(
            json.dumps({**summary, "email": owner["email"], "audit_id": audit_id, "secret": secret})
        )
    else:
        print(
            f"a new OWNER key {key.row['id']} for {owner['email']} of account {options.account_id} "
            f"(audit entry {audit_id}); its secret, shown once, follows on standard output",
            file=sys.stderr,
        )
        print(secret)
    return 0


async def create(settings: Settings, options: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from service.accounts import accounts
    from service.api.account_shapes import AccountCreate
    from service.problems import Problem

    try:
        values = AccountCreate.model_validate(
            {"name": options.name, "owner": {"email": options.email}}
        )
    except ValidationError as error:
        print(f"error: {_validation_problem(error)}", file=sys.stderr)
        return EXIT_FAILED
    engine = _operator_engine(settings)
    try:
        async with engine.begin() as connection:
            if not options.allow_duplicate:
                await _refuse_duplicate(connection, values.name, values.owner.email)
            created = await accounts.create(connection, values.name, values.owner.new_user())
            account_id = created.account["id"]
            audit_id = await _audit(
                connection,
                options,
                "accounts create",
                account_id=account_id,
                user_id=created.owner["id"],
                api_key_id=created.key.row["id"],
            )
    except (Problem, OperatorError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await engine.dispose()
    secret = created.key.secret
    if options.json:
        summary = {
            "account_id": str(account_id),
            "user_id": str(created.owner["id"]),
            "email": created.owner["email"],
            "key_id": str(created.key.row["id"]),
            "audit_id": audit_id,
            "secret": secret,
        }
        print(json.dumps(summary))
    else:
        print(
            f"account {account_id} ({values.name}) with its OWNER {values.owner.email}, the "
            f"environments {', '.join(item['key'] for item in created.environments)} "
            f"and a first OWNER key {created.key.row['id']} (audit entry {audit_id}); its secret, "
            "shown once, follows on standard output. Use it as: "
            f"curl -H 'Authorization: Bearer <secret>' http://127.0.0.1:{options.port}/v1/account",
            file=sys.stderr,
        )
        print(secret)
    return 0


# Taken (for the transaction) by every `accounts create` that checks for a
# duplicate, so that two run at once cannot both find none and both create.
_CREATE_LOCK = 7_265_110_233_881_022_001


async def _refuse_duplicate(connection: Any, name: str, email: str) -> None:
    """OperatorError when an account called `name` has an OWNER with `email`."""
    from sqlalchemy import func, select

    from service.models import Account, Role, User, table

    accounts, users = table(Account), table(User)
    await connection.execute(select(func.pg_advisory_xact_lock(_CREATE_LOCK)))
    existing = await connection.scalar(
        select(accounts.c.id)
        .join(users, users.c.account_id == accounts.c.id)
        .where(
            accounts.c.name == name,
            users.c.role == Role.OWNER,
            func.lower(users.c.email) == func.lower(email),
        )
        .order_by(accounts.c.created_at)
        .limit(1)
    )
    if existing is not None:
        raise OperatorError(
            f"an account named {name!r} whose OWNER is {email} exists already ({existing}). "
            f"For a new key to it: python -m service accounts recover {existing} --reason '...'; "
            "to make another account all the same: add --allow-duplicate"
        )


async def has_accounts(settings: Settings) -> bool:
    """Whether the database holds any account (none before the schema has its table)."""
    from sqlalchemy import exists, select, text

    from service.models import Account, table

    engine = _operator_engine(settings)
    try:
        async with engine.connect() as connection:
            if await connection.scalar(text("SELECT to_regclass('accounts')")) is None:
                return False
            return bool(await connection.scalar(select(exists().select_from(table(Account)))))
    finally:
        await engine.dispose()


def _validation_problem(error: Any) -> str:
    """The first problem of a pydantic ValidationError, named by its option."""
    problem = error.errors()[0]
    option = "--email" if "owner" in problem["loc"] else "--name"
    return f"{option}: {problem['msg']}"


async def _audit(
    connection: Any,
    options: argparse.Namespace,
    action: str,
    *,
    account_id: uuid.UUID,
    user_id: uuid.UUID,
    api_key_id: uuid.UUID,
) -> int:
    """The operator_audit row of an action, in the action's transaction."""
    from sqlalchemy import func, insert

    from service import __version__
    from service.models import OperatorAuditEntry, table

    audit = table(OperatorAuditEntry)
    audit_id: int = await connection.scalar(
        insert(audit)
        .values(
            action=action,
            account_id=account_id,
            user_id=user_id,
            api_key_id=api_key_id,
            reason=options.reason,
            operator=options.operator or _os_user(),
            host=socket.gethostname(),
            pid=os.getpid(),
            database_user=func.current_user(),
            app_version=__version__,
        )
        .returning(audit.c.id)
    )
    return audit_id


async def _owner(connection: Any, account_id: uuid.UUID, email: str | None) -> Any:
    from service.accounts import users
    from service.models import Role
    from service.storage import rows

    query = users.of_account(account_id, email, Role.OWNER)
    owners = await rows(connection, query.order_by(users.users.c.created_at))
    if not owners:
        raise OperatorError(
            "the account has no OWNER" + (f" with the email {email}" if email else "")
        )
    if len(owners) > 1:
        emails = ", ".join(owner["email"] for owner in owners)
        raise OperatorError(f"the account has several OWNERs ({emails}): choose one with --email")
    return owners[0]


def _operator_engine(settings: Settings) -> Any:
    """A direct connection with the operator's access (the migration URL)."""
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    from service.db.engines import application_name

    return create_async_engine(
        settings.migration_url,
        poolclass=NullPool,
        hide_parameters=True,
        connect_args={
            "timeout": settings.database_connect_timeout,
            "server_settings": {"application_name": application_name("operator")},
        },
    )


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _uuid(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a UUID") from None


def _text_of(limit: int) -> Callable[[str], str]:
    """An argument type for text of at most `limit` characters (the column's)."""

    def text(raw: str) -> str:
        from service.api.json_body import text_problem

        if _UNDECODABLE.search(raw):
            # Bytes the terminal sent that are not UTF-8 (Python keeps them as
            # lone surrogates, which text_problem would name instead).
            raise argparse.ArgumentTypeError("is not valid UTF-8")
        if not raw.strip():
            raise argparse.ArgumentTypeError("must not be blank")
        if len(raw) > limit:
            raise argparse.ArgumentTypeError(f"must be at most {limit} characters")
        if problem := text_problem(raw):
            raise argparse.ArgumentTypeError(problem)
        return raw

    return text


_UNDECODABLE = re.compile("[\udc80-\udcff]")
_name = _text_of(200)
_email = _text_of(254)
_operator = _text_of(128)
_reason = _text_of(MAX_REASON_LENGTH)


_COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "create": create,
    "recover": recover,
}
