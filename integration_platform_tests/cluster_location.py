"""The code location of the cluster-mode daemon test: the project's own definitions (``IP_EXECUTOR=celery``
in the environment selects Dagster's Celery executor) plus a sensor and a schedule that each request one
run of the chinook ``genre`` stream, as a source's own sensors and schedules do. Loaded by
``dagster-daemon run -f`` and, through the runs' job origin, by the Celery workers."""

import dagster as dg

import integration_platform.definitions as project  # a module, not its lazy defs(): Dagster would load that

SELECTION = [dg.AssetKey(["chinook", "genre"]), dg.AssetKey(["warehouse", "chinook.genre"])]
sensor_job = dg.define_asset_job("genre_by_sensor", selection=SELECTION)
schedule_job = dg.define_asset_job("genre_by_schedule", selection=SELECTION)


@dg.sensor(job=sensor_job, minimum_interval_seconds=1, default_status=dg.DefaultSensorStatus.RUNNING)
def genre_once(context: dg.SensorEvaluationContext) -> dg.RunRequest:
    """One run, ever (its run key)."""
    return dg.RunRequest(run_key="genre-once")


every_minute = dg.ScheduleDefinition(
    name="genre_every_minute",
    job=schedule_job,
    cron_schedule="* * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

defs = dg.Definitions.merge(
    project.defs(), dg.Definitions(jobs=[sensor_job, schedule_job], sensors=[genre_once], schedules=[every_minute])
)
