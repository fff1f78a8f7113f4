"""The component types a ``defs/<name>/defs.yaml`` names in ``type:``: the platform's public
names, stable whichever folder a kind lives in (``type: integration_platform.components.SqlSource``)."""

from integration_platform.orchestration.airflow.component import AirflowDag
from integration_platform.outbound.http_sync import HttpSync
from integration_platform.sources.files.component import FileSource
from integration_platform.sources.queues.component import QueueSource
from integration_platform.sources.rest.component import RestSource
from integration_platform.sources.sql.component import SqlSource

__all__ = ["AirflowDag", "FileSource", "HttpSync", "QueueSource", "RestSource", "SqlSource"]
