"""A PostgreSQL server with TLS on, for tests, with a certificate for localhost
and 127.0.0.1 signed by a CA made for the run (and another CA that signed
nothing, to be refused).

The embedded PostgreSQL is built without TLS, so this server runs Debian's
PostgreSQL binaries (the package CI installs, .ci/run), in a folder of its own,
as the `postgres` system user when the tests run as root.
"""

from __future__ import annotations

import os
import pwd
import secrets
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import URL

from tests.support.configs import eventually
from tests.support.processes import free_port

BINARIES = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
_SERVER_USER = "postgres"


@dataclass(frozen=True)
class TlsServer:
    admin: URL
    ca: Path
    other_ca: Path


def _openssl(folder: Path, *arguments: str) -> None:
    subprocess.run(["openssl", *arguments], cwd=folder, check=True, capture_output=True)


def _certificates(folder: Path) -> None:
    folder.mkdir(parents=True)
    for ca in ("ca", "other-ca"):
        _openssl(
            folder, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-subj", f"/CN=platform-service test {ca}",
        )  # fmt: skip
    _openssl(
        folder, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
        "-out", "server.csr", "-subj", "/CN=localhost",
    )  # fmt: skip
    (folder / "names.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl(
        folder, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "names.ext", "-out", "server.crt",
    )  # fmt: skip


def _as_server_user() -> dict[str, Any]:
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam(_SERVER_USER)
    return {"user": user.pw_uid, "group": user.pw_gid}


def _hand_over(*paths: Path) -> None:
    """Give files to the server's user (PostgreSQL refuses a key others can read)."""
    owner = _as_server_user()
    for path in paths:
        if owner:
            os.chown(path, owner["user"], owner["group"])


def _initialise(folder: Path, password: str) -> Path:
    data = folder / "data"
    password_file = folder / "password"
    password_file.write_text(password + "\n")
    _hand_over(folder, password_file)
    subprocess.run(
        [str(BINARIES[-1] / "initdb"), "-D", str(data), "-U", "postgres",
         "--pwfile", str(password_file), "--auth", "scram-sha-256", "-E", "UTF8",
         "--no-instructions"],
        check=True, capture_output=True, **_as_server_user(),
    )  # fmt: skip
    password_file.unlink()
    return data


@contextmanager
def _running(folder: Path, data: Path, certificates: Path, port: int) -> Iterator[None]:
    for name in ("server.crt", "server.key"):
        (data / name).write_bytes((certificates / name).read_bytes())
        (data / name).chmod(0o600)
        _hand_over(data / name)
    server = subprocess.Popen(
        [str(BINARIES[-1] / "postgres"), "-D", str(data), "-p", str(port),
         "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={folder}",
         "-c", "ssl=on", "-c", "ssl_cert_file=server.crt", "-c", "ssl_key_file=server.key"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **_as_server_user(),
    )  # fmt: skip
    try:
        yield
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)


async def _accepting(url: URL) -> bool:
    try:
        connection = await asyncpg.connect(
            url.set(drivername="postgresql").render_as_string(hide_password=False)
        )
    except (OSError, asyncpg.PostgresError):
        return False
    await connection.close()
    return True


@asynccontextmanager
async def tls_server(folder: Path) -> AsyncIterator[TlsServer]:
    certificates = folder / "certificates"
    _certificates(certificates)
    server_folder = folder / "server"
    server_folder.mkdir()
    password = secrets.token_hex(16)
    data = _initialise(server_folder, password)
    port = free_port()
    admin = URL.create("postgresql+asyncpg", "postgres", password, "127.0.0.1", port, "postgres")
    with _running(server_folder, data, certificates, port):
        await eventually(lambda: _accepting(admin), within=30, interval=0.1)
        yield TlsServer(admin, certificates / "ca.crt", certificates / "other-ca.crt")
