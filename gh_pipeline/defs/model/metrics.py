from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import altair as alt
import dagster as dg
from duckdb import DuckDBPyConnection

from gh_pipeline.charts import figures
from gh_pipeline.defs.warehouse.keys import (
    EVENT_COUNTS,
    ISSUES_EVENTS,
    METRICS_GROUP,
    PR_INTERVALS,
    PULL_REQUEST_EVENTS,
    REPO_PR_COUNTS,
    WATCH_EVENTS,
)
from gh_pipeline.model import metrics
from gh_pipeline.publish import snapshot
from gh_pipeline.warehouse import catalogue
from gh_pipeline.warehouse.connection import scalar

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


def specs() -> list[dg.AssetSpec]:
    """The three metric assets' specs (a function: the defs loader would take a module-level
    spec for an asset of its own)."""
    return [
        dg.AssetSpec(
            key,
            deps=_DEPS[key],
            group_name=METRICS_GROUP,
            kinds={"duckdb"},
            description=description,
            skippable=True,
        )
        for key, description in _DESCRIPTIONS.items()
    ]


def refresh(
    conn: DuckDBPyConnection, snapshot_dir: Path, draw: dict[dg.AssetKey, bool]
) -> dict[dg.AssetKey, tuple[int, Draw | None]]:
    """Recompute each metric table in `draw` and republish its reader snapshot; returns its row
    count and, where draw[key] is true, the chart to draw and its metadata."""
    out = {}
    for key, due in draw.items():
        out[key] = _REFRESH[key](conn, draw=due)
        snapshot.publish_table(conn, snapshot_dir, key.path[-1])
    return out
