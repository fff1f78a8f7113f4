"""The definitions graph of the demo and of every valid config in the corpus matches its snapshot
(``snapshots/<name>.json``): asset keys, groups, kinds, dependencies, partitions, pools, checks,
jobs and their selections, schedules, sensors, resources.

A deliberate change is recorded with ``UPDATE_SNAPSHOTS=1 make test-fast`` and reviewed in the diff."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from integration_platform.definitions import defs
from integration_platform_tests.definitions_snapshot import graph
from integration_platform_tests.test_config_corpus import CONFIGS, _load_as_project

pytestmark = pytest.mark.fast
SNAPSHOTS = Path(__file__).parent / "snapshots"


def _compare(name: str, current: dict[str, object]) -> None:
    path = SNAPSHOTS / f"{name}.json"
    text = json.dumps(current, indent=1, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.write_text(text)
    assert path.exists(), f"no snapshot {path.name}: run with UPDATE_SNAPSHOTS=1 and review it"
    assert json.loads(path.read_text()) == json.loads(text), f"the definitions graph of {name} changed"


def test_demo_definitions_match_the_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHINOOK_DB_URL", raising=False)  # the demo needs no variable of its own
    demo = defs()
    _compare("demo", graph(demo))
    # The demo's drops are January 2021: no partition that cannot hold data, and a job to launch them.
    regions = demo.resolve_assets_def(dg.AssetKey(["covid", "regions"])).partitions_def
    assert regions is not None
    keys = regions.get_partition_keys()
    assert (keys[0], keys[-1], len(keys)) == ("2021-01-01", "2021-01-31", 31)
    assert demo.resolve_job_def("covid_regions") is not None
    assert demo.resolve_schedule_def("covid_regions_schedule").default_status == dg.DefaultScheduleStatus.STOPPED


def test_every_asset_has_its_own_label_in_the_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """The asset graph labels a node with the last part of its key alone (dagster-webserver's
    ``AssetNode``): a stream's lake and warehouse assets must not both show as ``invoice``."""
    monkeypatch.delenv("CHINOOK_DB_URL", raising=False)
    keys = list(defs().resolve_asset_graph().get_all_asset_keys())
    by_label: dict[str, list[str]] = {}
    for key in keys:
        by_label.setdefault(key.path[-1], []).append(key.to_user_string())
    assert {label: k for label, k in by_label.items() if len(k) > 1} == {}
    assert by_label["invoice"] == ["chinook/invoice"]
    assert by_label["chinook.invoice"] == ["warehouse/chinook.invoice"]


@pytest.mark.parametrize("config", sorted((CONFIGS / "valid").glob("*.yaml")), ids=lambda p: p.stem)
def test_corpus_definitions_match_the_snapshot(config: Path, tmp_path: Path) -> None:
    _compare(f"corpus_{config.stem}", graph(_load_as_project(config, tmp_path)))


def test_loading_the_code_location_imports_no_client_it_does_not_use() -> None:
    """Every process that runs a step loads the code location first: with the lake in a folder,
    neither dagster-aws (0.65 s of imports) nor boto3 is imported, nor the clients a step imports
    when it connects (psycopg, paramiko and cryptography, requests and oauthlib: about 0.2 s; SQLAlchemy,
    0.09 s, which the demo's SQLite source reaches only when it reads), and the UI still gets the
    component tree of ``defs/``. Measured once the demo's table discovery is cached (as after the first
    load of a clone, which discovers the tables through SQLAlchemy and writes the state): this
    process's own load below writes it if it is missing."""
    expected = len(defs().resolve_all_asset_keys())
    code = (
        "import sys\n"
        "import integration_platform.definitions as d\n"
        "built = d.defs()\n"
        "tree = built.component_tree\n"
        "clients = {'dagster_aws', 'boto3', 'botocore', 'psycopg', 'paramiko', 'cryptography', 'requests'}\n"
        "clients |= {'oauthlib', 'sqlalchemy'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & clients))\n"
        "print(tree is not None and tree.defs_module_path.name)\n"
        "print(len(built.resolve_all_asset_keys()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LAKE_URL", "CHINOOK_DB_URL")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    unused, tree, assets = done.stdout.split("\n")[:3]
    assert unused == "[]", done.stdout
    assert tree == "defs"
    assert int(assets) == expected > 30
