import json
import os
from datetime import UTC, datetime

import dagster as dg

from gh_pipeline import settings
from gh_pipeline.defs.live.jobs import IN_FLIGHT_STATUSES, POLL_JOB_NAME, poll_job
from gh_pipeline.defs.ops.stale_runs import resolve_stale_runs
from gh_pipeline.defs.warehouse.resources import PipelineStorage
from gh_pipeline.live import poll_state, polling, watched

POLL_SENSOR_NAME = "github_events_sensor"

# A poll run waits at most 90 s, makes at most 3 pages x 4 attempts with short backoffs, then
# refreshes the tables: 5 minutes means it is stuck (or its process was killed). With run
# monitoring enabled on the instance, Dagster fails such a run, which frees the sensor and the
# one-poll-at-a-time queue.
POLL_RUN_MAX_RUNTIME_S = 300


def _in_flight(instance: dg.DagsterInstance) -> str | None:
    """A description of the poll run in flight, if any."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=POLL_JOB_NAME, statuses=IN_FLIGHT_STATUSES), limit=1
    )
    if not runs:
        return None
    run = runs[0]
    return f"run {run.run_id} is {run.status.value.lower()}"


def _run_key(launched_at: str) -> str:
    return f"poll-{launched_at}"


def _never_started(instance: dg.DagsterInstance, launched_at: str) -> bool:
    """Whether the poll run launched at `launched_at` ended without ever starting (killed while
    queued or starting, or its launch failed): it sent no request to GitHub."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(
            job_name=POLL_JOB_NAME, tags={"dagster/run_key": _run_key(launched_at)}
        ),
        limit=1,
    )
    if not runs or runs[0].status not in (
        dg.DagsterRunStatus.FAILURE,
        dg.DagsterRunStatus.CANCELED,
    ):
        return False
    return instance.get_run_stats(runs[0].run_id).start_time is None


@dg.sensor(
    name=POLL_SENSOR_NAME,
    job=poll_job,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches a poll of GitHub /events as soon as GitHub allows the next one.",
)
def github_events_sensor(
    context: dg.SensorEvaluationContext, storage: PipelineStorage
) -> dg.RunRequest | dg.SkipReason:
    """Launches a poll of GitHub /events as soon as GitHub and the rate budget allow the next one."""
    # After a crash, runs whose process died would block every poll until run monitoring's
    # timeouts (180 s to start, POLL_RUN_MAX_RUNTIME_S to finish): resolve them first.
    for stale in resolve_stale_runs(context.instance):
        context.log.warning(
            f"marked {stale.job_name} run {stale.run_id} ({stale.status}) failed: {stale.reason}"
        )
    now = datetime.now(UTC)
    cursor = json.loads(context.cursor) if context.cursor else {}
    last_launch = cursor.get("last_launch_at")
    # The wait after a launch covers a run that polled and died before saving its state. A run
    # that never started cannot have polled (after a crash while STARTING it would otherwise
    # hold the next poll back a whole interval, 60 s before GitHub has named one).
    if last_launch and _never_started(context.instance, last_launch):
        context.log.info(
            f"the poll run launched at {last_launch} never started, so it sent no request: "
            "not waiting an interval after it"
        )
        last_launch = None
    in_flight = _in_flight(context.instance)
    watch = settings.watched_repos()
    if watch.repos or watch.errors:
        return _watched_round(
            context,
            storage,
            watch,
            now=now,
            last_launch_at=datetime.fromisoformat(last_launch) if last_launch else None,
            in_flight=in_flight,
        )
    decision = polling.decide(
        poll_state.load_state(storage.state_dir),
        now=now,
        last_launch_at=datetime.fromisoformat(last_launch) if last_launch else None,
        in_flight=in_flight is not None,
        in_flight_detail=in_flight,
    )
    if not decision.poll:
        return dg.SkipReason(decision.reason)
    context.update_cursor(json.dumps({"last_launch_at": now.isoformat()}))
    return dg.RunRequest(
        run_key=_run_key(now.isoformat()),
        tags={"dagster/max_runtime": str(POLL_RUN_MAX_RUNTIME_S)},
    )


def _watched_round(
    context: dg.SensorEvaluationContext,
    storage: PipelineStorage,
    watch: settings.WatchList,
    *,
    now: datetime,
    last_launch_at: datetime | None,
    in_flight: str | None,
) -> dg.RunRequest | dg.SkipReason:
    """With watched repositories: launch when any feed (global or repository) may poll; the
    skip reason lists every repository's state, the refused entries and budget warnings."""
    states = watched.load_states(storage.state_dir, watch.repos)
    decisions = {
        feed: polling.decide(
            state,
            now=now,
            last_launch_at=last_launch_at,
            in_flight=in_flight is not None,
            in_flight_detail=in_flight,
        )
        for feed, state in states.items()
    }
    due = [feed for feed, decision in decisions.items() if decision.poll]
    notes = watched.budget_warnings(
        repos=watch.repos,
        errors=watch.errors,
        # Only whether a token is set; its value is never read here.
        authenticated=bool(os.environ.get(settings.ENV_TOKEN)),
    )
    if any((s.reason or "").startswith("rate budget") for f, s in states.items() if f.repo):
        notes.append(
            "the rate budget cannot serve every feed at its X-Poll-Interval: they take turns, "
            "least recently polled first, and the budget never runs dry"
        )
    table = watched.rows_text(watched.repo_rows(states, now=now))
    if not due:
        first = min(
            decisions.values(),
            key=lambda d: d.next_poll_at or datetime.max.replace(tzinfo=UTC),
        )
        return dg.SkipReason("\n".join([first.reason, *notes, table]))
    context.update_cursor(json.dumps({"last_launch_at": now.isoformat()}))
    for note in notes:
        context.log.warning(note)
    return dg.RunRequest(
        run_key=_run_key(now.isoformat()),
        tags={"dagster/max_runtime": str(POLL_RUN_MAX_RUNTIME_S)},
    )
