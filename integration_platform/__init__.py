"""integration_platform: a Dagster code location that lands source systems in a Parquet lake and DuckDB."""
