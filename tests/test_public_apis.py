"""The service uses only public names of SQLAlchemy, asyncpg and uvicorn: a
private attribute (`._name`) or a private module or name imported from them may
change in any release, silently. The names are the libraries' own: every
`_name` their installed sources define or use as an attribute (.py and .pyx);
an attribute of that name read anywhere under service/ (but on `self` or
`cls`, the service's own objects) is a finding."""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[1] / "service"
LIBRARIES = ("sqlalchemy", "asyncpg", "uvicorn")
# Names SQLAlchemy documents as public although they start with an underscore
# (Row's tuple-like API: the underscore keeps them apart from column names).
DOCUMENTED_PUBLIC = {"_mapping", "_asdict", "_fields", "_t", "_tuple"}
_PRIVATE = re.compile(r"(?:\bdef\s+|\bclass\s+|\.)(_[A-Za-z][A-Za-z0-9_]*)\b")


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in DOCUMENTED_PUBLIC


@functools.cache
def library_private_names() -> set[str]:
    names: set[str] = set()
    for library in LIBRARIES:
        spec = importlib.util.find_spec(library)
        assert spec is not None, library
        assert spec.submodule_search_locations, library
        for root in spec.submodule_search_locations:
            for source in Path(root).rglob("*"):
                if source.suffix in {".py", ".pyx", ".pxd"}:
                    text = source.read_text(encoding="utf-8", errors="replace")
                    names.update(n for n in _PRIVATE.findall(text) if _is_private(n))
    return names


def private_uses(tree: ast.AST, library_names: set[str]) -> list[tuple[int, str]]:
    """(line, what) of each private name of the libraries `tree` uses."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in library_names:
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in {"self", "cls"}):
                found.append((node.lineno, f"attribute {node.attr}"))
        elif isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] in LIBRARIES:
                if any(_is_private(part) for part in parts):
                    found.append((node.lineno, f"module {node.module}"))
                found += [
                    (node.lineno, f"name {alias.name} of {node.module}")
                    for alias in node.names
                    if _is_private(alias.name)
                ]
        elif isinstance(node, ast.Import):
            found += [
                (node.lineno, f"module {alias.name}")
                for alias in node.names
                if alias.name.split(".")[0] in LIBRARIES
                and any(_is_private(part) for part in alias.name.split("."))
            ]
    return found


def test_the_scan_sees_the_known_private_names() -> None:
    # The names the driver statements once reached for: the scan knows them.
    names = library_private_names()
    assert {"_transaction", "_start_transaction", "_handle_exception"} <= names
    assert {"_handle_dbapi_exception", "_connection"} <= names
    uses = private_uses(ast.parse("adapter._transaction\nself._transaction"), names)
    assert uses == [(1, "attribute _transaction")]
    imported = "from sqlalchemy.engine import _x\nimport asyncpg._testbase\n"
    assert len(private_uses(ast.parse(imported), names)) == 2


def test_the_service_uses_no_private_name_of_sqlalchemy_asyncpg_or_uvicorn() -> None:
    names = library_private_names()
    findings = []
    for source in sorted(SERVICE.rglob("*.py")):
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
        findings += [
            f"{source.relative_to(SERVICE.parent)}:{line}: {what}"
            for line, what in private_uses(tree, names)
        ]
    assert findings == []
