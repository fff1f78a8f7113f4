"""Subprocess entry point for kill tests: materialise assets of a source YAML on a shared instance.

Usage: python -m integration_platform_tests.run_stream <yaml file> <work dir> <instance dir> <asset key>...
(asset keys as ``a/b``). The lake and warehouse live under <work dir>, as in the test process.
"""

import sys
from pathlib import Path

import dagster as dg

from integration_platform_tests.harness import platform


def main(argv: list[str]) -> int:
    yaml_file, work, home, *keys = argv
    with dg.instance_for_test(temp_dir=home) as instance:
        target = platform(Path(yaml_file).read_text(), Path(work), instance)
        result = target.materialize([dg.AssetKey(k.split("/")) for k in keys])
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
