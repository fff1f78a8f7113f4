"""Refresh the cached state of every state-backed component under ``defs/`` (today: the tables
``SqlSource`` discovers for ``include``), without loading any definitions.

``python -m integration_platform.refresh_state`` (``make run`` and ``make dev`` run it first).
Each source is refreshed on its own: one whose database cannot be reached keeps its previous
state and is reported, the others are refreshed; the exit status is 1 when any failed.
Dagster's ``dg utils refresh-defs-state`` does the same job where the ``dg`` CLI is installed,
but deletes the previous state before it fetches the new one.
"""

import sys
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
from dagster.components.core.component_tree import ComponentTree
from dagster.components.utils.project_paths import get_local_state_path

from integration_platform.definitions import PROJECT_ROOT


def refresh(project_root: Path = PROJECT_ROOT) -> dict[str, str | None]:
    """``{state key: None (refreshed) or the error's class and text}`` for every state-backed
    component of the project at ``project_root``. Raises nothing for a source that is down."""
    tree = ComponentTree.for_project(project_root)
    outcome: dict[str, str | None] = {}
    for component in tree.get_all_components(of_type=dg.StateBackedComponent):  # type: ignore[type-abstract]
        key = component.defs_state_config.key
        try:
            component.write_state_to_path(get_local_state_path(key, tree.project_root))
            outcome[key] = None
        except (ValueError, OSError, sa.exc.SQLAlchemyError) as exc:
            outcome[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return outcome


def main() -> int:
    failed = 0
    for key, error in refresh().items():
        print(f"{key}: {'refreshed' if error is None else 'kept the previous state (' + error + ')'}")
        failed += error is not None
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
