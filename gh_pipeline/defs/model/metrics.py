import time
from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg

from gh_pipeline import settings
from gh_pipeline.charts import figures
from gh_pipeline.defs.charts.metadata import add_chart, chart_due
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

# A metric asset's table and reader snapshot are refreshed in every run that selects it, but it
# records a materialisation only with a fresh chart (chart_due): so its latest materialisation
# always shows a chart at most $GH_PIPELINE_CHART_REFRESH_MINUTES old, and the poll runs in
# between store no chart at all.
_METRIC_ASSET = {
    "group_name": METRICS_GROUP,
    "kinds": {"duckdb"},
    "pool": WAREHOUSE_POOL,
    "output_required": False,
}


def _skipped(context: dg.AssetExecutionContext, rows: int) -> None:
    context.log.info(
        f"{context.asset_key.to_user_string()}: table and snapshot refreshed ({rows} rows); "
        f"materialisation and chart recorded at most every "
        f"{settings.chart_refresh_minutes()} min ({settings.ENV_CHART_REFRESH_MINUTES})"
    )


@dg.asset(key=PR_INTERVALS, deps=[PULL_REQUEST_EVENTS], **_METRIC_ASSET)
def pr_intervals(
    context: dg.AssetExecutionContext, warehouse: Warehouse, storage: PipelineStorage
) -> Iterator[dg.MaterializeResult]:
    """Average, median and p90 time between opened pull requests, per repository."""
    draw = chart_due(context, PR_INTERVALS, now=time.time())
    with warehouse.connect() as conn:
        rows = metrics.refresh_pr_intervals(conn)
        snapshot.publish_table(conn, storage.snapshot_dir, catalogue.PR_INTERVALS)
        if not draw:
            _skipped(context, rows)
            return
        with_interval = scalar(
            conn, "SELECT count(*) FROM pr_intervals WHERE avg_interval_s IS NOT NULL"
        )
        table = figures.table_frame(conn, catalogue.PR_INTERVALS)
        busiest = figures.busiest_repo(table)
        gaps = figures.busiest_repo_gaps_frame(conn, busiest) if busiest else None
    add_chart(context, figures.pr_intervals_chart(table, gaps))
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "repos_with_interval": int(with_interval),
            "prs_opened": int(table["pr_opened"].sum()),
        }
    )


@dg.asset(
    key=EVENT_COUNTS, deps=[WATCH_EVENTS, PULL_REQUEST_EVENTS, ISSUES_EVENTS], **_METRIC_ASSET
)
def event_counts(
    context: dg.AssetExecutionContext, warehouse: Warehouse, storage: PipelineStorage
) -> Iterator[dg.MaterializeResult]:
    """Tracked-event counts by type over 5, 15, 60, 360 and 1440-minute look-back windows."""
    as_of = datetime.now(UTC)
    draw = chart_due(context, EVENT_COUNTS, now=as_of.timestamp())
    with warehouse.connect() as conn:
        rows = metrics.refresh_event_counts(conn, as_of=as_of)
        snapshot.publish_table(conn, storage.snapshot_dir, catalogue.EVENT_COUNTS)
        if not draw:
            _skipped(context, rows)
            return
        table = figures.table_frame(conn, catalogue.EVENT_COUNTS)
    per_window = table.groupby("window_minutes")["event_count"].sum()
    add_chart(context, figures.event_counts_chart(table))
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "as_of": as_of.isoformat(),
            **{f"tracked_events_last_{int(w)}_min": int(n) for w, n in per_window.items()},
        }
    )


@dg.asset(key=REPO_PR_COUNTS, deps=[PULL_REQUEST_EVENTS], **_METRIC_ASSET)
def repo_pr_counts(
    context: dg.AssetExecutionContext, warehouse: Warehouse, storage: PipelineStorage
) -> Iterator[dg.MaterializeResult]:
    """Pull-request events (all actions) and opened PRs per repository."""
    draw = chart_due(context, REPO_PR_COUNTS, now=time.time())
    with warehouse.connect() as conn:
        rows = metrics.refresh_repo_pr_counts(conn)
        snapshot.publish_table(conn, storage.snapshot_dir, catalogue.REPO_PR_COUNTS)
        if not draw:
            _skipped(context, rows)
            return
        table = figures.table_frame(conn, catalogue.REPO_PR_COUNTS)
    add_chart(context, figures.repo_pr_counts_chart(table))
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "pr_events": int(table["pr_events"].sum()),
            "prs_opened": int(table["pr_opened"].sum()),
        }
    )
