"""Starting and stopping the servers tests and benchmarks run (no pytest here, so benchmarks can
use it too; ``services.py`` adds the pytest side). The helpers live with the demo's stand-ins."""

from integration_platform.standins import free_port, stop, wait_for_port

__all__ = ["free_port", "stop", "wait_for_port"]
