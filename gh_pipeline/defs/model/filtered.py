import dagster as dg

from gh_pipeline.defs.charts.metadata import only_in_materialization
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


def _filtered_asset(key: dg.AssetKey, description: str) -> dg.AssetsDefinition:
    table = key.path[-1]

    @dg.asset(
        key=key,
        # Both feed the raw_events table; the refresh appends whatever either stored since the
        # last run, so an archive hour flows in like a live poll.
        deps=[RAW_EVENTS, GHARCHIVE_HOURLY],
        group_name=FILTERED_GROUP,
        kinds={"duckdb"},
        pool=WAREHOUSE_POOL,
        description=description,
    )
    def _asset(
        context: dg.AssetExecutionContext, warehouse: Warehouse, storage: PipelineStorage
    ) -> dg.MaterializeResult:
        with warehouse.connect() as conn:
            added = filtered.refresh_filtered(conn, table)
            total = filtered.row_count(conn, table)
            snapshot.publish_table(conn, storage.snapshot_dir, table)
        return only_in_materialization(context, {"dagster/row_count": total, "rows_added": added})

    return _asset


watch_events = _filtered_asset(WATCH_EVENTS, "WatchEvents (stars) with typed columns.")
pull_request_events = _filtered_asset(
    PULL_REQUEST_EVENTS, "PullRequestEvents with action and PR number as typed columns."
)
issues_events = _filtered_asset(
    ISSUES_EVENTS, "IssuesEvents with action and issue number as typed columns."
)
