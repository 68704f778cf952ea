"""The shape of the code: the client package stands alone, server modules stay readable, and
the worker boundary carries typed messages only (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 400


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _top(module: str) -> str:
    return module.partition(".")[0]


def test_the_client_package_imports_nothing_from_the_server() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(n for n in _imports(path) if _top(n) == "server")
        for path in (ROOT / "holistream").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_server_module_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in (ROOT / "server").rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_worker_boundary_has_no_any() -> None:
    """The modules that cross the process boundary never name typing.Any (mypy also forbids it
    there: pyproject, disallow_any_explicit)."""
    for name in ("messages", "ipc", "pool", "process", "records"):
        source = (ROOT / "server" / "workers" / f"{name}.py").read_text()
        assert "Any" not in {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}
        assert "import Any" not in source and ", Any" not in source, name


def test_handlers_call_core_never_the_pool() -> None:
    for path in (ROOT / "server" / "http").glob("*.py"):
        assert "core.pool" not in path.read_text(), path.name
