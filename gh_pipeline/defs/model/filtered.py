from pathlib import Path

import dagster as dg
from duckdb import DuckDBPyConnection

from gh_pipeline.defs.warehouse.keys import (
    FILTERED_GROUP,
    GHARCHIVE_HOURLY,
    ISSUES_EVENTS,
    PULL_REQUEST_EVENTS,
    RAW_EVENTS,
    WATCH_EVENTS,
)
from gh_pipeline.model import filtered
from gh_pipeline.publish import snapshot

_DESCRIPTIONS = {
    WATCH_EVENTS: "WatchEvents (stars) with typed columns.",
    PULL_REQUEST_EVENTS: "PullRequestEvents with action and PR number as typed columns.",
    ISSUES_EVENTS: "IssuesEvents with action and issue number as typed columns.",
}


def specs() -> list[dg.AssetSpec]:
    """The three filtered tables' asset specs (a function: the defs loader would take a
    module-level spec for an asset of its own)."""
    return [
        dg.AssetSpec(
            key,
            # Both feed the raw_events table; the refresh appends whatever either stored since
            # the last run, so an archive hour flows in like a live poll.
            deps=[RAW_EVENTS, GHARCHIVE_HOURLY],
            group_name=FILTERED_GROUP,
            kinds={"duckdb"},
            description=description,
            skippable=True,
        )
        for key, description in _DESCRIPTIONS.items()
    ]


def refresh(
    conn: DuckDBPyConnection, snapshot_dir: Path, keys: list[dg.AssetKey]
) -> dict[dg.AssetKey, tuple[int, int]]:
    """Append new rows to each filtered table in `keys` and republish its reader snapshot;
    returns (rows added, rows now) per table."""
    counts = {}
    for key in keys:
        table = key.path[-1]
        added = filtered.refresh_filtered(conn, table)
        counts[key] = (added, filtered.row_count(conn, table))
        snapshot.publish_table(conn, snapshot_dir, table)
    return counts
