from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from gh_pipeline.defs.warehouse.keys import EVENT_COUNTS, PR_INTERVALS, RAW_EVENTS, REPO_PR_COUNTS
from gh_pipeline.defs.warehouse.resources import WAREHOUSE_POOL, PipelineStorage, Warehouse
from gh_pipeline.live import poll_state
from gh_pipeline.ops import quality

# Check names (shown in the UI under each asset's "Checks" tab).
EVENT_IDS_UNIQUE = "event_ids_unique"
EVENT_TYPES_KNOWN = "event_types_known"
CREATED_AT_NOT_IN_FUTURE = "created_at_not_in_future"
POLLS_FRESH = "polls_fresh"
PAYLOAD_SCHEMA_STABLE = "payload_schema_stable"
PR_INTERVALS_VALID = "pr_intervals_valid"
REPO_PR_COUNTS_MATCH_FILTERED = "repo_pr_counts_match_filtered"
EVENT_COUNTS_MATCH_FILTERED = "event_counts_match_filtered"

RAW_EVENTS_CHECKS_NAME = "raw_events_quality"
QUALITY_JOB_NAME = "data_quality_checks"
QUALITY_SCHEDULE_NAME = "data_quality_checks_every_15_min"

_SEVERITY = {quality.ERROR: dg.AssetCheckSeverity.ERROR, quality.WARN: dg.AssetCheckSeverity.WARN}

_RAW_SPECS = {
    EVENT_IDS_UNIQUE: "Every event id occurs once in raw_events (ERROR).",
    EVENT_TYPES_KNOWN: "Every event type is one GitHub documents; a new type is a WARN.",
    CREATED_AT_NOT_IN_FUTURE: "No created_at later than now plus 5 minutes of clock skew (ERROR).",
    POLLS_FRESH: "A poll has succeeded within 3 poll intervals (WARN).",
    PAYLOAD_SCHEMA_STABLE: (
        "Per event type: keys not seen before, keys that used to be there and vanished (GitHub "
        "trimmed payloads on 2025-10-07), and the share of events missing fields the pipeline "
        "relies on; WARN when they change."
    ),
}


def _metadata(finding: quality.Finding) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in finding.metadata.items():
        if key == "drift":
            out[key] = dg.MetadataValue.md(value)
        elif isinstance(value, dict | list):
            out[key] = dg.MetadataValue.json(value)
        else:
            out[key] = value
    return out


def _result(check_name: str, asset: dg.AssetKey, finding: quality.Finding) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=check_name,
        passed=finding.passed,
        severity=_SEVERITY[finding.severity],
        description=finding.summary,
        metadata=_metadata(finding),
    )


@dg.multi_asset_check(
    name=RAW_EVENTS_CHECKS_NAME,
    specs=[
        dg.AssetCheckSpec(name=name, asset=RAW_EVENTS, description=text, blocking=False)
        for name, text in _RAW_SPECS.items()
    ],
    can_subset=True,
    pool=WAREHOUSE_POOL,
)
def raw_events_quality(
    context: dg.AssetCheckExecutionContext, warehouse: Warehouse, storage: PipelineStorage
) -> Iterator[dg.AssetCheckResult]:
    """Ids, event types, timestamps, freshness and payload schema drift of raw_events."""
    wanted = {key.name for key in context.selected_asset_check_keys}
    now = datetime.now(UTC)
    # One connection for all five: they share the warehouse pool slot and its single open.
    with warehouse.connect() as conn:
        runs = {
            EVENT_IDS_UNIQUE: lambda: quality.check_unique_ids(conn),
            EVENT_TYPES_KNOWN: lambda: quality.check_event_types(conn),
            CREATED_AT_NOT_IN_FUTURE: lambda: quality.check_created_at(conn, now=now),
            POLLS_FRESH: lambda: quality.check_freshness(
                conn, state=poll_state.load_state(storage.state_dir), now=now
            ),
            PAYLOAD_SCHEMA_STABLE: lambda: quality.profile_schema(conn, now=now),
        }
        for name, run in runs.items():
            if name in wanted:
                yield _result(name, RAW_EVENTS, run())


@dg.asset_check(
    asset=PR_INTERVALS,
    name=PR_INTERVALS_VALID,
    blocking=False,
    pool=WAREHOUSE_POOL,
    description=(
        "Intervals non-negative, median ≤ p90, an average exactly where pr_opened ≥ 2, and "
        "pr_opened per repository equal to the opened PRs in pull_request_events (ERROR)."
    ),
)
def pr_intervals_valid(warehouse: Warehouse) -> dg.AssetCheckResult:
    """pr_intervals is internally valid and agrees with pull_request_events."""
    with warehouse.connect() as conn:
        finding = quality.check_pr_intervals(conn)
    return _result(PR_INTERVALS_VALID, PR_INTERVALS, finding)


@dg.asset_check(
    asset=REPO_PR_COUNTS,
    name=REPO_PR_COUNTS_MATCH_FILTERED,
    blocking=False,
    pool=WAREHOUSE_POOL,
    description="pr_events and pr_opened per repository equal a recount of pull_request_events (ERROR).",
)
def repo_pr_counts_match_filtered(warehouse: Warehouse) -> dg.AssetCheckResult:
    """repo_pr_counts agrees with pull_request_events."""
    with warehouse.connect() as conn:
        finding = quality.check_repo_pr_counts(conn)
    return _result(REPO_PR_COUNTS_MATCH_FILTERED, REPO_PR_COUNTS, finding)


@dg.asset_check(
    asset=EVENT_COUNTS,
    name=EVENT_COUNTS_MATCH_FILTERED,
    blocking=False,
    pool=WAREHOUSE_POOL,
    description=(
        "Every (window, type) cell present once, counts equal a recount of the filtered tables "
        "at as_of, longer windows never smaller (ERROR)."
    ),
)
def event_counts_match_filtered(warehouse: Warehouse) -> dg.AssetCheckResult:
    """event_counts agrees with the filtered tables."""
    with warehouse.connect() as conn:
        finding = quality.check_event_counts(conn)
    return _result(EVENT_COUNTS_MATCH_FILTERED, EVENT_COUNTS, finding)


# The only job that runs the checks: poll runs leave them out (each evaluation is stored three
# times in Dagster's storage, and polls come up to once a minute). A check run is ~180 kB of
# Dagster storage: every 15 minutes is ~12 kB a poll at one poll a minute (every 5 minutes was a
# third of a poll run's own size), and a problem still shows within a quarter of an hour. Running
# on a schedule, not after polls, also notices a feed whose polls keep failing.
quality_checks_job = dg.define_asset_job(
    name=QUALITY_JOB_NAME,
    selection=dg.AssetSelection.checks_for_assets(
        RAW_EVENTS, PR_INTERVALS, EVENT_COUNTS, REPO_PR_COUNTS
    ),
    executor_def=dg.in_process_executor,
    description="Run every data-quality check on the warehouse as it is, without polling.",
)

quality_checks_schedule = dg.ScheduleDefinition(
    name=QUALITY_SCHEDULE_NAME,
    job=quality_checks_job,
    cron_schedule="*/15 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Data-quality checks every 15 minutes, so staleness shows even when polls fail.",
)
