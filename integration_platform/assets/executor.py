"""The executor of every job: Dagster's in-process executor for small runs, its multiprocess
executor (step processes forked from a preloaded server) for the others.

Why a choice by run size: a step process costs about 1 s to start even when forked from a server
that has imported the platform, and the server itself about 3 s per run; a run of one stream (its
lake and warehouse steps and their checks) has nothing to run side by side, so those seconds were
most of its time (an incremental run of one small table from ``dagster asset materialize``, median
of 3 in ``benchmarks/small_run.py`` on the 2-core test machine: 10.8 s multiprocess, 5.6 s in
process). Larger runs keep one process per step,
so independent streams land side by side and a crashing step does not take the others down.

Within a multiprocess run, steps that open the DuckDB file (tagged by
:func:`~integration_platform.assets.cluster.warehouse_step`) start one at a time (the
executor's ``tag_concurrency_limits``): otherwise they all become ready at once, all but one wait
for the ``duckdb`` pool's slot, and Dagster re-checks a blocked claim after 1 s, then ever longer
(x1.1 per attempt, up to 15 s), so the last ones idled for many seconds after the slot was free.
On the demo's 18 unpartitioned streams (50 steps) that waiting made the run 87 s against 20 s in
process (``benchmarks/cluster_scale.py``). The pool still serialises them across runs.

Both executors are Dagster's own, configured by Dagster's config system; this module only picks
one per run, from the number of steps the run executes (``in_process_max_steps``, default 6). The
guarantees are the same either way: steps run in dependency order, the ``duckdb`` pool admits one
warehouse step at a time across runs (both executors claim pool slots), retries follow the same
``retries`` setting.
"""

from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg

from integration_platform.assets.cluster import CELERY_QUEUE_TAG, WAREHOUSE_QUEUE

#: Steps a run may execute and still run in one process (one stream's lake and warehouse steps
#: and its check steps are 2-6).
IN_PROCESS_MAX_STEPS = 6

_MULTIPROCESS_FIELDS = dg.multiprocess_executor.config_schema.config_type.fields  # type: ignore[union-attr]


class RunSizedExecutor(dg.Executor):
    """Delegates a run to ``small`` (in process) when it executes at most ``max_steps`` steps,
    otherwise to ``large`` (multiprocess). ``retries`` and the step dependency settings are the
    same configuration in both, so what Dagster reads from the executor before the plan is known
    holds for either."""

    def __init__(self, small: dg.Executor, large: dg.Executor, max_steps: int) -> None:
        self.small, self.large, self.max_steps = small, large, max_steps

    @property
    def retries(self) -> Any:
        return self.large.retries

    @property
    def step_dependency_config(self) -> Any:
        return self.large.step_dependency_config

    def chosen(self, execution_plan: Any) -> dg.Executor:
        """The executor for a plan: in process when its steps to execute are few."""
        return self.small if len(execution_plan.step_keys_to_execute) <= self.max_steps else self.large

    def execute(self, plan_context: Any, execution_plan: Any) -> Iterator[dg.DagsterEvent]:
        return self.chosen(execution_plan).execute(plan_context, execution_plan)


def _requirements(config: Mapping[str, object]) -> Any:
    """The multiprocess executor's requirements (a reconstructable job, a persistent instance)."""
    return dg.multiprocess_executor.get_requirements({k: v for k, v in config.items() if k in _MULTIPROCESS_FIELDS})


def run_sized_executor(preload_modules: list[str]) -> dg.ExecutorDefinition:
    """The executor definition (Dagster's ``in_process`` or ``multiprocess`` executor, chosen per run by
    its number of steps; config: the multiprocess executor's settings plus ``in_process_max_steps``),
    whose multiprocess runs fork their step processes from a server that has imported
    ``preload_modules`` (the default ``start_method``).

    Why preloaded: a step forked from a server that has already imported the platform's kinds starts
    in about 1 s instead of 3 s, which re-importing Dagster and every kind cost (an incremental run
    of one small table, four steps: 12-14 s instead of 19-23 s when every run was multiprocess);
    ``pandas`` belongs in the list too: DuckDB's Python client imports it on a process's first query
    with parameters (0.33 s), which every step paid; and :mod:`integration_platform.preload`, which
    builds the definitions and imports the instance's storage modules once in the server: each step
    process took 0.5 s from ``STEP_WORKER_STARTING`` to ``STEP_START``, 62% of it importing the
    storage (alembic among them), and takes 0.2 s; the demo's 18 streams as one run (50 steps):
    46.4 s -> 32.2 s, median of 3 (``benchmarks/cluster_scale.py``)."""

    @dg.executor(
        name="in_process_or_multiprocess",
        config_schema={
            **_MULTIPROCESS_FIELDS,
            "start_method": dg.Field(
                _MULTIPROCESS_FIELDS["start_method"].config_type,
                default_value={"forkserver": {"preload_modules": list(preload_modules)}},
                description="How the step processes of a multiprocess run start (Dagster's multiprocess "
                "executor setting; default: forked from a server with the platform preloaded).",
            ),
            "tag_concurrency_limits": dg.Field(
                _MULTIPROCESS_FIELDS["tag_concurrency_limits"].config_type,
                is_required=False,
                default_value=[{"key": CELERY_QUEUE_TAG, "value": WAREHOUSE_QUEUE, "limit": 1}],
                description="Dagster's multiprocess executor setting. Default: one step that opens the "
                "DuckDB file at a time within the run, so that such steps do not wait on the duckdb pool "
                "(see the module's docstring).",
            ),
            "in_process_max_steps": dg.Field(
                int,
                default_value=IN_PROCESS_MAX_STEPS,
                description="A run executing at most this many steps runs them in its own process "
                "(Dagster's in_process executor); a larger run uses the multiprocess executor with the "
                "other settings here. 0 makes every run multiprocess.",
            ),
        },
        requirements=_requirements,
    )
    def executor(init_context: dg.InitExecutorContext) -> dg.Executor:
        return _created(init_context)

    return executor


def _created(init_context: dg.InitExecutorContext) -> dg.Executor:
    """Dagster's in-process executor for runs of at most ``in_process_max_steps`` steps, its
    multiprocess executor (configured by the other settings: ``max_concurrent``, ``start_method``,
    ``retries``...) for larger ones. Raises what Dagster's executors raise for bad configuration."""
    config = dict(init_context.executor_config)
    max_steps = int(str(config.pop("in_process_max_steps")))

    def made(definition: dg.ExecutorDefinition, executor_config: Mapping[str, object]) -> dg.Executor:
        context = dg.InitExecutorContext(
            job=init_context.job,
            executor_def=definition,
            executor_config=executor_config,
            instance=init_context.instance,
        )
        return definition.executor_creation_fn(context)  # type: ignore[misc]

    small = made(
        dg.in_process_executor,
        {"retries": config["retries"], "step_dependency_config": config.get("step_dependency_config")},
    )
    return RunSizedExecutor(small, made(dg.multiprocess_executor, config), max_steps)
