import dagster as dg

from gh_pipeline import charts, ingest, store
from gh_pipeline.defs.asset_keys import INGEST_GROUP, RAW_EVENTS
from gh_pipeline.defs.chart_values import chart_metadata
from gh_pipeline.defs.resources import WAREHOUSE_POOL, GitHubApiResource, PipelineStorage, Warehouse


@dg.asset(key=RAW_EVENTS, group_name=INGEST_GROUP, kinds={"github", "duckdb"}, pool=WAREHOUSE_POOL)
def raw_events(
    context: dg.AssetExecutionContext,
    github: GitHubApiResource,
    warehouse: Warehouse,
    storage: PipelineStorage,
) -> dg.MaterializeResult:
    """Every event polled from GitHub's /events feed, stored exactly once per event id."""
    with github.client() as client, warehouse.connect() as conn:
        outcome = ingest.poll_once(
            client=client, conn=conn, data_dir=storage.root, poll_id=context.run.run_id
        )
        total = int(store.scalar(conn, "SELECT count(*) FROM raw_events"))
        history = charts.poll_history_frame(conn)
    context.log.info(
        f"poll {outcome.poll_id}: HTTP {outcome.status}, {outcome.pages} page(s), "
        f"{outcome.received} received, {outcome.new} new, {outcome.duplicates} duplicates"
    )
    gap = outcome.possible_gap
    if gap is not None:
        context.log.warning(f"possible gap: {ingest.describe_gap(gap)}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": total,
            "http_status": outcome.status,
            "pages": outcome.pages,
            "events_received": outcome.received,
            "new_events": outcome.new,
            "duplicates": outcome.duplicates,
            "rejected": outcome.rejected,
            "etag_matched": outcome.etag_matched,
            "reached_known_events": outcome.reached_known,
            "rate_limit_remaining": dg.MetadataValue.int(outcome.rate_limit_remaining)
            if outcome.rate_limit_remaining is not None
            else dg.MetadataValue.text("unknown"),
            "next_poll_at": outcome.next_poll_at.isoformat() if outcome.next_poll_at else "now",
            "next_poll_reason": outcome.next_poll_reason or "",
            "requests": outcome.requests,
            "possible_gap": gap is not None,
            "possible_gap_span": ingest.describe_gap(gap) if gap is not None else "none",
            "landing_file": str(outcome.landing_file)
            if outcome.landing_file
            else "none (no events)",
            **chart_metadata(charts.poll_history_chart(history)),
        }
    )
