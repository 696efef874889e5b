"""A real PgBouncer (Debian's package) in transaction pooling mode, for tests."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import URL

from tests.support.processes import free_port

BINARY = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


# The startup parameters of the migration session (service/db/engines.py): a
# PgBouncer that ignores them lets a migration connection through.
MIGRATION_SESSION_PARAMETERS = (
    "lock_timeout,statement_timeout,tcp_keepalives_idle,tcp_keepalives_interval,"
    "tcp_keepalives_count,tcp_user_timeout,client_connection_check_interval"
)


@contextmanager
def pgbouncer(server: URL, folder: Path, *, ignore_parameters: str = "") -> Iterator[URL]:
    """PgBouncer in front of `server`; yields the same URL pointing at PgBouncer.
    `ignore_parameters`: startup parameters it accepts without passing them on."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "users.txt").write_text(f'"{server.username}" "{server.password}"\n')
    (folder / "pgbouncer.ini").write_text(
        f"""
[databases]
* = host={server.host} port={server.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {folder / "users.txt"}
pool_mode = transaction
admin_users = {server.username}
max_client_conn = 1000
default_pool_size = 20
ignore_startup_parameters = {",".join(filter(None, ["extra_float_digits", ignore_parameters]))}
logfile = {folder / "pgbouncer.log"}
pidfile = {folder / "pgbouncer.pid"}
"""
    )
    command = [BINARY, str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:
        # PgBouncer refuses to run as root.
        nobody = pwd.getpwnam("nobody")
        for path in folder.iterdir():
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
        command[1:1] = ["-u", "nobody"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, process)
        yield server.set(host="127.0.0.1", port=port)
    finally:
        process.terminate()
        process.wait(10)


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("pgbouncer did not listen in 15s")
