"""Asset keys and groups, derived from the warehouse catalogue: a table asset's key is its table
name (gh_pipeline.warehouse.catalogue declares both once)."""

import dagster as dg

from gh_pipeline.warehouse import catalogue

RAW_EVENTS = dg.AssetKey(catalogue.RAW_EVENTS)
WATCH_EVENTS = dg.AssetKey(catalogue.WATCH_EVENTS)
PULL_REQUEST_EVENTS = dg.AssetKey(catalogue.PULL_REQUEST_EVENTS)
ISSUES_EVENTS = dg.AssetKey(catalogue.ISSUES_EVENTS)
PR_INTERVALS = dg.AssetKey(catalogue.PR_INTERVALS)
EVENT_COUNTS = dg.AssetKey(catalogue.EVENT_COUNTS)
REPO_PR_COUNTS = dg.AssetKey(catalogue.REPO_PR_COUNTS)
# The one asset that is not a table: an hourly partition of GH Archive loaded into raw_events.
GHARCHIVE_HOURLY = dg.AssetKey("gharchive_hourly")

# Every catalogue table that an asset materialises, by table name.
TABLE_ASSETS: dict[str, dg.AssetKey] = {
    t.name: dg.AssetKey(t.name) for t in catalogue.TABLES if t.asset
}

INGEST_GROUP = "ingest"
FILTERED_GROUP = "filtered"
METRICS_GROUP = "metrics"
