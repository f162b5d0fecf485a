from datetime import UTC, datetime

import dagster as dg

from gh_pipeline.charts import figures
from gh_pipeline.defs.charts.metadata import chart_metadata
from gh_pipeline.defs.warehouse.keys import (
    EVENT_COUNTS,
    ISSUES_EVENTS,
    METRICS_GROUP,
    PR_INTERVALS,
    PULL_REQUEST_EVENTS,
    REPO_PR_COUNTS,
    WATCH_EVENTS,
)
from gh_pipeline.defs.warehouse.resources import WAREHOUSE_POOL, PipelineStorage, Warehouse
from gh_pipeline.model import metrics
from gh_pipeline.publish import snapshot
from gh_pipeline.warehouse import catalogue
from gh_pipeline.warehouse.connection import scalar


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
        with_interval = scalar(
            conn, "SELECT count(*) FROM pr_intervals WHERE avg_interval_s IS NOT NULL"
        )
        snapshot.publish_table(conn, storage.snapshot_dir, catalogue.PR_INTERVALS)
        table = figures.table_frame(conn, catalogue.PR_INTERVALS)
        busiest = figures.busiest_repo(table)
        gaps = figures.busiest_repo_gaps_frame(conn, busiest) if busiest else None
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "repos_with_interval": int(with_interval),
            "prs_opened": int(table["pr_opened"].sum()),
            **chart_metadata(figures.pr_intervals_chart(table, gaps)),
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
        snapshot.publish_table(conn, storage.snapshot_dir, catalogue.EVENT_COUNTS)
        table = figures.table_frame(conn, catalogue.EVENT_COUNTS)
    per_window = table.groupby("window_minutes")["event_count"].sum()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "as_of": as_of.isoformat(),
            **{f"tracked_events_last_{int(w)}_min": int(n) for w, n in per_window.items()},
            **chart_metadata(figures.event_counts_chart(table)),
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
        snapshot.publish_table(conn, storage.snapshot_dir, catalogue.REPO_PR_COUNTS)
        table = figures.table_frame(conn, catalogue.REPO_PR_COUNTS)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "pr_events": int(table["pr_events"].sum()),
            "prs_opened": int(table["pr_opened"].sum()),
            **chart_metadata(figures.repo_pr_counts_chart(table)),
        }
    )
