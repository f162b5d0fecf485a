from datetime import UTC, datetime, timedelta

import dagster as dg

from gh_pipeline import settings
from gh_pipeline.archive.bulk_load import scope_holds
from gh_pipeline.archive.fetch import ArchiveDownloadError, is_published, make_client
from gh_pipeline.archive.hours import ArchiveHour
from gh_pipeline.defs.archive.assets import (
    GHARCHIVE_PARTITIONS,
    HOUR_SCOPE,
    HOUR_SCOPE_REPOS,
    GHArchiveResource,
)
from gh_pipeline.defs.live.jobs import IN_FLIGHT_STATUSES
from gh_pipeline.defs.warehouse.keys import GHARCHIVE_HOURLY

ARCHIVE_JOB_NAME = "gharchive_hourly_job"
ARCHIVE_SCHEDULE_NAME = "gharchive_newest_hour"
# Besides the newest complete hour, a few earlier ones are retried in case GH Archive published
# them late (after the schedule had moved on).
LOOKBACK_HOURS = 6
# A partition whose scheduled runs failed this often is left for a person to look at.
MAX_FAILED_RUNS = 3
HEAD_TIMEOUT_S = 10.0
PARTITION_TAG = "dagster/partition"


# The archive hour and everything downstream of it in one run: the filtered and metric tables
# include the hour as soon as its run ends. (A UI backfill of gharchive_hourly alone leaves them
# to the next live poll run, which refreshes everything downstream of raw_events; see README.)
gharchive_job = dg.define_asset_job(
    name=ARCHIVE_JOB_NAME,
    selection=dg.AssetSelection.assets(GHARCHIVE_HOURLY).downstream(),
    executor_def=dg.in_process_executor,
    description="Load one GH Archive hour into raw_events and refresh the tables downstream.",
)


def candidate_hours(now: datetime, first_hour: datetime) -> list[ArchiveHour]:
    """The newest complete hour at `now` first, then up to LOOKBACK_HOURS - 1 earlier ones."""
    newest = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    hours = [newest - timedelta(hours=i) for i in range(LOOKBACK_HOURS)]
    return [ArchiveHour(h) for h in hours if h >= first_hour]


def _loaded(instance: dg.DagsterInstance, key: str, scope: settings.ArchiveScope) -> bool:
    """Whether the hour's latest materialization already holds every event `scope` wants: an
    hour loaded with `watched` is loaded again when the scope is now `all` or names another
    repository (the load adds only the missing events); one loaded with `all` is done for any
    scope. A materialization without hour_scope predates the setting and holds every event."""
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=GHARCHIVE_HOURLY, asset_partitions=[key]), limit=1
    )
    if not result.records:
        return False
    materialization = result.records[0].asset_materialization
    metadata = materialization.metadata if materialization is not None else {}
    held = metadata.get(HOUR_SCOPE)
    if held is None:
        return True
    repos = metadata.get(HOUR_SCOPE_REPOS)
    names = tuple(n for n in str(repos.value if repos else "").split(", ") if n)
    return scope_holds((str(held.value), names), scope)


@dg.schedule(
    name=ARCHIVE_SCHEDULE_NAME,
    cron_schedule="*/10 * * * *",
    job=gharchive_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def gharchive_newest_hour(
    context: dg.ScheduleEvaluationContext, gharchive: GHArchiveResource
) -> list[dg.RunRequest] | dg.SkipReason:
    """Loads the newest complete GH Archive hour once it is published (a 404 means not yet)."""
    now = context.scheduled_execution_time or datetime.now(UTC)
    try:
        scope = gharchive.archive_scope()
    except ValueError as exc:
        return dg.SkipReason(f"{exc}; no archive hour is loaded until it is fixed")
    notes: list[str] = []
    requests: list[dg.RunRequest] = []
    with make_client(HEAD_TIMEOUT_S) as client:
        for hour in candidate_hours(now, GHARCHIVE_PARTITIONS.start):
            key = hour.partition_key
            if _loaded(context.instance, key, scope):
                continue
            tags = {PARTITION_TAG: key}
            if context.instance.get_runs_count(
                dg.RunsFilter(tags=tags, statuses=IN_FLIGHT_STATUSES)
            ):
                notes.append(f"{key} is being loaded")
                continue
            failed = context.instance.get_runs_count(
                dg.RunsFilter(
                    job_name=ARCHIVE_JOB_NAME,
                    tags=tags,
                    statuses=[dg.DagsterRunStatus.FAILURE],
                )
            )
            if failed >= MAX_FAILED_RUNS:
                notes.append(f"{key} failed {failed} times; left for a person (see its runs)")
                continue
            try:
                published = is_published(client, hour, gharchive.url)
            except ArchiveDownloadError as exc:
                # Unreachable now is not a failure of anything stored: try again next tick.
                return dg.SkipReason(f"GH Archive not reachable ({exc}); trying again next tick")
            if not published:
                notes.append(f"{hour.file_name} not published yet (HTTP 404)")
                continue
            requests.append(dg.RunRequest(partition_key=key))
    if requests:
        return requests
    return dg.SkipReason(
        "; ".join(notes) if notes else f"the last {LOOKBACK_HOURS} complete hours are loaded"
    )
