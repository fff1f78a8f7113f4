"""The platform's core: the one data path, and nothing of Dagster.

``extract`` (a source's Arrow batches) -> ``landing`` (Parquet + manifest in the ``lake``, all or
nothing) -> ``loading`` (DuckDB, exactly once), with ``streams`` (what a stream is), ``cursors``
(high-water marks), ``records`` / ``conform`` (JSON and files to Arrow, schema evolution),
``quarantine`` and ``names`` (names from outside confined to their folder). No module here imports
Dagster (``integration_platform_tests/test_core_is_pure.py`` proves it); the Dagster layer
(``components/``) and the sources build on it.
"""
