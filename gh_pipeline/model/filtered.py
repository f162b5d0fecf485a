"""Filtered tables of the tracked event types (no Dagster import).

Each refresh appends only the raw rows above the table's watermark
(gh_pipeline.warehouse.watermarks), so a tick's cost follows the new events, not the history.
Typed columns are extracted here, once per event; the metrics never re-parse JSON. Which types
are tracked, and the table of each, is declared in gh_pipeline.warehouse.catalogue.
"""

import duckdb

from gh_pipeline.warehouse.catalogue import FILTERED_TABLES, RAW_EVENTS, FilteredTable
from gh_pipeline.warehouse.connection import row_count as _row_count
from gh_pipeline.warehouse.connection import scalar, transaction
from gh_pipeline.warehouse.schema import filtered_ddl
from gh_pipeline.warehouse.watermarks import clear_watermarks, get_watermark, max_seq, set_watermark


def _insert_sql(table: FilteredTable) -> str:
    """Typed rows from raw_events in the seq range ($after, $upto]."""
    number_col = "number," if table.has_number else ""
    number_expr = ""
    if table.has_number:
        paths = ", ".join(f"payload ->> '{path}'" for path in table.number_paths)
        number_expr = f"try_cast(coalesce({paths}) AS INTEGER),"
    # Table names come from the catalogue's fixed FILTERED_TABLES map, never from input. A plain INSERT:
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


def refresh_filtered(conn: duckdb.DuckDBPyConnection, name: str) -> int:
    """Append the raw events of the table's type that arrived since the last refresh; returns how
    many rows were added."""
    table = FILTERED_TABLES[name]
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
    (gh_pipeline.model.metrics.rebuild_metrics), which need only the typed filtered tables.
    """
    names = [name] if name is not None else list(FILTERED_TABLES)
    total = 0
    with transaction(conn):
        upto = max_seq(conn, RAW_EVENTS) or 0
        for table_name in names:
            table = FILTERED_TABLES[table_name]
            # Drop and recreate rather than DELETE: re-inserting deleted keys in the same
            # transaction trips DuckDB's primary-key index.
            conn.execute(f"DROP TABLE IF EXISTS {table.name}")
            conn.execute(filtered_ddl(table, if_not_exists=False))
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
    return _row_count(conn, FILTERED_TABLES[name].name)
