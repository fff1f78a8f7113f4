"""dagster-postgres's event log (``PostgresEventLogStorage``) with the platform's correction of planned
asset checks (:mod:`.planned_checks`)."""

from collections.abc import Mapping
from typing import Any

from dagster._serdes import ConfigurableClassData
from dagster_postgres import PostgresEventLogStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

from integration_platform.event_log.planned_checks import PlannedChecksOnce


class PlatformPostgresEventLogStorage(PlannedChecksOnce, PostgresEventLogStorage):
    """``PostgresEventLogStorage`` (config as dagster-postgres's: ``postgres_url`` or ``postgres_db``)
    storing a planned asset check as one row."""

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> "PlatformPostgresEventLogStorage":
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )
