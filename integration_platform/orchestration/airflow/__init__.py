"""Airflow: AirflowDag (a DAG run as an asset) and AirflowResource (its REST API)."""
