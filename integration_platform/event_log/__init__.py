"""Dagster event-log storages of the platform's instance: Dagster's own SQLite and PostgreSQL storages
with one correction (:mod:`.planned_checks`), named in ``$DAGSTER_HOME/dagster.yaml`` by
:mod:`integration_platform.instance`."""
