"""Opening the warehouse and the one transaction helper (no Dagster import).

Every write of the pipeline goes through `transaction`, so a crash leaves either all rows of a
step or none; no other module begins, commits or rolls back.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from gh_pipeline.warehouse.schema import ensure_schema


def connect(path: Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the warehouse file; a writable connection gets every table the steps expect."""
    if read_only:
        return duckdb.connect(str(path), read_only=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = duckdb.connect(str(path))
    try:
        ensure_schema(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def scalar(conn: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None) -> Any:
    """First value of a query, fully consuming the result (DuckDB 2 refuses new work on a
    connection that still holds an unfinished result)."""
    rows = conn.execute(sql, params or {}).fetchall()
    return rows[0][0] if rows else None


class Rollback(Exception):
    """Raised inside `transaction` to undo it without an error reaching the caller."""


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One transaction: everything written inside commits together or not at all. Raising
    `Rollback` inside undoes it quietly (a step that finds it should take another path)."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield
        conn.execute("COMMIT")
    except Rollback:
        conn.execute("ROLLBACK")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def table_exists(conn: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether `table` is a permanent table of the current schema."""
    return bool(
        scalar(
            conn,
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = $t AND NOT temporary"
            " AND schema_name = current_schema()",
            {"t": table},
        )
    )


def row_count(conn: duckdb.DuckDBPyConnection, table: str) -> int:
    """Rows of a catalogue table (`table` is a catalogue constant, never input)."""
    return int(scalar(conn, f"SELECT count(*) FROM {table}"))
