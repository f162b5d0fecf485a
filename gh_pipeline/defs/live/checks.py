from datetime import UTC, datetime, timedelta

import dagster as dg

from gh_pipeline.defs.warehouse.keys import RAW_EVENTS
from gh_pipeline.defs.warehouse.resources import WAREHOUSE_POOL, Warehouse
from gh_pipeline.live import poll_log

POSSIBLE_GAP_CHECK = "no_possible_gap_last_24h"
# The longest metric window (event_counts, 1440 min) is what a gap can distort; look back as far.
GAP_LOOKBACK = timedelta(hours=24)


@dg.asset_check(
    asset=RAW_EVENTS,
    name=POSSIBLE_GAP_CHECK,
    blocking=False,
    pool=WAREHOUSE_POOL,
    description=(
        "Warns when a poll in the last 24 hours received only new events and did not see the "
        "whole feed: events published between it and the previous poll may be missing."
    ),
)
def raw_events_possible_gap(warehouse: Warehouse) -> dg.AssetCheckResult:
    """Warns when a poll in the last 24 hours may have missed events (a possible gap)."""
    since = datetime.now(UTC) - GAP_LOOKBACK
    with warehouse.connect() as conn:
        summary = poll_log.gap_summary(conn, since=since)
    latest = summary["latest"]
    metadata: dict[str, dg.RawMetadataValue] = {
        "possible_gaps_last_24h": summary["recent"],
        "possible_gaps_total": summary["total"],
    }
    if latest is not None:

        def at(t: datetime | None) -> str:
            return t.isoformat(timespec="seconds") if t is not None else "unknown"

        metadata.update(
            {
                "latest_gap_poll_id": latest["poll_id"],
                "latest_gap_detected_at": at(latest["detected_at"]),
                "latest_gap_start": at(latest["gap_start"]),
                "latest_gap_end": at(latest["gap_end"]),
            }
        )
    return dg.AssetCheckResult(
        passed=summary["recent"] == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=metadata,
    )
