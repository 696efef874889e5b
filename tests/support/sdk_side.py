"""The smplkit SDK's side of the contract tests, run by tests/support/sdk_namespace.py
inside a network and mount namespace of its own (as root):

    python sdk_side.py SCENARIO SOCKET PORT DOMAIN

It brings the loopback interface up, maps the SDK's host names to 127.0.0.1 in
a private /etc/hosts, relays 127.0.0.1:PORT to the server's unix socket, then
runs the scenario with the SDK (SDK_API_KEY, SDK_BASE_DOMAIN) and prints its
report as the last line of JSON: what it saw, and every address the process
looked up and connected to (an audit hook). A failed check raises.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

HOST_NAMES = ("app", "config", "flags")
# SDK batches of discovery are 50; this many configs need two pages of 1,000.
MANY = 1_100
LOOKUPS: set[str] = set()
PEERS: set[str] = set()


def _audit(event: str, arguments: tuple[Any, ...]) -> None:
    if event == "socket.getaddrinfo":
        host = arguments[0]
        # anyio looks names up as bytes.
        LOOKUPS.add(host.decode() if isinstance(host, bytes) else str(host))
    elif event == "socket.connect" and isinstance(arguments[1], tuple):
        PEERS.add(str(arguments[1][0]))


def enter_namespace(domain: str) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with open("/etc/hosts") as current:
        hosts = current.read()
    names = " ".join(f"{name}.{domain}" for name in HOST_NAMES)
    with tempfile.NamedTemporaryFile("w", suffix=".hosts", delete=False) as private:
        private.write(f"{hosts.rstrip()}\n127.0.0.1 {names}\n")
    subprocess.run(["mount", "--bind", private.name, "/etc/hosts"], check=True)


def start_relay(port: int, socket_path: str) -> None:
    """127.0.0.1:`port` carried to the unix socket, on a thread of its own."""
    ready = threading.Event()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_unix_connection(socket_path)
        await asyncio.gather(
            pipe(reader, upstream_writer), pipe(upstream_reader, writer), return_exceptions=True
        )

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        ready.set()
        async with server:
            await server.serve_forever()

    threading.Thread(target=asyncio.run, args=(serve(),), daemon=True).start()
    if not ready.wait(10):
        raise RuntimeError("the relay did not start")


def eventually(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {condition}")


def stream_connected(client: Any) -> bool:
    """Whether the client's event stream is up (a private attribute: the SDK
    has no public way to say it, short of wait_until_ready, which needs flags)."""
    stream = client._events_manager
    return stream is not None and stream.connection_status == "connected"


def client_settings() -> dict[str, Any]:
    return {
        "base_domain": os.environ["SDK_BASE_DOMAIN"],
        "scheme": "http",
        "environment": "production",
        "service": "contract",
        "telemetry": False,
    }


def crud() -> dict[str, Any]:
    """ConfigClient CRUD, a duplicate, a parent in use, and the live surface's
    resolution (subscribe, get_value) with objects merged deeply."""
    from smplkit import SmplClient
    from smplkit.errors import ConflictError, NotFoundError

    with SmplClient(os.environ["SDK_API_KEY"], **client_settings()) as client:
        root = client.config.new("contract-root", name="Contract root", description="shared")
        root.set_json("db", {"host": "db.internal", "pool": {"min": 1, "max": 5}})
        root.set_string("region", "eu", description="where we run")
        root.set_string("region", "us", environment="production")
        root.save()
        assert root.created_at is not None
        child = client.config.new("contract-child", parent=root)
        child.set_json("db", {"pool": {"max": 10}})
        child.set_number("timeout", 3)
        child.save()
        try:
            client.config.new("contract-root").save()
            raise AssertionError("a duplicate key was created")
        except ConflictError:
            pass
        fetched = client.config.get("contract-child")
        assert fetched.parent == "contract-root", fetched.parent
        fetched.set_number("timeout", 4)
        fetched.save()
        assert client.config.get("contract-child").items["timeout"] == 4
        proxy = client.config.subscribe("contract-child")
        resolved = dict(proxy)
        assert resolved["db"] == {"host": "db.internal", "pool": {"min": 1, "max": 10}}, resolved
        assert resolved["region"] == "us", resolved
        assert client.config.get_value("contract-child", "timeout") == 4
        try:
            client.config.delete("contract-root")
            raise AssertionError("a parent in use was deleted")
        except ConflictError:
            pass
        client.config.delete("contract-child")
        client.config.delete("contract-root")
        try:
            client.config.get("contract-child")
            raise AssertionError("a deleted config was found")
        except NotFoundError:
            pass
        return {"resolved": resolved}


def many() -> dict[str, Any]:
    """Discovery of more than 1,000 configs, then every page of the list."""
    from smplkit import SmplClient

    with SmplClient(os.environ["SDK_API_KEY"], **client_settings()) as client:
        for number in range(MANY):
            key = f"discovered-{number:05d}"
            client.config.register_config(key, service="contract", environment="production")
            client.config.register_config_item(key, "limit", "NUMBER", number)
        client.config.flush()

        def listed() -> list[str]:
            keys: list[str] = []
            page = 1
            while True:
                rows = client.config.list(page_number=page, page_size=1000)
                keys += [str(config.id) for config in rows]
                if len(rows) < 1000:
                    break
                page += 1
            return keys

        # Discovery's batches land in the background: list once all have, since
        # pages are offsets (a config created while a client pages shifts them).
        eventually(lambda: sum(key.startswith("discovered-") for key in listed()) >= MANY)
        keys = listed()
        assert keys == sorted(keys), "the pages are not in key order"
        assert len(keys) == len(set(keys)), "the pages overlap"
        assert client.config.get("discovered-00042").items == {"limit": 42}
        # Mid-batch: an item declared right after its config filled a batch of 50 can
        # reach the server after the config was created (then, as upstream, ignored).
        assert client.config.get_value("discovered-01075", "limit") == 1075
        return {"listed": len(keys)}


async def crud_async() -> dict[str, Any]:
    from smplkit import AsyncSmplClient

    async with AsyncSmplClient(os.environ["SDK_API_KEY"], **client_settings()) as client:
        config = client.config.new("contract-async", name="Async")
        config.set_boolean("enabled", True)
        await config.save()
        assert (await client.config.get("contract-async")).items == {"enabled": True}
        config.set_boolean("enabled", False)
        await config.save()
        assert await client.config.get_value("contract-async", "enabled") is False
        listed = [found.id for found in await client.config.list()]
        await client.config.delete("contract-async")
        return {"listed": listed}


def live() -> dict[str, Any]:
    """on_change fires for a write made elsewhere (the test writes once this
    prints READY: the stream is connected, so the server has registered it)."""
    from smplkit import SmplClient

    with SmplClient(os.environ["SDK_API_KEY"], **client_settings()) as client:
        config = client.config.new("live", name="Live")
        config.set_number("timeout", 3)
        config.save()
        changes: list[Any] = []
        client.config.on_change("live", item_key="timeout")(changes.append)
        eventually(lambda: stream_connected(client))
        print("READY", flush=True)
        eventually(lambda: changes)
        change = changes[0]
        return {
            "old": change.old_value,
            "new": change.new_value,
            "source": change.source,
            "value": client.config.get_value("live", "timeout"),
        }


def platform() -> dict[str, Any]:
    """Environments through the platform client, settings through the account client."""
    from smplkit import SmplClient
    from smplkit.errors import ConflictError, NotFoundError

    with SmplClient(os.environ["SDK_API_KEY"], **client_settings()) as client:
        environments = client.platform.environments
        created = environments.new("qa", name="QA", color="#abc")
        created.save()
        assert created.created_at is not None
        try:
            environments.new("qa", name="Again").save()
            raise AssertionError("a duplicate environment was created")
        except ConflictError:
            pass
        fetched = environments.get("qa")
        fetched.color = "#11223344"
        fetched.save()
        color = environments.get("qa").color
        listed = sorted(str(environment.id) for environment in environments.list())
        environments.delete("qa")
        try:
            environments.get("qa")
            raise AssertionError("a deleted environment was found")
        except NotFoundError:
            pass
        settings = client.account.settings.get()
        settings.environment_order = ["production", "staging", "development"]
        settings.save()
        order = client.account.settings.get().environment_order
        return {"color": str(color.hex if color else None), "listed": listed, "order": order}


def _flag_settings() -> dict[str, Any]:
    # Telemetry on, as the SDK ships: its metrics go to POST /api/v1/metrics/bulk.
    return {**client_settings(), "telemetry": True}


def flags() -> dict[str, Any]:
    """The SDK's flags quick start and management: flags made with rules,
    wait_until_ready(), values under set_context, a constrained flag refusing
    a value outside its set, discovery of a declared flag, list and delete."""
    from smplkit import Context, FlagValue, Rule, SmplClient
    from smplkit.errors import ConflictError, NotFoundError, ValidationError

    with SmplClient(os.environ["SDK_API_KEY"], **_flag_settings()) as client:
        checkout = client.flags.new_boolean_flag("checkout-v2", default=False)
        checkout.add_rule(
            Rule("Pro plans", environment="production").when("user.plan", "==", "pro").serve(True)
        )
        checkout.save()
        colours = [FlagValue(name="Light", value="light"), FlagValue(name="Dark", value="dark")]
        theme = client.flags.new_string_flag("theme", default="light", values=colours)
        theme.add_rule(
            Rule("Beta users", environment="production")
            .when("user.beta", "==", True)
            .when("account.region", "in", ["eu", "us"])
            .serve("dark")
        )
        theme.save()
        outside = client.flags.new_string_flag("outside", default="light", values=colours)
        outside.add_rule(Rule("No", environment="production").when({"!": [False]}).serve("blue"))
        try:
            outside.save()
            raise AssertionError("a value outside the flag's values was saved")
        except ValidationError:
            pass
        try:
            client.flags.new_boolean_flag("checkout-v2", default=True).save()
            raise AssertionError("a duplicate flag was created")
        except ConflictError:
            pass
        client.wait_until_ready()
        # Declared in code: discovery registers it (buffered; flushed here at once).
        client.flags.number_flag("discovered-limit", default=10)
        client.flags.flush()
        new_checkout = client.flags.boolean_flag("checkout-v2", default=False)
        dark_mode = client.flags.string_flag("theme", default="light")
        pro = [
            Context("user", "u1", {"plan": "pro", "beta": True}),
            Context("account", "a1", {"region": "eu"}),
        ]
        free = [
            Context("user", "u2", {"plan": "free", "beta": True}),
            Context("account", "a2", {"region": "apac"}),
        ]
        with client.set_context(pro):
            for_pro = (new_checkout.get(), dark_mode.get())
        with client.set_context(free):
            for_free = (new_checkout.get(), dark_mode.get())
        discovered = client.flags.get("discovered-limit")
        listed = sorted(str(flag.id) for flag in client.flags.list())
        client.flags.delete("theme")
        try:
            client.flags.get("theme")
            raise AssertionError("a deleted flag was found")
        except NotFoundError:
            pass
        return {
            "pro": list(for_pro),
            "free": list(for_free),
            "listed": listed,
            "discovered": [discovered.type, discovered.default],
        }


async def flags_async() -> dict[str, Any]:
    """The same quick start with AsyncSmplClient."""
    from smplkit import AsyncSmplClient, Context, Rule

    async with AsyncSmplClient(os.environ["SDK_API_KEY"], **_flag_settings()) as client:
        flag = client.flags.new_boolean_flag("async-flag", default=False)
        flag.add_rule(
            Rule("Staff", environment="production").when("user.staff", "==", True).serve(True)
        )
        await flag.save()
        await client.wait_until_ready()
        handle = client.flags.boolean_flag("async-flag", default=False)
        staff = handle.get(context=[Context("user", "s1", {"staff": True})])
        guest = handle.get(context=[Context("user", "g1", {"staff": False})])
        listed = [str(found.id) for found in await client.flags.list()]
        await client.flags.delete("async-flag")
        return {"staff": staff, "guest": guest, "listed": listed}


def flags_live() -> dict[str, Any]:
    """on_change fires for a flag written elsewhere, and the new rules serve."""
    from smplkit import Context, SmplClient

    with SmplClient(os.environ["SDK_API_KEY"], **_flag_settings()) as client:
        client.flags.new_boolean_flag("live-flag", default=False).save()
        changes: list[Any] = []
        client.flags.on_change("live-flag")(changes.append)
        client.wait_until_ready()
        handle = client.flags.boolean_flag("live-flag", default=False)
        before = handle.get(context=[Context("user", "u1", {"plan": "pro"})])
        print("READY", flush=True)
        eventually(lambda: changes)
        after = handle.get(context=[Context("user", "u1", {"plan": "pro"})])
        return {"before": before, "after": after, "source": changes[0].source}


SCENARIOS: dict[str, Callable[[], dict[str, Any]]] = {
    "crud": crud,
    "many": many,
    "crud_async": lambda: asyncio.run(crud_async()),
    "live": live,
    "platform": platform,
    "flags": flags,
    "flags_async": lambda: asyncio.run(flags_async()),
    "flags_live": flags_live,
}


def main() -> None:
    scenario, socket_path, port, domain = sys.argv[1:5]
    enter_namespace(domain)
    start_relay(int(port), socket_path)
    sys.addaudithook(_audit)
    report = SCENARIOS[scenario]()
    print(json.dumps({**report, "lookups": sorted(LOOKUPS), "peers": sorted(PEERS)}))


if __name__ == "__main__":
    main()
