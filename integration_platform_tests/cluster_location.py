"""The code location of the cluster-mode daemon test: the project's own definitions (``IP_EXECUTOR=celery``
in the environment selects Dagster's Celery executor) plus a sensor that requests one run of the chinook
``genre`` stream, as a source's own sensors do. A schedule's run takes the same path (the daemon's run
queue and run launcher); one was tested here until its wait for the next minute (30 s on average) was
cut from the suite's time. Loaded by
``dagster-daemon run -f`` and, through the runs' job origin, by the Celery workers."""

import dagster as dg

import integration_platform.definitions as project  # a module, not its lazy defs(): Dagster would load that

SELECTION = [dg.AssetKey(["chinook", "genre"]), dg.AssetKey(["warehouse", "chinook.genre"])]
sensor_job = dg.define_asset_job("genre_by_sensor", selection=SELECTION)


@dg.sensor(job=sensor_job, minimum_interval_seconds=1, default_status=dg.DefaultSensorStatus.RUNNING)
def genre_once(context: dg.SensorEvaluationContext) -> dg.RunRequest:
    """One run, ever (its run key)."""
    return dg.RunRequest(run_key="genre-once")


defs = dg.Definitions.merge(project.defs(), dg.Definitions(jobs=[sensor_job], sensors=[genre_once]))
