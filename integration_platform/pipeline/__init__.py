"""How rows travel: extract -> Arrow batches -> Parquet + manifest in the lake -> DuckDB."""
