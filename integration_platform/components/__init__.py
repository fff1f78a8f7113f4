"""Declarative source types: a YAML file in defs/ becomes assets, checks, jobs and schedules."""

from integration_platform.components.airflow_dag import AirflowDag
from integration_platform.components.file_source import FileSource
from integration_platform.components.queue_source import QueueSource
from integration_platform.components.rest_source import RestSource
from integration_platform.components.reverse_etl import HttpSync
from integration_platform.components.sql_source import SqlSource

__all__ = ["AirflowDag", "FileSource", "HttpSync", "QueueSource", "RestSource", "SqlSource"]
