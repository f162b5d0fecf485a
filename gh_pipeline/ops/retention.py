"""Retention: prune old raw JSON and landing files, roll up old untracked events (no Dagster import).

Raw JSON is by far the largest thing the pipeline keeps (see README, "When things go wrong"), and
nothing downstream needs it once the typed filtered tables hold an event. After
$GH_PIPELINE_RAW_RETENTION_DAYS days (default 1) this module

- sets `raw_events.payload` and `raw_events.event` to NULL (every typed column stays, so ids,
  types, times, actors and repositories remain queryable and the exactly-once load still works),
- sets `rejected_events.raw_text` to NULL,
- deletes API landing files written in hours that ended before the cutoff.

After $GH_PIPELINE_UNTRACKED_RETENTION_DAYS days (default 1) it also deletes the rows of live
events of untracked types (not in catalogue.TRACKED_EVENT_TYPES) that belong to no watched
repository, after adding them, in the same transaction, to their hour's per-type count in
untracked_event_counts. At the feed's maximum those rows were most of what a month on disk cost
(docs/operations.md#retention); the counts keep what they said about activity. Tracked types, GH
Archive rows (the user chose the archive's scope), watched repositories' rows and rejected lines
are never deleted, and neither is a row whose landing file is still on disk: that file is what a
rebuild replays and what the "loaded?" check below compares against, so a row outlives its file.

Age is measured from when the pipeline stored an event (`ingested_at`; the landing file's write
time), not from `created_at`: a GH Archive backfill of 2015 is kept as long as a live poll of today.

A landing file whose events are not all in the warehouse (a poll that crashed between writing
its file and committing its rows) is never deleted: it is reported, and a rebuild or reload picks
it up (gh_pipeline.ops.recovery). Each pruning step is one transaction; file deletion happens
after the JSON pruning committed and before any row of the file's poll may be deleted.

Run by hand: `uv run python -m gh_pipeline.ops.retention [--dry-run]`.
"""

import argparse
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from gh_pipeline import settings
from gh_pipeline.live import landing
from gh_pipeline.warehouse import catalogue, connect, raw, scalar, transaction

# Landing sources retention may delete files of, and whose untracked rows it may roll up: the live
# feed. GH Archive hours are not live data we alone hold, and whatever keeps them owns their
# lifetime.
PRUNED_SOURCES: tuple[str, ...] = ("api",)
# A landing file's day folder is the day its poll started; its file is written when the poll's
# pages are in, which a slow poll (retries, waits for the rate budget) can push past midnight.
_POLL_SPAN = timedelta(hours=1)
# How long after an untracked event was first stored another poll's landing file may repeat it
# (landing files keep every event a poll received, duplicates too). The global feed serves only
# its newest 300 events, seconds to minutes old, so only polls right after the first can repeat
# one; an hour covers a slow poll's retries and waits. Watched repositories' feeds serve up to 30
# days of events, but their events are never deleted.
REPEAT_SPAN = timedelta(hours=1)


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
    untracked_days: int | None = None
    untracked_cutoff: datetime | None = None
    untracked_deleted: int = 0  # rows rolled up into untracked_event_counts and deleted
    untracked_by_type: tuple[tuple[str, int], ...] = ()
    # The (hour, type, source) cells of untracked_event_counts added to.
    untracked_hours: int = 0

    def summary(self) -> str:
        parts = []
        if self.cutoff is None:
            parts.append("raw JSON retention disabled (GH_PIPELINE_RAW_RETENTION_DAYS=0)")
        else:
            verb = "would prune" if self.dry_run else "pruned"
            text = (
                f"{verb} raw JSON of {self.rows_pruned} events and {self.rejected_pruned} "
                f"rejected lines stored before {self.cutoff.isoformat(timespec='seconds')}; "
                f"{'would delete' if self.dry_run else 'deleted'} {self.files_deleted} landing "
                f"files ({self.bytes_deleted / 1e6:.1f} MB)"
            )
            if self.files_kept_unloaded:
                text += (
                    f"; kept {len(self.files_kept_unloaded)} old landing files whose events are "
                    "not all in the warehouse (load them with `python -m gh_pipeline.ops.recovery`)"
                )
            parts.append(text)
        if self.untracked_cutoff is None:
            parts.append("untracked events kept forever (GH_PIPELINE_UNTRACKED_RETENTION_DAYS=0)")
        else:
            verb = "would roll up and delete" if self.dry_run else "rolled up and deleted"
            types = ", ".join(f"{t} {n}" for t, n in self.untracked_by_type)
            parts.append(
                f"{verb} {self.untracked_deleted} untracked live events stored before "
                f"{self.untracked_cutoff.isoformat(timespec='seconds')} into "
                f"{self.untracked_hours} hourly counts" + (f" ({types})" if types else "")
            )
        if self.cutoff is None and self.untracked_days is None:
            return "retention disabled: nothing pruned; " + "; ".join(parts)
        return "; ".join(parts)


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


