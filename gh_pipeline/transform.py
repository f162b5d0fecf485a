"""Filtered tables of the tracked event types (no Dagster import).

Each refresh appends only the raw rows above the table's watermark (the highest raw `seq` it has
already looked at), so a tick's cost follows the new events, not the history: `seq` grows with
insertion order, so DuckDB's per-row-group min/max statistics skip every older row group. Typed
columns are extracted here, once per event; the metrics never re-parse JSON.

The watermarks live in `incremental_watermarks`, one row per (target table, source table), and
the metric tables (gh_pipeline.metrics) use the same bookkeeping for their own sources.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from gh_pipeline.store import ensure_schema, scalar

WATCH_EVENTS = "watch_events"
PULL_REQUEST_EVENTS = "pull_request_events"
ISSUES_EVENTS = "issues_events"
RAW_EVENTS = "raw_events"
WATERMARKS = "incremental_watermarks"


@dataclass(frozen=True)
class FilteredTable:
    name: str
    event_type: str
    has_number: bool
    # Where the payload keeps the number, first match wins (an IssuesEvent has it only inside
    # `issue`; a PullRequestEvent at the top, and inside `pull_request` in the trimmed shape too).
    number_paths: tuple[str, ...] = ()


FILTERED_TABLES: dict[str, FilteredTable] = {
    WATCH_EVENTS: FilteredTable(WATCH_EVENTS, "WatchEvent", has_number=False),
    PULL_REQUEST_EVENTS: FilteredTable(
        PULL_REQUEST_EVENTS,
        "PullRequestEvent",
        has_number=True,
        number_paths=("$.number", "$.pull_request.number"),
    ),
    ISSUES_EVENTS: FilteredTable(
        ISSUES_EVENTS, "IssuesEvent", has_number=True, number_paths=("$.issue.number",)
    ),
}

_WATERMARKS_DDL = f"""
CREATE TABLE IF NOT EXISTS {WATERMARKS} (
    target      VARCHAR NOT NULL,
    source      VARCHAR NOT NULL,
    last_seq    BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (target, source)
)"""


def _ddl(table: FilteredTable, *, if_not_exists: bool = True) -> str:
    number = "number INTEGER," if table.has_number else ""
    guard = "IF NOT EXISTS" if if_not_exists else ""
    return f"""
    CREATE TABLE {guard} {table.name} (
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


def _insert_sql(table: FilteredTable) -> str:
    """Typed rows from raw_events in the seq range ($after, $upto]."""
    number_col = "number," if table.has_number else ""
    number_expr = ""
    if table.has_number:
        paths = ", ".join(f"payload ->> '{path}'" for path in table.number_paths)
        number_expr = f"try_cast(coalesce({paths}) AS INTEGER),"
    # Table names come from the fixed FILTERED_TABLES map above, never from input. A plain INSERT:
    # each raw row lies in exactly one watermark range, so there is nothing to ignore, and
    # INSERT OR IGNORE costs DuckDB two to three times as much here.
    return f"""
    INSERT INTO {table.name}
        (event_id, created_at, actor_login, repo_id, repo_name, action, {number_col} source, seq)
    SELECT event_id, created_at, actor_login, repo_id, repo_name, payload ->> '$.action',
           {number_expr} source, seq
    FROM raw_events
    WHERE event_type = $event_type AND seq > $after AND seq <= $upto
    ORDER BY seq
    """


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One transaction: a refresh's rows and its watermark commit together or not at all, so a
    crash can neither drop nor double-count events."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def ensure_watermarks(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(_WATERMARKS_DDL)


def get_watermark(conn: duckdb.DuckDBPyConnection, target: str, source: str) -> int | None:
    """The highest `seq` of `source` already folded into `target`, or None when never recorded."""
    value = scalar(
        conn,
        f"SELECT last_seq FROM {WATERMARKS} WHERE target = $target AND source = $source",
        {"target": target, "source": source},
    )
    return None if value is None else int(value)


def set_watermark(conn: duckdb.DuckDBPyConnection, target: str, source: str, seq: int) -> None:
    params = {"target": target, "source": source, "seq": seq, "now": datetime.now(UTC)}
    # UPDATE first: it is the common case, and markedly cheaper in DuckDB than INSERT OR REPLACE.
    updated = scalar(
        conn,
        f"UPDATE {WATERMARKS} SET last_seq = $seq, updated_at = $now"
        " WHERE target = $target AND source = $source",
        params,
    )
    if not updated:
        conn.execute(f"INSERT INTO {WATERMARKS} VALUES ($target, $source, $seq, $now)", params)


def clear_watermarks(conn: duckdb.DuckDBPyConnection, target: str) -> None:
    conn.execute(f"DELETE FROM {WATERMARKS} WHERE target = $target", {"target": target})


def max_seq(conn: duckdb.DuckDBPyConnection, table: str, *, after: int = 0) -> int | None:
    """Highest `seq` in `table` above `after` (None if none). The `after` bound lets DuckDB skip
    every row group whose statistics end below it, so this stays cheap as the table grows."""
    value = scalar(conn, f"SELECT max(seq) FROM {table} WHERE seq > $after", {"after": after})
    return None if value is None else int(value)


def ensure_filtered_schema(conn: duckdb.DuckDBPyConnection) -> None:
    ensure_watermarks(conn)
    for table in FILTERED_TABLES.values():
        conn.execute(_ddl(table))


def ensure_warehouse_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Every table the pipeline's steps expect on opening the warehouse: raw_events and its
    bookkeeping (gh_pipeline.store), the watermarks and the filtered tables."""
    ensure_schema(conn)
    ensure_filtered_schema(conn)


def refresh_filtered(conn: duckdb.DuckDBPyConnection, name: str) -> int:
    """Append the raw events of the table's type that arrived since the last refresh; returns how
    many rows were added."""
    table = FILTERED_TABLES[name]
    ensure_filtered_schema(conn)
    with transaction(conn):
        after = get_watermark(conn, table.name, RAW_EVENTS)
        if after is None:
            # A table filled before watermarks existed: resume after its newest row.
            after = max_seq(conn, table.name) or 0
        upto = max_seq(conn, RAW_EVENTS, after=after)
        if upto is None:
            set_watermark(conn, table.name, RAW_EVENTS, after)
            return 0
        added = int(
            scalar(
                conn,
                _insert_sql(table),
                {"event_type": table.event_type, "after": after, "upto": upto},
            )
        )
        # The watermark moves past non-tracked rows too, so they are never scanned again.
        set_watermark(conn, table.name, RAW_EVENTS, upto)
    return added


def rebuild_filtered(conn: duckdb.DuckDBPyConnection, name: str | None = None) -> int:
    """Full-rebuild path: recreate one filtered table (or all three) from every raw event.

    Only as complete as raw_events: once raw payloads are pruned, rebuild the metrics instead
    (gh_pipeline.metrics.rebuild_metrics), which need only the typed filtered tables.
    """
    ensure_watermarks(conn)
    names = [name] if name is not None else list(FILTERED_TABLES)
    total = 0
    with transaction(conn):
        upto = max_seq(conn, RAW_EVENTS) or 0
        for table_name in names:
            table = FILTERED_TABLES[table_name]
            # Drop and recreate rather than DELETE: re-inserting deleted keys in the same
            # transaction trips DuckDB's primary-key index.
            conn.execute(f"DROP TABLE IF EXISTS {table.name}")
            conn.execute(_ddl(table, if_not_exists=False))
            total += int(
                scalar(
                    conn,
                    _insert_sql(table),
                    {"event_type": table.event_type, "after": 0, "upto": upto},
                )
            )
            clear_watermarks(conn, table.name)
            set_watermark(conn, table.name, RAW_EVENTS, upto)
    return total


def row_count(conn: duckdb.DuckDBPyConnection, name: str) -> int:
    return int(scalar(conn, f"SELECT count(*) FROM {FILTERED_TABLES[name].name}"))
