"""The container image, really built and run with podman (opt in: -m container).

1. builds a local Debian base image with debootstrap if there is none (no
   registry is reachable here), then the service image from the Dockerfile;
2. starts PostgreSQL on the host and three containers of the image against
   one empty database, all at once;
3. waits until every container's /readyz is 200, checks each revision was
   applied exactly once and that an API request is served;
4. stops the containers with SIGTERM and checks each exits 0 within ten seconds;
5. removes what it started, by id.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import URL

from tests.support.api import JSONAPI, document
from tests.support.postgres import connect, service_url
from tests.support.processes import OPERATOR_TOKEN, PROJECT_ROOT, free_port, wait_for
from tests.support.revisions import REVISIONS

pytestmark = [pytest.mark.container, pytest.mark.processes]

BASE_IMAGE = "localhost/debian-python:bookworm"
IMAGE = "localhost/platform-service:check"
REPLICAS = 3
# The image's WEB_CONCURRENCY (Dockerfile).
IMAGE_WORKERS = 2
CONTAINERS_CONF = """
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
log_driver = "k8s-file"
volumes = ["/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


@pytest.fixture(scope="module")
def podman_environment() -> Iterator[dict[str, str]]:
    if shutil.which("podman") is None:
        pytest.fail(
            "podman is not installed (.ci/run installs it: apt-get install podman buildah runc debootstrap)"
        )
    folder = Path(tempfile.mkdtemp(prefix="container-check-"))
    (folder / "containers.conf").write_text(CONTAINERS_CONF)
    yield {**os.environ, "CONTAINERS_CONF": str(folder / "containers.conf")}
    shutil.rmtree(folder, ignore_errors=True)


def podman(environment: dict[str, str], *arguments: str, timeout: float = 900) -> str:
    result = subprocess.run(
        ["podman", *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"podman {' '.join(arguments)}: {result.stderr[-4000:]}"
    return result.stdout.strip()


def podman_logs(environment: dict[str, str], container: str) -> str:
    """The container's output: podman logs replays its stdout and stderr separately."""
    result = subprocess.run(
        ["podman", "logs", container],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"podman logs {container}: {result.stdout[-4000:]}"
    assert result.stdout.strip(), f"podman logs {container} printed nothing"
    return result.stdout


def debian_mirror() -> str:
    """The Debian mirror this machine's apt already uses."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    match = (
        re.search(r"^URIs:\s*(\S+)", sources.read_text(), re.MULTILINE)
        if sources.exists()
        else None
    )
    assert match, "no Debian mirror configured in /etc/apt/sources.list.d/debian.sources"
    return match.group(1)


@pytest.fixture(scope="module")
def image(podman_environment: dict[str, str]) -> str:
    exists = subprocess.run(
        ["podman", "image", "exists", BASE_IMAGE], env=podman_environment, check=False
    )
    if exists.returncode != 0:
        rootfs = Path(tempfile.mkdtemp(prefix="debian-rootfs-"))
        try:
            subprocess.run(
                ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,python3-pip,ca-certificates",
                 "bookworm", str(rootfs), debian_mirror()],
                check=True, capture_output=True, timeout=900,
            )  # fmt: skip
            with subprocess.Popen(
                ["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE
            ) as tar:
                subprocess.run(
                    ["podman", "import", "-", BASE_IMAGE],
                    stdin=tar.stdout,
                    env=podman_environment,
                    check=True,
                    capture_output=True,
                )
            assert tar.returncode == 0
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)
    # The docker format keeps HEALTHCHECK, which the OCI format drops.
    build = ["build", "--format", "docker", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-t", IMAGE]
    podman(podman_environment, *build, str(PROJECT_ROOT))
    size = int(podman(podman_environment, "image", "inspect", "--format", "{{.Size}}", IMAGE))
    print(f"\nimage {IMAGE}: {size / 1e6:.0f} MB (on a {BASE_IMAGE} base)")
    return IMAGE


def test_image_holds_no_tests_caches_or_secrets(
    podman_environment: dict[str, str], image: str
) -> None:
    listing = podman(
        podman_environment,
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        image,
        "-c",
        "cd /app && find . -maxdepth 2 | sort",
    )
    entries = set(listing.split())
    assert {"./service", "./alembic", "./alembic.ini", "./settings.py"} <= entries
    for unwanted in (
        "./tests",
        "./.git",
        "./.venv",
        "./scripts",
        "./.ci",
        "./requirements-dev.txt",
    ):
        assert unwanted not in entries
    user = podman(podman_environment, "run", "--rm", "--entrypoint", "id", image, "-u")
    assert user == "10001"
    inspected = json.loads(podman(podman_environment, "image", "inspect", image))[0]
    assert inspected["Config"]["StopSignal"] == "SIGTERM"
    # podman shows the health check beside Config, docker inside it.
    healthcheck = inspected.get("Healthcheck") or inspected["Config"].get("Healthcheck")
    assert "/livez" in " ".join(healthcheck["Test"])


async def test_three_replicas_migrate_once_serve_and_stop_cleanly(
    podman_environment: dict[str, str], image: str, empty_database: URL
) -> None:
    # The database listens on the host's loopback; the containers share the host's network.
    ports = [free_port() for _ in range(REPLICAS)]
    ids: list[str] = []
    try:
        for port in ports:
            ids.append(
                podman(
                    podman_environment,
                    "run",
                    "-d",
                    "--network=host",
                    "-e",
                    f"DATABASE_URL={service_url(empty_database)}",
                    "-e",
                    f"PORT={port}",
                    "-e",
                    f"OPERATOR_TOKEN={OPERATOR_TOKEN}",
                    image,
                )
            )
        for port in ports:
            wait_for(partial(_ready, port), 120, f"the container on port {port} to be ready")
        # /readyz answers from one worker of a container; a request may reach
        # the other, which may still be finding the schema at head.
        for container in ids:
            wait_for(
                partial(_workers_at_head, podman_environment, container),
                120,
                f"both workers of container {container[:12]} at head",
            )

        connection = await connect(empty_database)
        audited = await connection.fetch(
            "SELECT revision, count(*) AS times FROM schema_migration_audit GROUP BY revision"
        )
        await connection.close()
        assert {row["revision"]: row["times"] for row in audited} == dict.fromkeys(REVISIONS, 1)

        response = httpx.post(
            f"http://127.0.0.1:{ports[1]}/v1/accounts",
            headers={"Authorization": f"Bearer {OPERATOR_TOKEN}", "Content-Type": JSONAPI},
            json=document(
                "accounts",
                {"name": "Container", "owner": {"email": "o@example.test", "role": "OWNER"}},
            ),
            timeout=10,
        )
        assert response.status_code == 201, response.text

        for container in ids:
            # SIGTERM, then SIGKILL after 10 s: exit code 0 and the lifespan's
            # shutdown message show it stopped on the SIGTERM (a kill is 137).
            podman(podman_environment, "stop", "--time", "10", container)
            state = json.loads(podman(podman_environment, "inspect", container))[0]["State"]
            logs = podman_logs(podman_environment, container)
            assert state["ExitCode"] == 0, logs
            assert "Application shutdown complete" in logs, logs[-3000:]
            assert "Traceback" not in logs
    finally:
        if ids:
            subprocess.run(
                ["podman", "rm", "--force", *ids],
                env=podman_environment,
                capture_output=True,
                check=False,
            )


def _workers_at_head(environment: dict[str, str], container: str) -> bool:
    """Whether every worker of the image (WEB_CONCURRENCY, 2) logged the
    schema at head: its JSON events, on the container's stderr."""
    logs = subprocess.run(
        ["podman", "logs", container],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    pids = set()
    for line in (logs.stdout + logs.stderr).splitlines():
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if str(event.get("message", "")).startswith("schema at head"):
            pids.add(event.get("pid"))
    return len(pids) >= IMAGE_WORKERS


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