def written_at(path: Path) -> datetime | None:
    """When a landing file was written; None when it is not in a YYYY-MM-DD day folder.

    Its modification time: landing files are written once and renamed into place, just before
    their poll's rows are committed, so mtime is within seconds of the rows' ingested_at and needs
    no read of the file (an hourly run would otherwise decompress a day of files to learn their
    newest ingested_at). A copy that reset mtime (cp without -p) would make a file look newer and
    keep it longer, so the day folder (the day its poll started) bounds it: never later than the
    end of that day plus a poll's span."""
    day = landing.day_of(path)
    if day is None:
        return None
    latest = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1) + _POLL_SPAN
    return min(datetime.fromtimestamp(path.stat().st_mtime, UTC), latest)


def _hour_end(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


def expired_landing_files(
    landing_root: Path, *, cutoff: datetime, sources: tuple[str, ...] = PRUNED_SOURCES
) -> list[Path]:
    """Landing files written in hours that ended before the cutoff.

    By the hour, so an hourly run keeps at most the window plus an hour of files (whole days
    used to keep up to a day more)."""
    expired = []
    for source in sources:
        for path in landing.list_landing_files(landing_root, source=source):
            written = written_at(path)
            if written is not None and _hour_end(written) <= cutoff:
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


@dataclass(frozen=True)
class LandingPrune:
    deleted: tuple[Path, ...]  # deleted, or in a dry run those that would be
    bytes: int
    kept_unloaded: tuple[Path, ...]


def prune_landing_files(
    conn: duckdb.DuckDBPyConnection,
    landing_root: Path,
    *,
    cutoff: datetime,
    dry_run: bool = False,
) -> LandingPrune:
    """Delete expired landing files whose events are all in the warehouse."""
    expired = expired_landing_files(landing_root, cutoff=cutoff)
    keep = unloaded_files(conn, expired)
    deleted = [p for p in expired if p not in keep]
    size = 0
    for path in deleted:
        size += path.stat().st_size
        if not dry_run:
            path.unlink()
    if not dry_run:
        for day_dir in {p.parent for p in expired}:
            if day_dir.is_dir() and not any(day_dir.iterdir()):
                day_dir.rmdir()
    return LandingPrune(tuple(deleted), size, tuple(sorted(keep)))


@dataclass(frozen=True)
class LandingLeft:
    """The live landing files left on disk, as rollup_untracked needs them."""

    stems: tuple[str, ...] = ()  # their poll ids, as file names
    # The oldest one's write time, leaving out files kept because they are not loaded (those are
    # reported, and would otherwise hold every row back for as long as they stay).
    oldest: datetime | None = None


def landing_left(
    landing_root: Path, *, gone: Sequence[Path] = (), unloaded: Sequence[Path] = ()
) -> LandingLeft:
    """The live landing files on disk, less `gone` (deleted, or about to be in a dry run)."""
    removed, skipped = set(gone), set(unloaded)
    stems: set[str] = set()
    oldest: datetime | None = None
    for source in PRUNED_SOURCES:
        for path in landing.list_landing_files(landing_root, source=source):
            if path in removed:
                continue
            stems.add(landing.poll_id_of(path))
            written = written_at(path)
            if path not in skipped and written is not None:
                oldest = written if oldest is None else min(oldest, written)
    return LandingLeft(tuple(sorted(stems)), oldest)


# The raw_events rows retention may roll up and delete. Every exclusion is a promise made
# elsewhere: tracked types feed the filtered tables and the metrics; GH Archive rows are the scope
# the user chose; a watched repository's events are complete by promise (its name in
# GH_PIPELINE_REPOS or ever in watched_repos, case-insensitively as GitHub treats names, or the id
# released by its own feed: a renamed repository's events carry the new name); a row whose poll's
# landing file is still on disk must stay, or the "loaded?" check (_UNLOADED_SQL) would take the
# file for a crashed poll's and keep it forever; so must a row a later poll's file still on disk may
# repeat ($kept_since: the oldest such file's write time less REPEAT_SPAN). NOT IN over a NULL
# would match nothing, which errs on the side of keeping.
_UNTRACKED_ROWS_SQL = f"""
FROM {catalogue.RAW_EVENTS} r
WHERE r.ingested_at < $cutoff
  AND r.ingested_at < $kept_since
  AND r.source IN (SELECT unnest($sources::VARCHAR[]))
  AND r.event_type NOT IN (SELECT unnest($tracked::VARCHAR[]))
  AND lower(r.repo_name) NOT IN (
      SELECT unnest($watched::VARCHAR[])
      UNION ALL SELECT lower(repo_name) FROM {catalogue.WATCHED_REPOS})
  AND r.event_id NOT IN (SELECT event_id FROM {catalogue.WATCHED_REPO_EVENTS})
  AND regexp_replace(r.poll_id, '{landing.UNSAFE_NAME_CHARS}', '_', 'g')
      NOT IN (SELECT unnest($kept_files::VARCHAR[]))
"""

# Hours of created_at in UTC: time_bucket on a TIMESTAMPTZ buckets in UTC, whereas date_trunc
# truncates in the session's time zone (wrong by 30 minutes in India, say).
_HOUR_SQL = "time_bucket(INTERVAL 1 HOUR, created_at)"


def rollup_untracked(
    conn: duckdb.DuckDBPyConnection,
    *,
    cutoff: datetime,
    watched: Sequence[str] = (),
    left: LandingLeft = LandingLeft(),
    dry_run: bool = False,
) -> tuple[int, tuple[tuple[str, int], ...], int]:
    """Add the untracked live events stored before `cutoff` to their (hour, type, source) counts
    and delete them, in one transaction; `left`: the live landing files still on disk.
    Returns (events, events per type, count cells)."""
    params = {
        "cutoff": cutoff,
        "kept_since": cutoff if left.oldest is None else min(cutoff, left.oldest - REPEAT_SPAN),
        "sources": list(PRUNED_SOURCES),
        "tracked": list(catalogue.TRACKED_EVENT_TYPES),
        "watched": sorted({r.lower() for r in watched}),
        "kept_files": list(left.stems),
    }
    counts_sql = (
        f"SELECT {_HOUR_SQL} AS hour, event_type, source, count(*) AS events"
        f" FROM doomed GROUP BY ALL"
    )
    if dry_run:
        rows = conn.execute(
            f"WITH doomed AS (SELECT created_at, event_type, source {_UNTRACKED_ROWS_SQL})"
            f" {counts_sql}",
            params,
        ).fetchall()
    else:
        with transaction(conn):
            # The rows are fixed once, so what is counted is exactly what is deleted.
            conn.execute(
                "CREATE OR REPLACE TEMP TABLE doomed AS"
                f" SELECT event_id, created_at, event_type, source {_UNTRACKED_ROWS_SQL}",
                params,
            )
            rows = conn.execute(counts_sql).fetchall()
            conn.execute(
                f"INSERT INTO {catalogue.UNTRACKED_EVENT_COUNTS} (hour, event_type, source, events)"
                f" {counts_sql}"
                " ON CONFLICT (hour, event_type, source)"
                " DO UPDATE SET events = events + EXCLUDED.events"
            )
            conn.execute(
                f"DELETE FROM {catalogue.RAW_EVENTS}"
                " WHERE event_id IN (SELECT event_id FROM doomed)"
            )
            conn.execute("DROP TABLE doomed")
        if rows:
            conn.execute("CHECKPOINT")  # as after pruning: freed blocks go back for reuse
    by_type: dict[str, int] = {}
    for _hour, event_type, _source, events in rows:
        by_type[event_type] = by_type.get(event_type, 0) + int(events)
    ordered = tuple(sorted(by_type.items(), key=lambda kv: (-kv[1], kv[0])))
    return sum(by_type.values()), ordered, len(rows)


def apply_retention(
    conn: duckdb.DuckDBPyConnection,
    data_dir: Path,
    *,
    now: datetime | None = None,
    days: int | None = settings.DEFAULT_RAW_RETENTION_DAYS,
    untracked_days: int | None = settings.DEFAULT_UNTRACKED_RETENTION_DAYS,
    watched: Sequence[str] = (),
    dry_run: bool = False,
) -> RetentionReport:
    """Prune raw JSON; then landing files (only after the pruning committed); then roll up and
    delete untracked rows whose landing files are gone (only after the files went, so the loaded
    check of a file always sees all its rows). `watched`: the GH_PIPELINE_REPOS names."""
    now = now or datetime.now(UTC)
    landing_root = settings.landing_dir(data_dir)
    raw_report = RetentionReport(retention_days=None, cutoff=None, dry_run=dry_run)
    gone: tuple[Path, ...] = ()
    unloaded: tuple[Path, ...] = ()
    if days is not None:
        cutoff = cutoff_for(now, days)
        rows, rejected = prune_raw_json(conn, cutoff=cutoff, dry_run=dry_run)
        files = prune_landing_files(conn, landing_root, cutoff=cutoff, dry_run=dry_run)
        gone, unloaded = files.deleted, files.kept_unloaded
        raw_report = RetentionReport(
            retention_days=days,
            cutoff=cutoff,
            dry_run=dry_run,
            rows_pruned=rows,
            rejected_pruned=rejected,
            files_deleted=len(files.deleted),
            bytes_deleted=files.bytes,
            files_kept_unloaded=files.kept_unloaded,
        )
    if untracked_days is None:
        return replace(raw_report, untracked_days=None)
    untracked_cutoff = cutoff_for(now, untracked_days)
    events, by_type, cells = rollup_untracked(
        conn,
        cutoff=untracked_cutoff,
        watched=watched,
        # In a dry run the files it would delete count as gone, so it reports what a real run
        # would roll up.
        left=landing_left(landing_root, gone=gone, unloaded=unloaded),
        dry_run=dry_run,
    )
    return replace(
        raw_report,
        untracked_days=untracked_days,
        untracked_cutoff=untracked_cutoff,
        untracked_deleted=events,
        untracked_by_type=by_type,
        untracked_hours=cells,
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
        description="Prune raw JSON and landing files older than GH_PIPELINE_RAW_RETENTION_DAYS,"
        " and roll up and delete untracked live events older than"
        " GH_PIPELINE_UNTRACKED_RETENTION_DAYS. Stop `dagster dev` first (DuckDB allows one"
        " writer), or run the retention job."
    )
    parser.add_argument("--dry-run", action="store_true", help="report, change nothing")
    parser.add_argument("--days", type=int, help="override GH_PIPELINE_RAW_RETENTION_DAYS")
    parser.add_argument(
        "--untracked-days", type=int, help="override GH_PIPELINE_UNTRACKED_RETENTION_DAYS"
    )
    args = parser.parse_args(argv)
    try:
        days = settings.raw_retention_days(None if args.days is None else str(args.days))
        untracked_days = settings.untracked_retention_days(
            None if args.untracked_days is None else str(args.untracked_days)
        )
    except ValueError as exc:
        parser.error(str(exc))  # exits 2 with the message, before anything is touched
    watch = settings.watched_repos()
    for error in watch.errors:
        print(error)
    data_dir = settings.data_dir()
    path = settings.warehouse_path(data_dir)
    if not path.exists():
        print(f"no warehouse at {path}; nothing to prune")
        return 0
    conn = connect(path, read_only=args.dry_run)
    try:
        report = apply_retention(
            conn,
            data_dir,
            days=days,
            untracked_days=untracked_days,
            watched=watch.repos,
            dry_run=args.dry_run,
        )
    finally:
        conn.close()
    print(report.summary())
    for kept in report.files_kept_unloaded:
        print(f"  kept (not loaded): {kept}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
