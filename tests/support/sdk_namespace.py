"""Run the smplkit SDK against a test server from a network and mount
namespace of its own (docs/sdk.md: how the contract tests point
the SDK at the server without changing the machine).

The SDK builds its addresses as `{scheme}://config.{base_domain}` and
`{scheme}://app.{base_domain}`. The SDK's process runs under `unshare --net
--mount` (root): its network has only a loopback interface, its /etc/hosts (a
bind mount private to it) maps those names to 127.0.0.1, and a relay inside it
carries 127.0.0.1:PORT to a unix socket, which crosses network namespaces. On
the test's side another relay carries that socket to the server's TCP port. So
the SDK can reach the server and nothing else, and its audit hook records
every address it connected to.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from tests.support.processes import PROJECT_ROOT

SDK_SIDE = Path(__file__).with_name("sdk_side.py")
DOMAIN = "sdk.test"
# The SDK's side listens here, in its own namespace: any free port will do.
NAMESPACE_PORT = 8123


class _Forward(socketserver.BaseRequestHandler):
    """One connection from the unix socket, carried to the server's TCP port."""

    server: _UnixToTcp

    def handle(self) -> None:
        with socket.create_connection(("127.0.0.1", self.server.target_port)) as upstream:
            back = threading.Thread(target=_pipe, args=(upstream, self.request), daemon=True)
            back.start()
            _pipe(self.request, upstream)
            back.join(timeout=60)


class _UnixToTcp(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    # socketserver's default backlog (5) refuses the SDK's bursts of discovery
    # posts, each on a thread and a connection of its own.
    request_queue_size = 256

    def __init__(self, path: str, target_port: int):
        self.target_port = target_port
        super().__init__(path, _Forward)


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        with suppress(OSError):
            target.shutdown(socket.SHUT_WR)


@contextmanager
def unix_socket_to(port: int) -> Iterator[str]:
    """A unix socket whose connections reach 127.0.0.1:`port`."""
    with tempfile.TemporaryDirectory(prefix="sdk-relay-") as folder:
        path = os.path.join(folder, "server.sock")
        relay = _UnixToTcp(path, port)
        thread = threading.Thread(target=relay.serve_forever, daemon=True)
        thread.start()
        try:
            yield path
        finally:
            relay.shutdown()
            relay.server_close()
            thread.join(timeout=10)


def run_sdk(
    scenario: str,
    server_port: int,
    api_key: str,
    when_ready: Callable[[], None] | None = None,
    timeout: float = 300,
) -> dict[str, Any]:
    """Run a scenario of tests/support/sdk_side.py in the SDK's namespace; its
    report (it raises, and this fails, when the scenario failed). A scenario
    that prints READY waits for what `when_ready` does (a write elsewhere)."""
    with (
        unix_socket_to(server_port) as path,
        tempfile.TemporaryDirectory() as home,
        tempfile.TemporaryFile("w+") as errors,
    ):
        environment = {
            "PATH": os.environ["PATH"],
            # No ~/.smplkit, no SMPLKIT_* settings, no proxies: only what the scenario says.
            "HOME": home,
            "SDK_API_KEY": api_key,
            "SDK_BASE_DOMAIN": f"{DOMAIN}:{NAMESPACE_PORT}",
            "PYTHONPATH": str(PROJECT_ROOT),
        }
        command = ["unshare", "--net", "--mount", "--propagation", "private"]
        command += [sys.executable, str(SDK_SIDE), scenario, path, str(NAMESPACE_PORT), DOMAIN]
        with subprocess.Popen(
            # Standard error to a file: the SDK's warnings must never fill a pipe nobody reads.
            command,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        ) as process:
            timer = threading.Timer(timeout, process.kill)
            timer.start()
            try:
                lines = _read_lines(process, when_ready)
                returncode = process.wait()
            finally:
                timer.cancel()
        errors.seek(0)
        logged = errors.read()
    assert returncode == 0, "".join(lines)[-3000:] + logged[-5000:]
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def _read_lines(process: subprocess.Popen[str], when_ready: Callable[[], None] | None) -> list[str]:
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if line.strip() == "READY" and when_ready is not None:
            when_ready()
    return lines
