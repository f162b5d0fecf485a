"""Retention of raw JSON: prune old payloads and landing files, keep typed data (no Dagster import).

Raw JSON is by far the largest thing the pipeline keeps (see README, "When things go wrong"), and
nothing downstream needs it once the typed filtered tables hold an event. After
$GH_PIPELINE_RAW_RETENTION_DAYS days (default 1) this module

- sets `raw_events.payload` and `raw_events.event` to NULL (every typed column stays, so ids,
  types, times, actors and repositories remain queryable and the exactly-once load still works),
- sets `rejected_events.raw_text` to NULL,
- deletes API landing files from days that ended before the cutoff.

Age is measured from when the pipeline stored an event (`ingested_at`; the landing file's day),
not from `created_at`: a GH Archive backfill of 2015 is kept as long as a live poll of today.

A landing file whose events are not all in the warehouse (a poll that crashed between writing
its file and committing its rows) is never deleted: it is reported, and a rebuild or reload picks
it up (gh_pipeline.ops.recovery). Pruning is one transaction; file deletion happens after it commits.

Run by hand: `uv run python -m gh_pipeline.ops.retention [--dry-run]`.
"""

import argparse
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from gh_pipeline import settings
from gh_pipeline.live import landing
from gh_pipeline.warehouse import connect, raw, scalar, transaction

# Landing sources whose files retention may delete. GH Archive hours are not live data we alone
# hold, and whatever keeps them owns their lifetime.
PRUNED_SOURCES: tuple[str, ...] = ("api",)


@dataclass(frozen=True)
class RetentionReport:
    retention_days: int | None
    cutoff: datetime | None
    dry_run: bool
    rows_pruned: int = 0
    rejected_pruned: int = 0
    files_deleted: int = 0
    bytes_deleted: int = 0
    files_kept_unloaded: tuple[Path, ...] = ()

    def summary(self) -> str:
        if self.cutoff is None:
            return "retention disabled (GH_PIPELINE_RAW_RETENTION_DAYS=0): nothing pruned"
        verb = "would prune" if self.dry_run else "pruned"
        text = (
            f"{verb} raw JSON of {self.rows_pruned} events and {self.rejected_pruned} rejected "
            f"lines stored before {self.cutoff.isoformat(timespec='seconds')}; "
            f"{'would delete' if self.dry_run else 'deleted'} {self.files_deleted} landing files "
            f"({self.bytes_deleted / 1e6:.1f} MB)"
        )
        if self.files_kept_unloaded:
            text += (
                f"; kept {len(self.files_kept_unloaded)} old landing files whose events are not "
                "all in the warehouse (load them with `python -m gh_pipeline.ops.recovery`)"
            )
        return text


def cutoff_for(now: datetime, days: int) -> datetime:
    return now - timedelta(days=days)


def allow_pruned_json(conn: duckdb.DuckDBPyConnection) -> None:
    """Warehouses created before retention existed declare raw_events.event NOT NULL."""
    nullable = scalar(
        conn,
        "SELECT is_nullable FROM information_schema.columns"
        " WHERE table_name = 'raw_events' AND column_name = 'event'"
        " AND table_schema = current_schema()",
    )
    if nullable == "NO":
        conn.execute("ALTER TABLE raw_events ALTER COLUMN event DROP NOT NULL")


def prune_raw_json(
    conn: duckdb.DuckDBPyConnection, *, cutoff: datetime, dry_run: bool = False
) -> tuple[int, int]:
    """NULL the raw JSON of events (and rejected lines) stored before `cutoff`, in one
    transaction; returns (events, rejected lines) affected."""
    params = {"cutoff": cutoff}
    raw_where = "ingested_at < $cutoff AND (event IS NOT NULL OR payload IS NOT NULL)"
    rejected_where = "rejected_at < $cutoff AND raw_text IS NOT NULL"
    if dry_run:
        return (
            int(scalar(conn, f"SELECT count(*) FROM raw_events WHERE {raw_where}", params)),
            int(
                scalar(conn, f"SELECT count(*) FROM rejected_events WHERE {rejected_where}", params)
            ),
        )
    allow_pruned_json(conn)
    with transaction(conn):
        rows = int(
            scalar(
                conn,
                f"UPDATE raw_events SET payload = NULL, event = NULL WHERE {raw_where}",
                params,
            )
        )
        rejected = int(
            scalar(
                conn, f"UPDATE rejected_events SET raw_text = NULL WHERE {rejected_where}", params
            )
        )
    if rows or rejected:
        # Hand the freed blocks back now: new events reuse them, and free blocks at the end of
        # the file are truncated away.
        conn.execute("CHECKPOINT")
    return rows, rejected


