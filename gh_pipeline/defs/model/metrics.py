import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import altair as alt
import dagster as dg
from duckdb import DuckDBPyConnection

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
_DESCRIPTIONS = {
    PR_INTERVALS: "Average, median and p90 time between opened pull requests, per repository.",
    EVENT_COUNTS: "Tracked-event counts by type over 5, 15, 60, 360 and 1440-minute look-back "
    "windows.",
    REPO_PR_COUNTS: "Pull-request events (all actions) and opened PRs per repository.",
}
_DEPS = {
    PR_INTERVALS: [PULL_REQUEST_EVENTS],
    EVENT_COUNTS: [WATCH_EVENTS, PULL_REQUEST_EVENTS, ISSUES_EVENTS],
    REPO_PR_COUNTS: [PULL_REQUEST_EVENTS],
}


@dataclass(frozen=True)
class Draw:
    """A chart to draw after the warehouse connection is closed, and its metadata."""

    chart: Callable[[], alt.TopLevelMixin]
    metadata: dict[str, Any]


def _pr_intervals(conn: DuckDBPyConnection, *, draw: bool) -> tuple[int, Draw | None]:
    rows = metrics.refresh_pr_intervals(conn)
    if not draw:
        return rows, None
    with_interval = scalar(
        conn, "SELECT count(*) FROM pr_intervals WHERE avg_interval_s IS NOT NULL"
    )
    table = figures.table_frame(conn, catalogue.PR_INTERVALS)
    busiest = figures.busiest_repo(table)
    gaps = figures.busiest_repo_gaps_frame(conn, busiest) if busiest else None
    return rows, Draw(
        lambda: figures.pr_intervals_chart(table, gaps),
        {
            "repos_with_interval": int(with_interval),
            "prs_opened": int(table["pr_opened"].sum()),
        },
    )


def _event_counts(conn: DuckDBPyConnection, *, draw: bool) -> tuple[int, Draw | None]:
    as_of = datetime.now(UTC)
    rows = metrics.refresh_event_counts(conn, as_of=as_of)
    if not draw:
        return rows, None
    table = figures.table_frame(conn, catalogue.EVENT_COUNTS)
    per_window = table.groupby("window_minutes")["event_count"].sum()
    return rows, Draw(
        lambda: figures.event_counts_chart(table),
        {
            "as_of": as_of.isoformat(),
            **{f"tracked_events_last_{int(w)}_min": int(n) for w, n in per_window.items()},
        },
    )


def _repo_pr_counts(conn: DuckDBPyConnection, *, draw: bool) -> tuple[int, Draw | None]:
    rows = metrics.refresh_repo_pr_counts(conn)
    if not draw:
        return rows, None
    table = figures.table_frame(conn, catalogue.REPO_PR_COUNTS)
    return rows, Draw(
        lambda: figures.repo_pr_counts_chart(table),
        {
            "pr_events": int(table["pr_events"].sum()),
            "prs_opened": int(table["pr_opened"].sum()),
        },
    )


_REFRESH = {
    PR_INTERVALS: _pr_intervals,
    EVENT_COUNTS: _event_counts,
    REPO_PR_COUNTS: _repo_pr_counts,
}


# One step for the three metric tables (three assets in the UI, each with its own
# materialisation and chart): every poll run refreshes all three, and each step costs ~3 kB of
# Dagster storage (its start and success events) on every poll run, chart or not.
@dg.multi_asset(
    name="metric_tables",
    specs=[
        dg.AssetSpec(
            key,
            deps=_DEPS[key],
            group_name=METRICS_GROUP,
            kinds={"duckdb"},
            description=description,
            skippable=True,
        )
        for key, description in _DESCRIPTIONS.items()
    ],
    pool=WAREHOUSE_POOL,
    can_subset=True,
)
def metric_tables(
    context: dg.AssetExecutionContext, warehouse: Warehouse, storage: PipelineStorage
) -> Iterator[dg.MaterializeResult]:
    """Refresh the metric tables and their reader snapshots; chart them when a chart is due."""
    now = time.time()
    selected = [key for key in _REFRESH if key in context.selected_asset_keys]
    due = {key: chart_due(context, key, now=now) for key in selected}
    refreshed: dict[dg.AssetKey, tuple[int, Draw | None]] = {}
    with warehouse.connect() as conn:
        for key in selected:
            refreshed[key] = _REFRESH[key](conn, draw=due[key])
            snapshot.publish_table(conn, storage.snapshot_dir, key.path[-1])
    undrawn = [k.to_user_string() for k, (_, d) in refreshed.items() if d is None]
    if undrawn:
        context.log.info(
            f"{', '.join(undrawn)}: tables and snapshots refreshed; materialisations and charts "
            f"recorded at most every {settings.chart_refresh_minutes()} min "
            f"({settings.ENV_CHART_REFRESH_MINUTES})"
        )
    for key, (rows, draw) in refreshed.items():
        if draw is None:
            continue
        # Through the context: metadata in a MaterializeResult is stored twice (Dagster copies
        # it into the step output event too).
        context.add_asset_metadata({"dagster/row_count": rows, **draw.metadata}, asset_key=key)
        add_chart(context, draw.chart(), asset_key=key)
        yield dg.MaterializeResult(asset_key=key)
