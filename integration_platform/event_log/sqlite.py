"""Dagster's SQLite event log (``SqliteEventLogStorage``, a database per run beside an index database)
with the platform's correction of planned asset checks (:mod:`.planned_checks`)."""

from collections.abc import Mapping
from typing import Any

from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._serdes import ConfigurableClassData

from integration_platform.event_log.planned_checks import PlannedChecksOnce


class PlatformSqliteEventLogStorage(PlannedChecksOnce, SqliteEventLogStorage):
    """``SqliteEventLogStorage`` (config: ``base_dir``, the folder of its databases) storing a planned
    asset check as one row."""

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> "PlatformSqliteEventLogStorage":
        return cls(inst_data=inst_data, **config_value)
