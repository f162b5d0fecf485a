import time
from collections.abc import Iterator

import dagster as dg

from gh_pipeline import settings
from gh_pipeline.defs.charts.metadata import add_chart, chart_due, materialization_due
from gh_pipeline.defs.model import filtered, metrics
from gh_pipeline.defs.warehouse.resources import WAREHOUSE_POOL, PipelineStorage, Warehouse

# Keys, not specs, at module level: the defs loader takes a module-level spec for an asset.
_FILTERED = [spec.key for spec in filtered.specs()]
_METRICS = [spec.key for spec in metrics.specs()]


# The filtered and metric tables in one step (six assets in the UI, each with its own
# materialisation): every poll run refreshes all of them, and each step costs ~3 kB of Dagster
# storage (its start, output and success events) on every poll run. In one step, a table
# that records no materialisation does not make Dagster skip the tables computed from it.
#
# Every run refreshes the tables and their reader snapshots, but a poll run records a
# materialisation at most every $GH_PIPELINE_CHART_REFRESH_MINUTES (a metric asset: with a fresh
# chart, chart_due; a filtered table: materialization_due). So each metric asset's latest
# materialisation always shows a chart at most that old, and the poll runs in between store
# little more than raw_events' poll outcome (docs/operations.md#a-month-unattended).
@dg.multi_asset(
    name="model_tables",
    specs=[*filtered.specs(), *metrics.specs()],
    pool=WAREHOUSE_POOL,
    can_subset=True,
)
def model_tables(
    context: dg.AssetExecutionContext, warehouse: Warehouse, storage: PipelineStorage
) -> Iterator[dg.MaterializeResult]:
    """Refresh the tracked-event tables, then the metric tables computed from them."""
    now = time.time()
    selected = context.selected_asset_keys
    tables = [key for key in _FILTERED if key in selected]
    recorded = {key: materialization_due(context, key, now=now) for key in tables}
    draw = {key: chart_due(context, key, now=now) for key in _METRICS if key in selected}
    with warehouse.connect() as conn:
        counts = filtered.refresh(conn, storage.snapshot_dir, tables)
        refreshed = metrics.refresh(conn, storage.snapshot_dir, draw)
    skipped = [k for k, (due, _) in recorded.items() if not due]
    skipped += [k for k, (_, chart) in refreshed.items() if chart is None]
    if skipped:
        context.log.info(
            f"{', '.join(k.to_user_string() for k in skipped)}: tables and snapshots refreshed; "
            f"materialisations recorded at most every {settings.chart_refresh_minutes()} min "
            f"({settings.ENV_CHART_REFRESH_MINUTES})"
        )
    # Metadata goes in through the context: in a MaterializeResult it is stored twice (Dagster
    # copies it into the step output event too).
    for key, (added, total) in counts.items():
        due, previous = recorded[key]
        if not due:
            continue
        context.add_asset_metadata(
            {
                "dagster/row_count": total,
                "rows_added": added,
                # Poll runs in between record no materialisation: what they added shows here.
                "rows_added_since_last_materialization": total - (previous or 0),
            },
            asset_key=key,
        )
        yield dg.MaterializeResult(asset_key=key)
    for key, (rows, chart) in refreshed.items():
        if chart is None:
            continue
        context.add_asset_metadata({"dagster/row_count": rows, **chart.metadata}, asset_key=key)
        add_chart(context, chart.chart(), storage.charts_dir, asset_key=key)
        yield dg.MaterializeResult(asset_key=key)
