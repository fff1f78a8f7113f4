"""Subprocess entry point for kill tests: materialise assets of a source YAML on a shared instance.

Usage: python -m integration_platform_tests.run_stream [--project-instance] <yaml file> <work dir> <instance dir>
<asset key>... (asset keys as ``a/b``). The lake and warehouse live under <work dir>, as in the test process,
unless the environment names another lake (:data:`LAKE_ENV`).
With ``--project-instance`` the instance has the project's settings (``dagster.yaml``: the ``duckdb`` pool of
limit 1), as ``make run`` has; open it in the test with the same ``overrides`` (:data:`PROJECT_OVERRIDES`).
:func:`killed_in` runs it with one method replaced by a SIGKILL of the process.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg

from integration_platform.instance import instance_config
from integration_platform.resources.lake import LakeResource
from sandbox.harness import platform, platform_instance

REPO = Path(__file__).resolve().parent.parent
#: The lake of the run, when not the work dir's folder (see :func:`_lake`).
LAKE_ENV = "IP_RUN_STREAM_LAKE"


#: The project's instance settings, for tests that open the instance a ``--project-instance`` run used.
PROJECT_OVERRIDES = instance_config({})


def main(argv: list[str]) -> int:
    overrides = PROJECT_OVERRIDES if argv[:1] == ["--project-instance"] else None
    yaml_file, work, home, *keys = argv[1:] if overrides else argv
    with platform_instance(home, overrides=overrides) as instance:
        target = platform(Path(yaml_file).read_text(), Path(work), instance, lake=_lake())
        result = target.materialize([dg.AssetKey(k.split("/")) for k in keys])
    return 0 if result.success else 1


def _lake() -> LakeResource | None:
    """The lake named by ``IP_RUN_STREAM_LAKE`` (a JSON object of :class:`LakeResource` fields other
    than ``s3``), else None: the lake under the work dir."""
    fields = os.environ.get(LAKE_ENV)
    return LakeResource(**json.loads(fields)) if fields else None


def killed_in(module: str, cls: str, method: str, *argv: str) -> subprocess.CompletedProcess[bytes]:
    """Run :func:`main` with ``argv`` in a subprocess where ``module.cls.method`` SIGKILLs the
    process when first called (a run killed at exactly that point); returns the finished process."""
    code = (
        "import os, signal, sys\n"
        f"from {module} import {cls}\n"
        f"{cls}.{method} = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)\n"
        "from integration_platform_tests.run_stream import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=REPO, env={**os.environ}, capture_output=True, timeout=120
    )


def killed_materialization(
    tmp_path: Path, yaml_text: str, module: str, cls: str, method: str, *keys: str
) -> subprocess.CompletedProcess[bytes]:
    """:func:`killed_in` for the source ``yaml_text`` (written to ``tmp_path/source.yaml``) with its lake and
    warehouse under ``tmp_path`` and its instance in ``tmp_path/home``: ``keys`` materialised, SIGKILLed at
    the first call of ``module.cls.method``. Asserts the process died of that SIGKILL."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (tmp_path / "source.yaml").write_text(yaml_text)
    killed = killed_in(module, cls, method, str(tmp_path / "source.yaml"), str(tmp_path), str(home), *keys)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    return killed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
