"""The component types a ``defs/<name>/defs.yaml`` names in ``type:``: the platform's public
names, stable whichever folder a kind lives in (``type: integration_platform.components.SqlSource``).

Each kind is imported when it is first named (PEP 562 module ``__getattr__``), so a code location
loads only the clients of the kinds its YAML uses: the Airflow, outbound and queue kinds' imports
cost 0.3 s of every load that named none of them.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from integration_platform.orchestration.airflow.component import AirflowDag
    from integration_platform.outbound.http_sync import HttpSync
    from integration_platform.sources.files.component import FileSource
    from integration_platform.sources.html.component import HtmlSource
    from integration_platform.sources.queues.component import QueueSource
    from integration_platform.sources.rest.component import RestSource
    from integration_platform.sources.sql.component import SqlSource

#: Public name -> the module that defines it.
KINDS = {
    "AirflowDag": "integration_platform.orchestration.airflow.component",
    "FileSource": "integration_platform.sources.files.component",
    "HtmlSource": "integration_platform.sources.html.component",
    "HttpSync": "integration_platform.outbound.http_sync",
    "QueueSource": "integration_platform.sources.queues.component",
    "RestSource": "integration_platform.sources.rest.component",
    "SqlSource": "integration_platform.sources.sql.component",
}

__all__ = ["AirflowDag", "FileSource", "HtmlSource", "HttpSync", "QueueSource", "RestSource", "SqlSource"]


def __getattr__(name: str) -> Any:
    """The component class ``name``, its module imported on first use; ``AttributeError`` otherwise."""
    if name not in KINDS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(KINDS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *KINDS])
