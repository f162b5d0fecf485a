from datetime import UTC, datetime

import dagster as dg

from gh_pipeline import metrics, snapshot, store
from gh_pipeline.defs.asset_keys import (
    EVENT_COUNTS,
    ISSUES_EVENTS,
    METRICS_GROUP,
    PR_INTERVALS,
    PULL_REQUEST_EVENTS,
    REPO_PR_COUNTS,
    WATCH_EVENTS,
)
from gh_pipeline.defs.resources import WAREHOUSE_POOL, PipelineStorage, Warehouse


@dg.asset(
    key=PR_INTERVALS,
    deps=[PULL_REQUEST_EVENTS],
    group_name=METRICS_GROUP,
    kinds={"duckdb"},
    pool=WAREHOUSE_POOL,
)
def pr_intervals(warehouse: Warehouse, storage: PipelineStorage) -> dg.MaterializeResult:
    """Average, median and p90 time between opened pull requests, per repository."""
    with warehouse.connect() as conn:
        rows = metrics.refresh_pr_intervals(conn)
        with_interval = store.scalar(
            conn, "SELECT count(*) FROM pr_intervals WHERE avg_interval_s IS NOT NULL"
        )
        snapshot.publish_table(conn, storage.snapshot_dir, metrics.PR_INTERVALS)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "repos_with_interval": int(with_interval),
        }
    )


@dg.asset(
    key=EVENT_COUNTS,
    deps=[WATCH_EVENTS, PULL_REQUEST_EVENTS, ISSUES_EVENTS],
    group_name=METRICS_GROUP,
    kinds={"duckdb"},
    pool=WAREHOUSE_POOL,
)
def event_counts(warehouse: Warehouse, storage: PipelineStorage) -> dg.MaterializeResult:
    """Tracked-event counts by type over 5, 15, 60, 360 and 1440-minute look-back windows."""
    as_of = datetime.now(UTC)
    with warehouse.connect() as conn:
        rows = metrics.refresh_event_counts(conn, as_of=as_of)
        last_hour = store.scalar(
            conn, "SELECT coalesce(sum(event_count), 0) FROM event_counts WHERE window_minutes = 60"
        )
        snapshot.publish_table(conn, storage.snapshot_dir, metrics.EVENT_COUNTS)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "as_of": as_of.isoformat(),
            "tracked_events_last_60_min": int(last_hour),
        }
    )


@dg.asset(
    key=REPO_PR_COUNTS,
    deps=[PULL_REQUEST_EVENTS],
    group_name=METRICS_GROUP,
    kinds={"duckdb"},
    pool=WAREHOUSE_POOL,
)
def repo_pr_counts(warehouse: Warehouse, storage: PipelineStorage) -> dg.MaterializeResult:
    """Pull-request events (all actions) and opened PRs per repository."""
    with warehouse.connect() as conn:
        rows = metrics.refresh_repo_pr_counts(conn)
        snapshot.publish_table(conn, storage.snapshot_dir, metrics.REPO_PR_COUNTS)
    return dg.MaterializeResult(metadata={"dagster/row_count": rows})
