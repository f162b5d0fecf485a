import dagster as dg

RAW_EVENTS = dg.AssetKey("raw_events")
WATCH_EVENTS = dg.AssetKey("watch_events")
PULL_REQUEST_EVENTS = dg.AssetKey("pull_request_events")
ISSUES_EVENTS = dg.AssetKey("issues_events")
PR_INTERVALS = dg.AssetKey("pr_intervals")
EVENT_COUNTS = dg.AssetKey("event_counts")
REPO_PR_COUNTS = dg.AssetKey("repo_pr_counts")
GHARCHIVE_HOURLY = dg.AssetKey("gharchive_hourly")

INGEST_GROUP = "ingest"
FILTERED_GROUP = "filtered"
METRICS_GROUP = "metrics"
