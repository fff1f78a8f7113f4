"""Every config in configs/ goes through Dagster's own defs-folder loader, as `dagster dev` does.

Each invalid config states in its header the exact error text and the field it must name;
the error must also name the file (with its line, where Dagster knows it).
"""

import sys
import traceback
import uuid
from pathlib import Path

import dagster as dg
import pytest

CONFIGS = Path(__file__).parent / "configs"


def _load_as_project(config: Path, root: Path) -> dg.Definitions:
    module = f"ip_corpus_{uuid.uuid4().hex[:8]}"
    defs_dir = root / module / "defs" / config.stem
    defs_dir.mkdir(parents=True)
    (root / module / "__init__.py").write_text("")
    (root / module / "defs" / "__init__.py").write_text("")
    (defs_dir / "defs.yaml").write_text(config.read_text())
    (root / module / "defs" / "platform.py").write_text(
        "import dagster as dg\nfrom integration_platform.definitions import platform_resources\n\n"
        "defs = dg.Definitions(resources=platform_resources())\n"
    )
    (root / "pyproject.toml").write_text(
        f'[tool.dg]\ndirectory_type = "project"\n[tool.dg.project]\nroot_module = "{module}"\n'
    )
    sys.path.insert(0, str(root))
    try:
        return dg.load_from_defs_folder(path_within_project=root)
    finally:
        sys.path.remove(str(root))


def _header(config: Path, field: str) -> str:
    for line in config.read_text().splitlines():
        if line.startswith(f"# {field}: "):
            return line.split(": ", 1)[1]
    raise AssertionError(f"{config.name} has no '# {field}:' header")


@pytest.mark.parametrize("config", sorted((CONFIGS / "invalid").glob("*.yaml")), ids=lambda p: p.stem)
def test_invalid_config_fails_at_load_naming_file_field_and_allowed_values(config: Path, tmp_path: Path) -> None:
    with pytest.raises(Exception) as failure:
        _load_as_project(config, tmp_path)
    text = "".join(traceback.format_exception(failure.value))
    assert _header(config, "error") in text
    assert _header(config, "field") in text, "the error names the field by its full path"
    assert f"{config.stem}/defs.yaml" in text


@pytest.mark.parametrize("config", sorted((CONFIGS / "valid").glob("*.yaml")), ids=lambda p: p.stem)
def test_valid_config_builds_the_declared_assets(config: Path, tmp_path: Path) -> None:
    defs = _load_as_project(config, tmp_path)
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert keys == set(_header(config, "assets").split())


def test_yaml_owners_and_tags_reach_the_assets_beside_the_default_tags(tmp_path: Path) -> None:
    """Dagster's post_processing adds owners and tags; every stream asset keeps the platform's own
    tags (layer, source, write disposition), so the catalog filters by layer."""
    defs = _load_as_project(CONFIGS / "valid" / "sql_attributes.yaml", tmp_path)
    graph = defs.resolve_asset_graph()
    specs = {key.to_user_string(): graph.get(key) for key in graph.get_all_asset_keys()}
    for key in ("crm/accounts", "crm/contacts", "warehouse/crm.accounts", "warehouse/crm.contacts"):
        layer = "warehouse" if key.startswith("warehouse/") else "lake"
        disposition = "merge" if key.endswith("accounts") else "replace"  # accounts has a cursor
        expected = {"tier": "gold", "layer": layer, "source": "crm", "write_disposition": disposition}
        assert {k: v for k, v in specs[key].tags.items() if not k.startswith("dagster/")} == expected, key
        owners = ["team:finance"] if key == "warehouse/crm.accounts" else ["team:sales-data"]  # a later target wins
        assert list(specs[key].owners) == owners, key
    warehouse = dg.AssetSelection.from_string("tag:layer=warehouse").resolve(graph)
    assert {k.to_user_string() for k in warehouse} == {"warehouse/crm.accounts", "warehouse/crm.contacts"}
