import dagster as dg

from gh_pipeline.defs.warehouse.keys import (
    FILTERED_GROUP,
    GHARCHIVE_HOURLY,
    ISSUES_EVENTS,
    PULL_REQUEST_EVENTS,
    RAW_EVENTS,
    WATCH_EVENTS,
)
from gh_pipeline.defs.warehouse.resources import WAREHOUSE_POOL, PipelineStorage, Warehouse
from gh_pipeline.model import filtered
from gh_pipeline.publish import snapshot

_DESCRIPTIONS = {
    WATCH_EVENTS: "WatchEvents (stars) with typed columns.",
    PULL_REQUEST_EVENTS: "PullRequestEvents with action and PR number as typed columns.",
    ISSUES_EVENTS: "IssuesEvents with action and issue number as typed columns.",
}


# One step for the three tables (three assets in the UI, each with its own materialisation):
# every poll run refreshes all three, and a step costs ~3 kB of Dagster storage (its start,
# output and success events) on every poll on top of the materialisation.
@dg.multi_asset(
    name="filtered_tables",
    specs=[
        dg.AssetSpec(
            key,
            # Both feed the raw_events table; the refresh appends whatever either stored since
            # the last run, so an archive hour flows in like a live poll.
            deps=[RAW_EVENTS, GHARCHIVE_HOURLY],
            group_name=FILTERED_GROUP,
            kinds={"duckdb"},
            description=description,
        )
        for key, description in _DESCRIPTIONS.items()
    ],
    pool=WAREHOUSE_POOL,
)
def filtered_tables(
    context: dg.AssetExecutionContext, warehouse: Warehouse, storage: PipelineStorage
):
    """Refresh the typed tables of the tracked event types from raw_events."""
    with warehouse.connect() as conn:
        for key in _DESCRIPTIONS:
            table = key.path[-1]
            added = filtered.refresh_filtered(conn, table)
            total = filtered.row_count(conn, table)
            snapshot.publish_table(conn, storage.snapshot_dir, table)
            # Metadata added through the context is stored in the materialisation only, not
            # copied into the step output as well.
            context.add_asset_metadata(
                {"dagster/row_count": total, "rows_added": added}, asset_key=key
            )
            yield dg.MaterializeResult(asset_key=key)
