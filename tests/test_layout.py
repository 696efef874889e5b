"""The tests' own layout: what tests share lives in tests/support; no test
module imports conftest or another test module."""

from __future__ import annotations

import ast

from tests.support.processes import PROJECT_ROOT

TESTS = PROJECT_ROOT / "tests"


def imported_modules(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def test_no_test_module_imports_conftest_or_another_test_module() -> None:
    wrong = {
        f"{path.relative_to(PROJECT_ROOT)}: {name}"
        for path in TESTS.rglob("*.py")
        for name in imported_modules(ast.parse(path.read_text(), filename=str(path)))
        if name.split(".")[-1] == "conftest" or name.split(".")[-1].startswith("test_")
    }
    assert wrong == set()
