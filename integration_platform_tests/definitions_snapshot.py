"""The whole definitions graph as plain JSON-able data: what a user sees in the UI, so a change of
layout that changes any of it (a key, a kind, a check, a job's selection, a schedule, a sensor) shows.

``python -m integration_platform_tests.definitions_snapshot`` prints the demo's graph (the demo
environment must be set, as ``make run`` sets it)."""

import json
from typing import Any

import dagster as dg


def graph(defs: dg.Definitions) -> dict[str, Any]:
    """Asset keys with group, kinds, dependencies, partitions, pool and checks; jobs with the asset
    keys they select; schedules with cron and job; sensors; resource keys."""
    repo = defs.get_repository_def()
    assets: dict[str, Any] = {}
    for node in repo.asset_graph.asset_nodes:
        key = node.key.to_user_string()
        assets[key] = {
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "partitions": str(node.partitions_def) if node.partitions_def else None,
            "pool": sorted(node.pools or []),
            "checks": sorted(k.name for k in node.check_keys),
            "executable": node.is_executable,
            "owners": sorted(node.owners),
            "tags": {k: v for k, v in sorted(node.tags.items()) if not k.startswith("dagster/")},
            "automation_condition": node.automation_condition.get_label() if node.automation_condition else None,
            "description": node.description,
        }
    jobs = {}
    for job in repo.get_all_jobs():
        if job.name.startswith("__"):
            continue
        selected = job.asset_layer.selected_asset_keys if job.asset_layer else set()
        jobs[job.name] = sorted(k.to_user_string() for k in selected)
    schedules = {s.name: {"cron": s.cron_schedule, "job": s.job_name} for s in repo.schedule_defs}
    sensors = sorted(s.name for s in repo.sensor_defs)
    return {
        "assets": assets,
        "jobs": jobs,
        "schedules": schedules,
        "sensors": sensors,
        "resources": sorted(repo.get_top_level_resources()),
    }


if __name__ == "__main__":
    from integration_platform.definitions import defs

    print(json.dumps(graph(defs()), indent=1, sort_keys=True, default=str))