def expired_landing_files(
    landing_root: Path, *, cutoff: datetime, sources: tuple[str, ...] = PRUNED_SOURCES
) -> list[Path]:
    """Landing files from days that ended before the cutoff."""
    expired = []
    for source in sources:
        for path in landing.list_landing_files(landing_root, source=source):
            day = landing.day_of(path)
            if day is None:
                continue
            day_end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
            if day_end <= cutoff:
                expired.append(path)
    return expired


# Valid lines of the candidate files whose event id is not in raw_events. Lines the loader would
# reject are not counted: their text is in rejected_events already.
_UNLOADED_SQL = f"""
WITH lines AS (
    -- json_valid first: a bare try_cast here gets pushed into the reader as a hard cast.
    SELECT filename, CASE WHEN json_valid(line) THEN line::JSON END AS j
    FROM {raw.read_lines_sql("$paths", "filename = true")}
)
SELECT DISTINCT filename FROM lines
WHERE json_type(j) = 'OBJECT' AND j ->> '$.id' IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM raw_events r WHERE r.event_id = j ->> '$.id')
"""


def unloaded_files(conn: duckdb.DuckDBPyConnection, paths: list[Path]) -> set[Path]:
    """The files among `paths` holding at least one valid event that raw_events lacks."""
    if not paths:
        return set()
    rows = conn.execute(_UNLOADED_SQL, {"paths": [str(p) for p in paths]}).fetchall()
    return {Path(r[0]) for r in rows}


def prune_landing_files(
    conn: duckdb.DuckDBPyConnection,
    landing_root: Path,
    *,
    cutoff: datetime,
    dry_run: bool = False,
) -> tuple[int, int, tuple[Path, ...]]:
    """Delete expired landing files whose events are all in the warehouse; returns (files, bytes,
    files kept because they are not loaded)."""
    expired = expired_landing_files(landing_root, cutoff=cutoff)
    keep = unloaded_files(conn, expired)
    files = 0
    size = 0
    for path in expired:
        if path in keep:
            continue
        size += path.stat().st_size
        files += 1
        if not dry_run:
            path.unlink()
    if not dry_run:
        for day_dir in {p.parent for p in expired}:
            if day_dir.is_dir() and not any(day_dir.iterdir()):
                day_dir.rmdir()
    return files, size, tuple(sorted(keep))


def apply_retention(
    conn: duckdb.DuckDBPyConnection,
    data_dir: Path,
    *,
    now: datetime | None = None,
    days: int | None = settings.DEFAULT_RAW_RETENTION_DAYS,
    dry_run: bool = False,
) -> RetentionReport:
    """Prune raw JSON, then landing files (only after the pruning committed)."""
    if days is None:
        return RetentionReport(retention_days=None, cutoff=None, dry_run=dry_run)
    cutoff = cutoff_for(now or datetime.now(UTC), days)
    rows, rejected = prune_raw_json(conn, cutoff=cutoff, dry_run=dry_run)
    files, size, kept = prune_landing_files(
        conn, settings.landing_dir(data_dir), cutoff=cutoff, dry_run=dry_run
    )
    return RetentionReport(
        retention_days=days,
        cutoff=cutoff,
        dry_run=dry_run,
        rows_pruned=rows,
        rejected_pruned=rejected,
        files_deleted=files,
        bytes_deleted=size,
        files_kept_unloaded=kept,
    )


def disk_usage(data_dir: Path) -> dict[str, int]:
    """Bytes used by the warehouse (file + WAL) and by the landing files."""
    warehouse = settings.warehouse_path(data_dir)
    wal = warehouse.with_name(warehouse.name + ".wal")
    root = settings.landing_dir(data_dir)
    return {
        "warehouse_bytes": sum(p.stat().st_size for p in (warehouse, wal) if p.exists()),
        "landing_bytes": sum(p.stat().st_size for p in root.rglob(f"*{landing.LANDING_SUFFIX}"))
        if root.exists()
        else 0,
        "free_disk_bytes": shutil.disk_usage(data_dir).free if data_dir.exists() else 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Prune raw JSON and landing files older than GH_PIPELINE_RAW_RETENTION_DAYS."
        " Stop `dagster dev` first (DuckDB allows one writer), or run the raw_retention job."
    )
    parser.add_argument("--dry-run", action="store_true", help="report, change nothing")
    parser.add_argument("--days", type=int, help="override GH_PIPELINE_RAW_RETENTION_DAYS")
    args = parser.parse_args(argv)
    days = settings.raw_retention_days(None if args.days is None else str(args.days))
    data_dir = settings.data_dir()
    path = settings.warehouse_path(data_dir)
    if not path.exists():
        print(f"no warehouse at {path}; nothing to prune")
        return 0
    conn = connect(path, read_only=args.dry_run)
    try:
        report = apply_retention(conn, data_dir, days=days, dry_run=args.dry_run)
    finally:
        conn.close()
    print(report.summary())
    for kept in report.files_kept_unloaded:
        print(f"  kept (not loaded): {kept}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
