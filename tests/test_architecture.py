"""The shape of the code, read from its imports: routers parse, authorise,
call a domain core and shape the document; the rules and the storage of each
product live once, below them, where both API dialects and the operator's
command line reach them.

- No router imports another router (the two packages that gather the routers
  of a dialect, service/api and service/api/sdk, are not routers themselves).
- The operator's command line imports no router.
- The domain cores (service/accounts, service/configs, service/flags and the
  pieces they share) import nothing of HTTP: no FastAPI, no Starlette, nothing
  of service.api, directly or through another module of the service.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

from tests.support.processes import PROJECT_ROOT

SERVICE = PROJECT_ROOT / "service"
GATHERERS = {"service.api", "service.api.sdk"}
CORES = ("service.accounts", "service.configs", "service.flags")
SHARED = ("service.problems", "service.storage", "service.quotas")
HTTP = ("fastapi", "starlette", "service.api")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in SERVICE.rglob("*.py")}


@cache
def _imports(module: str) -> frozenset[str]:
    """The modules `module` imports (any depth in its body, `from x import y`
    counted as x.y where x.y is a module of the service, else as x)."""
    tree = ast.parse(MODULES[module].read_text())
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return frozenset(found)


def _is_router(module: str) -> bool:
    """A module that makes a router of its own (`router = ...`), with FastAPI's
    APIRouter or a dialect's (service/api/routers.py)."""
    return (
        module not in GATHERERS
        and re.search(r"^router = ", MODULES[module].read_text(), re.M) is not None
    )


ROUTERS = sorted(module for module in MODULES if _is_router(module))


def _reach(module: str) -> set[str]:
    """Every module of the service `module` imports, directly or through others."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        for imported in _imports(todo.pop()):
            if imported in MODULES and imported not in seen:
                seen.add(imported)
                todo.append(imported)
    return seen


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def test_the_routers_are_found() -> None:
    # The check below would pass vacuously if no router were found.
    assert {"service.api.configs", "service.api.sdk.configs", "service.api.flags"} <= set(ROUTERS)


@pytest.mark.parametrize("router", ROUTERS)
def test_no_router_imports_another_router(router: str) -> None:
    others = sorted(m for m in _imports(router) if m in ROUTERS and m != router)
    assert not others, f"{router} imports the routers {others}: move what it needs into a core"


def test_the_operator_command_line_imports_no_router() -> None:
    routers = sorted(m for m in _reach("service.operator") if m in ROUTERS)
    assert not routers, f"service.operator reaches the routers {routers}"


@pytest.mark.parametrize("core", CORES)
def test_the_cores_exist(core: str) -> None:
    assert core in MODULES, f"no package {core}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _within(m, CORES + SHARED)))
def test_a_core_imports_nothing_of_http(module: str) -> None:
    reached = {module, *_reach(module)}
    offending = sorted(
        (source, imported)
        for source in reached
        for imported in _imports(source)
        if _within(imported, HTTP)
    )
    assert not offending, f"{module} reaches HTTP through {offending}"
