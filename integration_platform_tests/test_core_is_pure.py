"""The core never imports Dagster: every module of ``integration_platform.core`` loads in a fresh interpreter
without a single ``dagster`` module, so the data path can be tested, benchmarked and reused without it."""

import pkgutil
import subprocess
import sys

import pytest

import integration_platform.core

pytestmark = pytest.mark.fast


def test_no_core_module_imports_dagster() -> None:
    prefix = "integration_platform.core."
    modules = sorted(m.name for m in pkgutil.iter_modules(integration_platform.core.__path__, prefix))
    assert {"integration_platform.core.landing", "integration_platform.core.loading"} <= set(modules)
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith('dagster')}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
