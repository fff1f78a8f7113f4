"""Other orchestrators the platform drives (Airflow DAG runs as assets)."""
