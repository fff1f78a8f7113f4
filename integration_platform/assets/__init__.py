"""The Dagster layer every kind shares: the per-stream asset pair (lake, warehouse) and its checks,
high-water marks in materialisation metadata, crash recovery, refresh jobs and schedules, and the
YAML config models' base (errors that never quote a value)."""
