"""Metric tables computed from the typed filtered tables (no Dagster import)."""

from datetime import datetime

import duckdb

from gh_pipeline.models import EVENT_COUNT_WINDOWS_MIN, TRACKED_EVENT_TYPES
from gh_pipeline.store import scalar

PR_INTERVALS = "pr_intervals"
EVENT_COUNTS = "event_counts"
REPO_PR_COUNTS = "repo_pr_counts"

_PR_INTERVALS_SQL = """
CREATE OR REPLACE TABLE pr_intervals AS
WITH opened AS (
    SELECT repo_name, created_at,
           epoch(created_at - lag(created_at) OVER (
               PARTITION BY repo_name ORDER BY created_at, event_id)) AS gap_s
    FROM pull_request_events
    WHERE action = 'opened'
)
SELECT repo_name,
       count(*)::BIGINT AS pr_opened,
       min(created_at) AS first_opened_at,
       max(created_at) AS last_opened_at,
       avg(gap_s)::DOUBLE AS avg_interval_s,
       quantile_cont(gap_s, 0.5)::DOUBLE AS median_interval_s,
       quantile_cont(gap_s, 0.9)::DOUBLE AS p90_interval_s
FROM opened
GROUP BY repo_name
ORDER BY repo_name
"""

_EVENT_COUNTS_SQL = """
CREATE OR REPLACE TABLE event_counts AS
WITH tracked AS (
    SELECT 'WatchEvent' AS event_type, created_at FROM watch_events
    UNION ALL SELECT 'PullRequestEvent', created_at FROM pull_request_events
    UNION ALL SELECT 'IssuesEvent', created_at FROM issues_events
), grid AS (
    SELECT w.window_minutes, t.event_type
    FROM unnest($windows) AS w(window_minutes) CROSS JOIN unnest($types) AS t(event_type)
)
SELECT $as_of::TIMESTAMPTZ AS as_of,
       g.window_minutes::INTEGER AS window_minutes,
       g.event_type,
       count(e.created_at)::BIGINT AS event_count
FROM grid g
LEFT JOIN tracked e
  ON e.event_type = g.event_type
 AND e.created_at > $as_of::TIMESTAMPTZ - to_minutes(g.window_minutes::BIGINT)
 AND e.created_at <= $as_of::TIMESTAMPTZ
GROUP BY ALL
ORDER BY window_minutes, event_type
"""

_REPO_PR_COUNTS_SQL = """
CREATE OR REPLACE TABLE repo_pr_counts AS
SELECT repo_name,
       count(*)::BIGINT AS pr_events,
       count(*) FILTER (WHERE action = 'opened')::BIGINT AS pr_opened
FROM pull_request_events
GROUP BY repo_name
ORDER BY pr_events DESC, repo_name
"""


def refresh_pr_intervals(conn: duckdb.DuckDBPyConnection) -> int:
    conn.execute(_PR_INTERVALS_SQL)
    return _count(conn, PR_INTERVALS)


def refresh_event_counts(conn: duckdb.DuckDBPyConnection, *, as_of: datetime) -> int:
    conn.execute(
        _EVENT_COUNTS_SQL,
        {
            "as_of": as_of,
            "windows": list(EVENT_COUNT_WINDOWS_MIN),
            "types": list(TRACKED_EVENT_TYPES),
        },
    )
    return _count(conn, EVENT_COUNTS)


def refresh_repo_pr_counts(conn: duckdb.DuckDBPyConnection) -> int:
    conn.execute(_REPO_PR_COUNTS_SQL)
    return _count(conn, REPO_PR_COUNTS)


def _count(conn: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(scalar(conn, f"SELECT count(*) FROM {table}"))
