"""The house rules of ARCHITECTURE.md, checked on the import statements of every module: the
core imports only the core; shared resources only the core and themselves; the Dagster layer
(``assets``) no kind; a kind (``sources/<kind>``) never another kind."""

import ast
from pathlib import Path

import pytest

import integration_platform

pytestmark = pytest.mark.fast
PACKAGE = Path(integration_platform.__file__).parent

#: Layer -> the layers its modules may import (a kind may import itself: its own folder).
ALLOWED = {
    "core": {"core"},
    "resources": {"core", "resources"},
    "assets": {"core", "resources", "assets"},
    "outbound": {"core", "resources", "assets", "outbound"},
    "orchestration": {"core", "resources", "assets", "orchestration"},
    "sources": {"core", "resources", "assets", "outbound"},
}


def _layer(parts: tuple[str, ...]) -> str:
    """``sources.rest`` for a kind, else the top folder (``core``, ``assets``, ...)."""
    return ".".join(parts[:2]) if parts[0] == "sources" and len(parts) > 1 else parts[0]


def _imports(path: Path) -> list[tuple[str, ...]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        found += [tuple(n.split(".")[1:]) for n in names if n.startswith("integration_platform.")]
    return found


def test_every_module_imports_only_what_its_layer_may() -> None:
    broken = []
    checked = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if len(parts) < 2 or parts[0] not in ALLOWED:
            continue  # definitions, demo, components (the registry) may import anything
        checked += 1
        own = _layer(parts)
        for target in _imports(path):
            layer = _layer(target)
            if layer != own and target[0] not in ALLOWED[parts[0]]:
                broken.append(f"{path.relative_to(PACKAGE)} imports integration_platform.{'.'.join(target)}")
    assert checked > 40
    assert not broken, "\n".join(broken)


def test_the_rule_catches_a_kind_importing_another() -> None:
    assert _layer(("sources", "rest", "client")) != _layer(("sources", "sql", "database"))
    assert "sources" not in ALLOWED["sources"] and "sources" not in ALLOWED["assets"]
