#!/usr/bin/env bash
# Installs Apache Airflow for the Airflow tests (integration_platform_tests/test_airflow.py) into
# virtualenvs of its own under .data/ (git-ignored), never into the project's .venv: Airflow is a
# separate service with its own dependency tree (Airflow 2 needs SQLAlchemy 1.4, the project pins
# 2.1.9; Airflow 3.3.2 resolves beside today's lock but adds ~60 packages, and its pins move with
# every release). The project only talks to Airflow over HTTP (AirflowResource).
#
#   .data/airflow-venv   apache-airflow 3.3.2  (REST API v2, JWT auth)   lock: sandbox/airflow/constraints.txt
#   .data/airflow2-venv  apache-airflow 2.11.2 (REST API v1, basic auth) lock: sandbox/airflow/constraints-2.txt
#
# The locks stand in for Airflow's published constraints files (no internet here to fetch them):
# they are `pip freeze` of a resolution that installed cleanly and passed the tests.
# Idempotent: a venv already holding the pinned version is left alone. Set AIRFLOW2=0 to skip
# Airflow 2 (the v1 tests then skip locally and fail in CI). PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
AIRFLOW3_VERSION=3.3.2
AIRFLOW2_VERSION=2.11.2

install() {  # install VENV VERSION CONSTRAINTS
    local venv="$1" version="$2" constraints="$3"
    if [[ -x "$venv/bin/airflow" ]] && [[ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("apache-airflow"))' 2>/dev/null)" == "$version" ]]; then
        echo "apache-airflow $version already in $venv"
        return 0
    fi
    local started=$SECONDS
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q -c "$constraints" "apache-airflow==$version"
    "$venv/bin/pip" check
    echo "apache-airflow $version installed in $venv in $((SECONDS - started)) s"
}

mkdir -p .data
install .data/airflow-venv "$AIRFLOW3_VERSION" sandbox/airflow/constraints.txt
if [[ "${AIRFLOW2:-1}" != "0" ]]; then
    install .data/airflow2-venv "$AIRFLOW2_VERSION" sandbox/airflow/constraints-2.txt
fi
