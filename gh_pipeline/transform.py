"""Filtered tables of the tracked event types (no Dagster import).

Each refresh appends only raw rows with a `seq` above the table's high-water mark, so a tick's
cost follows the new events, not the history. Typed columns are extracted once here; metrics
never re-parse JSON.
"""

from dataclasses import dataclass

import duckdb

from gh_pipeline.store import scalar

WATCH_EVENTS = "watch_events"
PULL_REQUEST_EVENTS = "pull_request_events"
ISSUES_EVENTS = "issues_events"


@dataclass(frozen=True)
class FilteredTable:
    name: str
    event_type: str
    has_number: bool


FILTERED_TABLES: dict[str, FilteredTable] = {
    WATCH_EVENTS: FilteredTable(WATCH_EVENTS, "WatchEvent", has_number=False),
    PULL_REQUEST_EVENTS: FilteredTable(PULL_REQUEST_EVENTS, "PullRequestEvent", has_number=True),
    ISSUES_EVENTS: FilteredTable(ISSUES_EVENTS, "IssuesEvent", has_number=True),
}


def _ddl(table: FilteredTable) -> str:
    number = "number INTEGER," if table.has_number else ""
    return f"""
    CREATE TABLE IF NOT EXISTS {table.name} (
        event_id    VARCHAR PRIMARY KEY,
        created_at  TIMESTAMPTZ NOT NULL,
        actor_login VARCHAR,
        repo_id     BIGINT,
        repo_name   VARCHAR NOT NULL,
        action      VARCHAR,
        {number}
        source      VARCHAR NOT NULL,
        seq         BIGINT NOT NULL
    )"""


def ensure_filtered_schema(conn: duckdb.DuckDBPyConnection) -> None:
    for table in FILTERED_TABLES.values():
        conn.execute(_ddl(table))


def refresh_filtered(conn: duckdb.DuckDBPyConnection, name: str) -> int:
    """Append new raw events of the table's type; returns how many rows were added."""
    table = FILTERED_TABLES[name]
    ensure_filtered_schema(conn)
    number_col = "number," if table.has_number else ""
    number_expr = "try_cast(payload ->> '$.number' AS INTEGER)," if table.has_number else ""
    # Table names come from the fixed FILTERED_TABLES map above, never from input.
    sql = f"""
    INSERT INTO {table.name}
        (event_id, created_at, actor_login, repo_id, repo_name, action, {number_col} source, seq)
    SELECT event_id, created_at, actor_login, repo_id, repo_name, payload ->> '$.action',
           {number_expr} source, seq
    FROM raw_events r
    WHERE event_type = $event_type
      AND seq > (SELECT coalesce(max(seq), 0) FROM {table.name})
      AND NOT EXISTS (SELECT 1 FROM {table.name} t WHERE t.event_id = r.event_id)
    ORDER BY seq
    """
    return int(scalar(conn, sql, {"event_type": table.event_type}))


def row_count(conn: duckdb.DuckDBPyConnection, name: str) -> int:
    return int(scalar(conn, f"SELECT count(*) FROM {FILTERED_TABLES[name].name}"))
