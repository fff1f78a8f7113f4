"""The platform's core: the one data path, and nothing of Dagster.

``extract`` (a source's Arrow batches) -> ``landing`` (Parquet + manifest in the ``lake``, all or
nothing) -> ``loading`` (DuckDB, exactly once), with ``streams`` (what a stream is), ``cursors``
(high-water marks), ``records`` / ``conform`` (JSON and files to Arrow), ``schema_evolution`` (the
one widening rule), ``outbound`` (pushing rows out since a mark), ``json_paths``, ``quarantine``
and ``names`` (names from outside confined to their folder). No module here imports Dagster
(``integration_platform_tests/test_core_is_pure.py`` proves it); the Dagster layer (``assets/``)
and the kinds (``sources/``, ``outbound/``) build on it.
"""
