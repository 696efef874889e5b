"""Command line: `python -m service [serve|migrate|db status]`.

    python -m service [--host H] [--port P] [--workers N]   serve the API
    python -m service migrate [--timeout S]                 migrate to head once, then exit
    python -m service db status [--json]                    where the schema stands
    python -m service db history [--json] [--limit N]       the audit trail of applied steps
    python -m service db verify [--json]                    revisions edited after they ran?
    python -m service db lint [REVISION...] [--json]        squawk on each revision's SQL (no database)
    python -m service accounts recover ACCOUNT_ID --reason TEXT
                                                            a new OWNER key (operator, audited)

With DATABASE_URL unset, each starts the embedded PostgreSQL first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

from service.operator import add_accounts_commands
from settings import Settings, SettingsError, load_settings, masked

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STARTUP_FAILED = 3


def main(arguments: Sequence[str] | None = None) -> int:
    options = _parser().parse_args(arguments)
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    from service.observability.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    command = options.command or "serve"
    if command == "db" and options.db_command == "heads":
        from service.migrations.commands import heads_manifest

        return heads_manifest(settings, write=options.write)
    if command == "db" and options.db_command == "lint":
        from service.migrations.lint import lint_command

        return lint_command(
            settings.alembic_config,
            options.revisions,
            as_json=options.json,
            accepted=options.accepted,
            draft=options.draft,
        )
    try:
        return _run(command, settings, options)
    except EmbeddedDatabaseUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED


class EmbeddedDatabaseUnavailable(Exception):
    """DATABASE_URL is unset and the embedded PostgreSQL cannot serve instead."""


def _run(command: str, settings: Settings, options: argparse.Namespace) -> int:
    with _database(settings) as settings:
        if command == "serve":
            return _serve(settings, options)
        if command == "migrate":
            from service.migrations.commands import migrate

            return asyncio.run(_cancel_on_sigterm(migrate(settings, options.timeout)))
        if command == "accounts":
            from service.operator import run_accounts_command

            return run_accounts_command(settings, options)
        from service.migrations import commands

        if options.db_command == "history":
            return asyncio.run(
                commands.database_history(settings, as_json=options.json, limit=options.limit)
            )
        if options.db_command == "verify":
            return asyncio.run(commands.database_verify(settings, as_json=options.json))
        return asyncio.run(commands.database_status(settings, as_json=options.json))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port",
        type=_port,
        default=_from_environment("PORT", _port, 8000),
        help="port (default: PORT, else 8000)",
    )
    parser.add_argument(
        "--workers",
        type=_positive,
        default=_from_environment("WEB_CONCURRENCY", _positive, 1),
        help="worker processes (default: WEB_CONCURRENCY, else 1)",
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve the API (the default)")
    migrate = commands.add_parser("migrate", help="bring the schema to head once and exit")
    migrate.add_argument(
        "--timeout", type=float, default=None, help="give up (exit 1) after this many seconds"
    )
    database = commands.add_parser("db", help="database commands")
    database_commands = database.add_subparsers(dest="db_command", required=True)
    status = database_commands.add_parser("status", help="revision, heads, pending, lock holder")
    status.add_argument("--json", action="store_true", help="print JSON")
    history = database_commands.add_parser("history", help="the audit trail of applied steps")
    history.add_argument("--json", action="store_true", help="print JSON")
    history.add_argument(
        "--limit", type=_positive, default=50, help="how many steps (newest first)"
    )
    verify = database_commands.add_parser(
        "verify", help="compare applied revisions with their recorded checksums (exit 1 if edited)"
    )
    verify.add_argument("--json", action="store_true", help="print JSON")
    heads = database_commands.add_parser(
        "heads", help="check the heads manifest against the revision scripts (exit 1 if stale)"
    )
    heads.add_argument("--write", action="store_true", help="rewrite the manifest")
    heads.add_argument(
        "--after", metavar="FILE", help="the revision file just written (Alembic's post-write hook)"
    )
    _add_lint_parser(database_commands)
    add_accounts_commands(commands)
    return parser


def _add_lint_parser(database_commands: Any) -> None:
    lint = database_commands.add_parser(
        "lint",
        help="lint each revision's SQL with squawk (exit 1 on a finding not accepted)",
        description="Render each revision's upgrade offline and lint it with squawk; "
        "findings are accepted, with a reason, only in alembic/accepted.toml.",
    )
    lint.add_argument("revisions", nargs="*", metavar="REVISION", help="revisions (default: all)")
    lint.add_argument("--json", action="store_true", help="print JSON")
    lint.add_argument(
        "--accepted",
        type=Path,
        metavar="FILE",
        help="the accepted findings (default: accepted.toml beside the revisions)",
    )
    lint.add_argument(
        "--draft",
        type=Path,
        metavar="FILE",
        help="lint the revision in FILE, report only, exit 0 (Alembic's post-write hook)",
    )


def _from_environment(name: str, convert: Callable[[str], int], fallback: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return fallback
    try:
        return convert(raw)
    except argparse.ArgumentTypeError as error:
        print(f"error: invalid settings: {name}: {error}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a whole number, 1 or more")
    return int(text)


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[Settings]:
    """The configured database, or the embedded one when DATABASE_URL is unset."""
    if settings.database_url is not None:
        yield settings
        return
    from service.db.embedded import EmbeddedPostgres, EmbeddedPostgresError

    try:
        server = EmbeddedPostgres()
        url = server.start()
    except EmbeddedPostgresError as error:
        raise EmbeddedDatabaseUnavailable(
            f"DATABASE_URL is not set, and the embedded PostgreSQL cannot start: {error}"
        ) from None
    try:
        print(f"embedded PostgreSQL: {masked(url)} (data in {server.directory})", file=sys.stderr)
        # Worker processes read their settings from the environment.
        os.environ["DATABASE_URL"] = url.render_as_string(hide_password=False)
        yield load_settings()
    finally:
        server.stop()


def _serve(settings: Settings, options: argparse.Namespace) -> int:
    """Serve; the exit status: 0 after SIGTERM or SIGINT, 4 when the migration
    failed, 3 when a worker failed to start for another reason."""
    import uvicorn

    from service.http_protocol import PROTOCOL
    from service.workers import supervise

    # uvicorn re-raises the SIGTERM it handled once its graceful shutdown is done;
    # end with a normal exit instead, so the embedded database is stopped too.
    signal.signal(signal.SIGTERM, _exit_after_graceful_shutdown)
    # The workers size their connection pools against the server with it.
    os.environ["WEB_CONCURRENCY"] = str(options.workers)
    base = f"http://{options.host}:{options.port}"
    print(f"API: {base}/v1  docs: {base}/docs  readiness: {base}/readyz", file=sys.stderr)
    config = uvicorn.Config(
        "service.app:create_app",
        factory=True,
        host=options.host,
        port=options.port,
        workers=options.workers,
        log_level=settings.log_level.lower(),
        # The service logs each request itself, with its request id.
        access_log=False,
        timeout_graceful_shutdown=round(settings.graceful_shutdown_timeout),
        # httptools with bounds on heads, bodies, unread answers and connections.
        http=PROTOCOL,
    )
    if options.workers > 1:
        return supervise(config)
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    return 0 if server.started else EXIT_STARTUP_FAILED


def _exit_after_graceful_shutdown(signal_number: int, _: object) -> None:
    raise SystemExit(0)


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
