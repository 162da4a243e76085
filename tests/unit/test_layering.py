"""The layers stay layers: what each module may import, checked on the source (ast), so a stray
import fails here instead of slowly tangling the package."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "server" / "fastseldon"

FRONTS = {"fastseldon.http", "fastseldon.grpc", "fastseldon.workers"}
ADAPTERS = {"fastseldon.seldon_protocol", "fastseldon.v2_protocol"}
ROUTES = {"fastseldon.app", "fastseldon.seldon_routes", "fastseldon.v2_routes", "fastseldon.graph.app", "fastseldon.registry"}

# module -> what it must not import (directly, at any level of the file)
RULES = {
    "service": FRONTS | ADAPTERS | ROUTES,
    "batching": FRONTS | ADAPTERS | ROUTES | {"fastseldon.service"},
    "runner": FRONTS | ADAPTERS | ROUTES,
    "steps": FRONTS | ADAPTERS | ROUTES | {"fastseldon.service"},
    "types": FRONTS | ADAPTERS | ROUTES | {"fastseldon.service"},
    "seldon_protocol": FRONTS | ROUTES | {"fastseldon.service"},
    "v2_protocol": FRONTS | ROUTES | {"fastseldon.service"},
    "graph/executor": FRONTS | ADAPTERS | ROUTES,
    "http": ADAPTERS | ROUTES | {"fastseldon.service", "fastseldon.codec"},
    "grpc": ADAPTERS | ROUTES | {"fastseldon.service", "fastseldon.codec"},
}


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("module", sorted(RULES))
def test_module_imports_nothing_from_the_layers_it_must_not_know(module):
    imported = imports_of(PACKAGE / f"{module}.py")
    banned = {name for name in imported if any(name == b or name.startswith(b + ".") for b in RULES[module])}
    assert not banned, f"fastseldon/{module}.py imports {sorted(banned)}"


def test_the_checker_sees_imports():
    """Guard the guard: a module known to import a front is seen doing so."""
    assert "fastseldon.http" in {n.split(".Request")[0] for n in imports_of(PACKAGE / "seldon_routes.py")}
