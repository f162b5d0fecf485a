import json
from datetime import UTC, datetime

import dagster as dg

from gh_pipeline import poll_state, polling
from gh_pipeline.defs.jobs import POLL_JOB_NAME, poll_job
from gh_pipeline.defs.resources import PipelineStorage

POLL_SENSOR_NAME = "github_events_sensor"

_IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


@dg.sensor(
    name=POLL_SENSOR_NAME,
    job=poll_job,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def github_events_sensor(
    context: dg.SensorEvaluationContext, storage: PipelineStorage
) -> dg.RunRequest | dg.SkipReason:
    """Launches a poll of GitHub /events as soon as GitHub allows the next one."""
    now = datetime.now(UTC)
    cursor = json.loads(context.cursor) if context.cursor else {}
    last_launch = cursor.get("last_launch_at")
    in_flight = (
        context.instance.get_runs_count(dg.RunsFilter(job_name=POLL_JOB_NAME, statuses=_IN_FLIGHT))
        > 0
    )
    decision = polling.decide(
        poll_state.load_state(storage.state_dir),
        now=now,
        last_launch_at=datetime.fromisoformat(last_launch) if last_launch else None,
        in_flight=in_flight,
    )
    if not decision.poll:
        return dg.SkipReason(decision.reason)
    context.update_cursor(json.dumps({"last_launch_at": now.isoformat()}))
    return dg.RunRequest(run_key=f"poll-{now.isoformat()}")
