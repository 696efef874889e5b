"""The command line of alembic-lockstep.

    python -m alembic_lockstep [--settings MODULE:NAME] COMMAND ...

    serve APP [--factory] [--host H] [--port P] [--workers N]
                      serve an ASGI app under uvicorn's supervisor; exit 4 when
                      a worker's migration failed (the `runner` extra)
    migrate           bring the schema to head once and exit
    status            where the schema stands
    history           the audit trail of applied steps
    verify            applied revisions edited after they ran?
    heads             the heads manifest up to date?
    lint              squawk on each revision's SQL (the `lint` extra; no database)

The configuration: --settings (or ALEMBIC_LOCKSTEP_SETTINGS) names a callable
of the application, `package.module:name`, that returns its MigrationConfig,
the same one its lifespan builds (a MigrationConfig itself also does).
Without it, the environment:

    ALEMBIC_LOCKSTEP_DATABASE_URL     the direct PostgreSQL URL (required but
                                      for heads and lint)
    ALEMBIC_LOCKSTEP_ALEMBIC_CONFIG   alembic.ini (default: ./alembic.ini)
    ALEMBIC_LOCKSTEP_LOCK_NAME        the lock name (default: schema-migrations)
    ALEMBIC_LOCKSTEP_APPLICATION_NAME the sessions' name (default: fastapi-app)

Exit statuses: 0 done; 1 failed (a migration, an edited revision, a stale
manifest, a lint finding, an unreachable database); 2 usage or configuration;
serve: 3 a worker failed to start, 4 a worker's migration failed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from alembic_lockstep import cli

EXIT_FAILED = 1
EXIT_USAGE = 2
SETTINGS_VARIABLE = "ALEMBIC_LOCKSTEP_SETTINGS"
ENVIRONMENT = "ALEMBIC_LOCKSTEP_"
PROGRAM = "python -m alembic_lockstep"


class ConfigurationError(Exception):
    """The settings could not be found or built."""


def main(arguments: Sequence[str] | None = None) -> int:
    parser = _parser()
    options = parser.parse_args(arguments)
    if options.command == "serve":
        return _serve(options)
    if options.db_command is not None:
        # status, history, ...: the `db` commands of cli.py, flat here.
        options.command = "db"
    try:
        if not cli.needs_database(options):
            return cli.run_offline(
                options, _alembic_config(options.settings), f"{PROGRAM} heads --write"
            )
        config = _configuration(options.settings)
    except (ConfigurationError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    from alembic_lockstep.connections import create_reads_engine
    from alembic_lockstep.errors import describe_error
    from alembic_lockstep.logs import make_visible

    make_visible(config.log_format)
    try:
        return asyncio.run(
            _cancel_on_sigterm(cli.run(options, config, lambda: create_reads_engine(config)))
        )
    except OSError as error:
        print(f"error: {describe_error(error)}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as error:
        from sqlalchemy.exc import DBAPIError

        if not isinstance(error, DBAPIError):
            raise
        print(f"error: {describe_error(error)}", file=sys.stderr)
        return EXIT_FAILED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--settings",
        metavar="MODULE:NAME",
        default=os.environ.get(SETTINGS_VARIABLE) or None,
        help=f"the application's MigrationConfig, or a callable returning it "
        f"(default: {SETTINGS_VARIABLE}, else the {ENVIRONMENT}* variables)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve an app under uvicorn's supervisor; exit 4 when a worker's migration failed",
        description="Serve APP (module:attribute) with uvicorn. Exit status: 0 after "
        "SIGTERM or SIGINT, 3 when a worker failed to start, 4 when a worker's migration "
        "failed (plain `uvicorn --workers N` exits 0 then).",
    )
    serve.add_argument("app", metavar="APP", help="the ASGI app, module:attribute")
    serve.add_argument(
        "--factory", action="store_true", help="APP is a callable that returns the app"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="port (default: 8000)")
    serve.add_argument("--workers", type=_workers, default=1, help="worker processes (default: 1)")
    migrate = commands.add_parser("migrate", help=cli.HELP["migrate"])
    cli.add_migrate_arguments(migrate)
    migrate.set_defaults(db_command=None)
    for name, add_arguments in cli.ARGUMENTS.items():
        command = commands.add_parser(
            name, help=cli.HELP[name], description=cli.DESCRIPTIONS.get(name, cli.HELP[name])
        )
        add_arguments(command)
        # The shape cli.run and cli.run_offline read: `db NAME`.
        command.set_defaults(db_command=name)
    return parser


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def _workers(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 1024:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a whole number, 1 to 1024")
    return int(text)


def _loaded(reference: str) -> Any:
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"{reference!r}: expected module:name")
    # The application is found the way `uvicorn app:app` finds it: from here.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as error:
        raise ConfigurationError(f"{reference!r}: {error}") from None
    return found


def _configuration(settings: str | None) -> Any:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from alembic_lockstep.config import MigrationConfig

    if settings is not None:
        found = _loaded(settings)
        config = found() if callable(found) and not isinstance(found, type) else found
        if not isinstance(config, MigrationConfig):
            raise ConfigurationError(
                f"{settings!r} gave {type(config).__name__}, not a MigrationConfig"
            )
        return config
    raw_url = os.environ.get(f"{ENVIRONMENT}DATABASE_URL")
    if not raw_url:
        raise ConfigurationError(
            f"no settings: pass --settings MODULE:NAME, or set {SETTINGS_VARIABLE} "
            f"or {ENVIRONMENT}DATABASE_URL"
        )
    try:
        url = make_url(raw_url)
    except ArgumentError:
        # The URL itself may hold a password: not repeated.
        raise ConfigurationError(f"{ENVIRONMENT}DATABASE_URL is not a database URL") from None
    if url.drivername in {"postgresql", "postgres"}:
        url = url.set(drivername="postgresql+asyncpg")
    return MigrationConfig(
        migration_url=url,
        alembic_config=_alembic_config(None),
        write_heads_command=f"{PROGRAM} heads --write",
        resume_command=f"{PROGRAM} migrate --resume --reason TEXT",
        lock_name=os.environ.get(f"{ENVIRONMENT}LOCK_NAME") or "schema-migrations",
        application_name=os.environ.get(f"{ENVIRONMENT}APPLICATION_NAME") or "fastapi-app",
        setting_names={
            "migration_url": f"{ENVIRONMENT}DATABASE_URL",
            "lock_name": f"{ENVIRONMENT}LOCK_NAME",
            "application_name": f"{ENVIRONMENT}APPLICATION_NAME",
        },
    )


def _alembic_config(settings: str | None) -> Path:
    if settings is not None:
        return Path(_configuration(settings).alembic_config)
    return Path(os.environ.get(f"{ENVIRONMENT}ALEMBIC_CONFIG") or "alembic.ini")


def _serve(options: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        print("error: serve needs uvicorn: install alembic-lockstep[runner]", file=sys.stderr)
        return EXIT_USAGE
    from alembic_lockstep.config import LogFormat
    from alembic_lockstep.logs import make_visible
    from alembic_lockstep.runner import serve

    make_visible(LogFormat.TEXT)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    config = uvicorn.Config(
        options.app,
        factory=options.factory,
        host=options.host,
        port=options.port,
        workers=options.workers,
    )
    return serve(config)


async def _cancel_on_sigterm(work: Coroutine[Any, Any, int]) -> int:
    """Run `work`; SIGTERM or SIGINT cancels it (rolling back the running revision)."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        print("stopped by a signal", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
