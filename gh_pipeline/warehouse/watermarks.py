"""How far each derived table has read its sources (no Dagster import).

A refresh appends only the source rows above its watermark (the highest source `seq` it has
already looked at), so a tick's cost follows the new events, not the history: `seq` grows with
insertion order, so DuckDB's per-row-group min/max statistics skip every older row group. One row
per (target table, source table) in `incremental_watermarks`, written in the same transaction as
the rows it describes, so a crash can neither drop nor double-count events.
"""

from datetime import UTC, datetime

import duckdb

from gh_pipeline.warehouse.catalogue import WATERMARKS
from gh_pipeline.warehouse.connection import scalar


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
