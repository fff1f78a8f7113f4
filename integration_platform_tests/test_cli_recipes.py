"""The README's "From the command line" block works as written: run as one bash script against a throw-away
instance, lake and warehouse, it materialises, fully refreshes, backfills a range, previews a sensor and sets,
resets and starts its cursor, with nothing but ``DAGSTER_HOME`` set (no demo-only variable)."""

import os
import re
import subprocess
from pathlib import Path

import duckdb

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def readme_block() -> str:
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text.split("## From the command line", 1)[1]
    found = re.search(r"```bash\n(.*?)```", section, re.S)
    assert found, "the README's command-line section has no bash block"
    return found.group(1)


def test_the_readme_command_line_recipes_run_as_written(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "CHINOOK_", "COVID_", "POKEAPI"))}
    env |= {"DAGSTER_HOME": str(home), "LAKE_URL": str(tmp_path / "lake"), "WAREHOUSE_PATH": str(tmp_path / "wh.db")}
    subprocess.run([".venv/bin/python", "-m", "integration_platform.instance"], cwd=PROJECT_ROOT, env=env, check=True)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_block()],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert output.count('RUN_SUCCESS - Finished execution of run for "__ASSET_JOB"') == 3, output[-4000:]
    assert "landed 412 rows" in output and "window initial" in output  # the full refresh landed it all again
    assert "landed 3 partitions of covid/regions, 63 rows" in output
    assert "31 file(s) listed; 3 already in the lake; 28 waiting to be stable" in output
    with duckdb.connect(str(tmp_path / "wh.db"), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM chinook.invoice").fetchone() == (412,)
        assert conn.execute("SELECT count(DISTINCT data) FROM covid.regions").fetchone() == (3,)
