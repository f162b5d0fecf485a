"""Read-only snapshots for notebooks (no Dagster import).

After each materialisation a table is copied to Parquet under a temporary name and renamed into
place: readers never open the warehouse, so they never block the single DuckDB writer, and a
rename is atomic, so they never see a torn file.
"""

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import duckdb


def snapshot_file(snapshot_dir: Path, table: str) -> Path:
    return snapshot_dir / f"{table}.parquet"


def publish_table(conn: duckdb.DuckDBPyConnection, snapshot_dir: Path, table: str) -> Path:
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    final = snapshot_file(snapshot_dir, table)
    tmp = snapshot_dir / f".{table}.{os.getpid()}.parquet.tmp"
    conn.table(table).write_parquet(str(tmp))
    tmp.replace(final)
    meta = snapshot_dir / f"{table}.json"
    meta_tmp = snapshot_dir / f".{table}.json.tmp"
    meta_tmp.write_text(
        json.dumps({"table": table, "published_at": datetime.now(UTC).isoformat()}),
        encoding="utf-8",
    )
    meta_tmp.replace(meta)
    return final
