"""Rebuild the warehouse from what was kept (no Dagster import).

Every poll's events are written to an immutable landing file before they are loaded, so the
warehouse can be rebuilt from those files. GH Archive hours are not kept on disk after loading
(about 100 MB each in 2025); GH Archive itself is their durable copy, so a rebuild downloads the
hours the warehouse had loaded again ($GHARCHIVE_URL), as the archive asset does.

The rebuild replays everything into a fresh DuckDB file in the order it was first loaded (each
batch's smallest `seq` in the old warehouse when that still opens; otherwise polls in poll order,
then archive hours), so every event keeps the poll or hour that first brought it. It then
recomputes the filtered and metric tables and only then swaps the new file in place of the live
warehouse, with one atomic rename; the previous file is kept beside it as
`warehouse.duckdb.before-rebuild-<time>`. A crash or kill at any moment before the rename leaves
the live warehouse untouched; the next rebuild discards the half-built file.

What a rebuild restores:
- live events of the landing files that retention has not deleted yet (the last
  GH_PIPELINE_RAW_RETENTION_DAYS days), with their poll_id and source, and their rejected lines;
- GH Archive hours, downloaded again: those the old warehouse lists when it still opens, plus any
  the caller names (the Dagster job adds the partitions Dagster recorded as materialized);
- the filtered and metric tables, recomputed from those events;
- the hourly counts of untracked events retention deleted (untracked_event_counts), copied from
  the old warehouse when it still opens: they are in no file.
What it cannot restore: poll_log and poll_gaps (request history, never written to a file), the
watched repositories' coverage (complete again from each one's next poll), live
events older than the retention period (their landing files are gone; their typed rows live only
in the old warehouse), the untracked-event counts and archive hours nobody can name when the old
warehouse does not open, and the
schema-drift baseline (it starts afresh).

Usage: `uv run python -m gh_pipeline.ops.recovery --dry-run` reports what would be loaded;
without `--dry-run` it rebuilds and swaps. Stop `dagster dev` first, or run the
`rebuild_warehouse` job from the UI, which waits for the warehouse pool.
"""

import argparse
import os
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import httpx

from gh_pipeline import settings
from gh_pipeline.archive import bulk_load, fetch
from gh_pipeline.archive.hours import SOURCE as ARCHIVE_SOURCE
from gh_pipeline.archive.hours import ArchiveHour
from gh_pipeline.live import landing
from gh_pipeline.model import metrics
from gh_pipeline.publish import snapshot
from gh_pipeline.warehouse import catalogue, raw
from gh_pipeline.warehouse.connection import connect, row_count, transaction

REBUILD_SUFFIX = ".rebuild"
BACKUP_INFIX = ".before-rebuild-"

# Landing sources replayed first when the original order is unknown: the live feed.
LIVE_SOURCES: tuple[str, ...] = ("api",)

# Tables recomputed from raw_events after the replay, and then published for readers.
PUBLISHED_TABLES = catalogue.PUBLISHED_TABLES

_LATEST = datetime.max.replace(tzinfo=UTC)
_EARLIEST = datetime.min.replace(tzinfo=UTC)


class WarehouseBusy(RuntimeError):
    """Another process has the warehouse open; a rebuild must not swap it underneath."""


@dataclass(frozen=True)
class LandingFile:
    path: Path
    source: str
    poll_id: str
    day: date | None
    lines: int
    newest_created_at: datetime | None
    size: int
    mtime_ns: int

    @property
    def sort_key(self) -> tuple[object, ...]:
        # Polls in the order they ran: a later poll never has an older newest event than an
        # earlier one (the feed is newest first); the file time breaks ties.
        return (
            self.day or date.min,
            self.newest_created_at or _EARLIEST,
            self.mtime_ns,
            self.path.name,
        )


ReplayItem = LandingFile | ArchiveHour


@dataclass(frozen=True)
class RebuildPlan:
    data_dir: Path
    warehouse: Path
    items: tuple[ReplayItem, ...]
    warehouse_state: str
    archive_url: str
    original_order: bool
    notes: tuple[str, ...] = ()

    @property
    def files(self) -> tuple[LandingFile, ...]:
        return tuple(i for i in self.items if isinstance(i, LandingFile))

    @property
    def archive_hours(self) -> tuple[ArchiveHour, ...]:
        return tuple(i for i in self.items if isinstance(i, ArchiveHour))

    @property
    def lines(self) -> int:
        return sum(f.lines for f in self.files)

    def summary(self) -> str:
        files = self.files
        out = [
            f"rebuild of {self.warehouse} (currently: {self.warehouse_state})",
            f"would load {len(files)} landing files, {self.lines} lines"
            f" ({sum(f.size for f in files) / 1e6:.1f} MB compressed):",
        ]
        per: dict[tuple[str, str], list[LandingFile]] = defaultdict(list)
        for f in files:
            per[(f.source, f.day.isoformat() if f.day else "?")].append(f)
        out.append(f"  {'source':<10} {'day':<10} {'files':>6} {'lines':>9}")
        for (source, day), group in sorted(per.items()):
            lines = sum(f.lines for f in group)
            out.append(f"  {source:<10} {day:<10} {len(group):>6} {lines:>9}")
        hours = self.archive_hours
        if hours:
            span = sorted(h.name for h in hours)
            out.append(
                f"would download and load {len(hours)} GH Archive hours from {self.archive_url}"
                f" ({span[0]} … {span[-1]})"
            )
        else:
            out.append("no GH Archive hours to load")
        out.append(
            "order: "
            + (
                "as first loaded (from the current warehouse)"
                if self.original_order
                else "polls by time, then archive hours (the current warehouse does not say)"
            )
        )
        out.append("then recompute " + ", ".join(PUBLISHED_TABLES) + "; publish reader snapshots")
        out.extend(f"note: {n}" for n in self.notes)
        return "\n".join(out)


@dataclass(frozen=True)
class RebuildResult:
    plan: RebuildPlan
    target: Path
    raw_events: int
    rejected_lines: int
    table_rows: dict[str, int] = field(default_factory=dict)
    backup: Path | None = None

    def summary(self) -> str:
        tables = ", ".join(f"{t} {n}" for t, n in self.table_rows.items())
        text = (
            f"rebuilt {self.target} from {len(self.plan.files)} landing files and "
            f"{len(self.plan.archive_hours)} GH Archive hours: {self.raw_events} events, "
            f"{self.rejected_lines} rejected lines; {tables}"
        )
        if self.backup is not None:
            text += f"; the previous warehouse is kept as {self.backup}"
        return text


def _source_dirs(landing_root: Path) -> list[str]:
    if not landing_root.is_dir():
        return []
    found = sorted(p.name for p in landing_root.iterdir() if p.is_dir())
    return [s for s in LIVE_SOURCES if s in found] + [s for s in found if s not in LIVE_SOURCES]


# Line counts and the newest created_at of every file in one scan. Lines are read as opaque text
# (the loader's own reading), so a corrupt line counts as a line and sorts nothing; json_valid
# first, because a bare try_cast gets pushed into the reader as a hard cast.
_SCAN_SQL = f"""
SELECT filename, count(*) AS lines,
       max(try_cast(CASE WHEN json_valid(line) THEN line::JSON ->> '$.created_at' END
                    AS TIMESTAMPTZ)) AS newest
FROM {raw.read_lines_sql("$paths", "filename = true")}
GROUP BY filename
"""


def scan_landing(landing_root: Path) -> list[LandingFile]:
    """Every landing file, live sources first, each source's files in poll order."""
    files: list[LandingFile] = []
    for source in _source_dirs(landing_root):
        paths = landing.list_landing_files(landing_root, source=source)
        if not paths:
            continue
        with duckdb.connect() as scan:
            stats = {
                Path(name): (int(lines), newest)
                for name, lines, newest in scan.execute(
                    _SCAN_SQL, {"paths": [str(p) for p in paths]}
                ).fetchall()
            }
        group = []
        for path in paths:
            st = path.stat()
            lines, newest = stats.get(path, (0, None))
            group.append(
                LandingFile(
                    path=path,
                    source=source,
                    poll_id=landing.poll_id_of(path),
                    day=landing.day_of(path),
                    lines=lines,
                    newest_created_at=newest,
                    size=st.st_size,
                    mtime_ns=st.st_mtime_ns,
                )
            )
        files.extend(sorted(group, key=lambda f: f.sort_key))
    return files


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def probe_warehouse(path: Path, *, checkpoint: bool = False) -> str:
    """'missing', 'opens' or 'does not open: <reason>'; raises WarehouseBusy when another process
    holds it. With `checkpoint`, opens it for writing and folds its WAL into the file."""
    if not path.exists():
        return "missing"
    try:
        conn = duckdb.connect(str(path), read_only=not checkpoint)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise WarehouseBusy(
                f"{path} is open in another process (dagster dev or a run?); stop it, or run the "
                "rebuild_warehouse job from the Dagster UI, which waits for the warehouse pool"
            ) from exc
        return f"does not open: {exc}"
    except duckdb.Error as exc:
        return f"does not open: {exc}"
    try:
        if checkpoint:
            # Fold the WAL into the file so the backup is one self-contained file.
            conn.execute("CHECKPOINT")
        else:
            conn.execute("SELECT count(*) FROM raw_events").fetchall()
    except duckdb.Error as exc:
        return f"opens, but {'cannot checkpoint' if checkpoint else 'cannot be read'}: {exc}"
    finally:
        conn.close()
    return "opens"


def archive_hour_of(poll_id: str) -> ArchiveHour | None:
    """The hour behind an archive batch's poll_id ('gharchive:2021-07-21-6')."""
    prefix = f"{ARCHIVE_SOURCE}:"
    if not poll_id.startswith(prefix):
        return None
    try:
        day, hour = poll_id[len(prefix) :].rsplit("-", 1)
        start = datetime.fromisoformat(day).replace(hour=int(hour), tzinfo=UTC)
    except ValueError:
        return None
    return ArchiveHour(start)


def load_order(path: Path) -> dict[str, int] | None:
    """Each batch's (poll_id's) first `seq` in a warehouse that opens; None when it does not."""
    if not path.exists():
        return None
    try:
        with duckdb.connect(str(path), read_only=True) as conn:
            rows = conn.execute(
                "SELECT poll_id, min(seq) FROM raw_events GROUP BY poll_id"
                " UNION ALL SELECT DISTINCT poll_id, NULL FROM rejected_events"
            ).fetchall()
    except duckdb.Error:
        return None
    order: dict[str, int] = {}
    for poll_id, seq in rows:
        if seq is not None or poll_id not in order:
            order[poll_id] = int(seq) if seq is not None else 2**62  # rejected lines only
    return order


def _fallback_key(item: ReplayItem) -> tuple[object, ...]:
    if isinstance(item, LandingFile):
        return (0 if item.source in LIVE_SOURCES else 1, *item.sort_key)
    return (2, item.start)


def plan_rebuild(
    data_dir: Path,
    *,
    warehouse: Path | None = None,
    archive_hours: Iterable[ArchiveHour] = (),
    include_archive: bool = True,
) -> RebuildPlan:
    """What a rebuild would load; reads the landing files and the old warehouse, writes nothing."""
    warehouse = warehouse or settings.warehouse_path(data_dir)
    try:
        state = probe_warehouse(warehouse)
    except WarehouseBusy:
        state = "in use by another process"
    order = load_order(warehouse) if state == "opens" else None
    files = scan_landing(settings.landing_dir(data_dir))
    hours: set[ArchiveHour] = set()
    if include_archive:
        hours.update(archive_hours)
        hours.update(h for h in map(archive_hour_of, order or {}) if h is not None)
    items: list[ReplayItem] = [*files, *sorted(hours, key=lambda h: h.start)]
    if order is not None:
        items.sort(key=lambda i: (order.get(i.poll_id, 2**63), _fallback_key(i)))
    else:
        items.sort(key=_fallback_key)
    notes = []
    days = settings.raw_retention_days()
    if days is not None:
        notes.append(
            f"landing files are kept {days} days (GH_PIPELINE_RAW_RETENTION_DAYS): live events "
            "polled earlier are not on disk and will not be in the rebuilt warehouse"
        )
    if order is None and state != "missing" and include_archive:
        notes.append(
            "the current warehouse does not open, so it cannot say which GH Archive hours it had:"
            " only hours named by the caller are loaded (the Dagster job adds the materialized"
            " partitions); otherwise backfill them again afterwards"
        )
    if not include_archive:
        notes.append("GH Archive hours skipped on request")
    notes.append(
        "poll_log and poll_gaps (request history) and the watched repositories' coverage"
        " (watched_repos, watched_repo_gaps, watched_repo_events) are not in any file: they start"
        " empty, and each watched repository is complete again from its next poll on"
    )
    return RebuildPlan(
        data_dir=data_dir,
        warehouse=warehouse,
        items=tuple(items),
        warehouse_state=state,
        archive_url=settings.gharchive_url(),
        original_order=order is not None,
        notes=tuple(notes),
    )


def _remove_db(path: Path) -> None:
    path.unlink(missing_ok=True)
    _wal(path).unlink(missing_ok=True)


def _load_archive_hour(
    conn: duckdb.DuckDBPyConnection,
    hour: ArchiveHour,
    plan: RebuildPlan,
    client: httpx.Client | None,
) -> None:
    assert client is not None
    try:
        download = fetch.download_hour(
            client, hour, plan.archive_url, fetch.download_dir(plan.data_dir)
        )
    except (fetch.ArchiveNotPublished, fetch.ArchiveDownloadError) as exc:
        raise RuntimeError(
            f"GH Archive hour {hour.name} could not be downloaded again ({exc}); nothing was "
            "swapped. Retry, or rebuild without the archive (--skip-archive) and backfill later."
        ) from exc
    try:
        # The scope set now, as for every other archive setting: a rebuild stores what the
        # pipeline is configured to store (docs/gharchive.md).
        bulk_load.load_hour_file(
            conn,
            download.path,
            hour,
            keep_event=settings.archive_full_events(),
            scope=settings.archive_scope(),
        )
    finally:
        download.path.unlink(missing_ok=True)


def carry_untracked_counts(conn: duckdb.DuckDBPyConnection, old: Path) -> int:
    """Copy the counts of untracked events retention deleted from the old warehouse (in no file,
    so nothing else can restore them); returns the rows copied. A warehouse from before the
    rollup has none."""
    table = catalogue.UNTRACKED_EVENT_COUNTS
    conn.execute("ATTACH $p AS previous (READ_ONLY)", {"p": str(old)})
    try:
        found = conn.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'previous'"
            " AND table_name = $t",
            {"t": table},
        ).fetchall()[0][0]
        if not found:
            return 0
        with transaction(conn):
            copied = conn.execute(
                f"INSERT INTO {table} (hour, event_type, source, events)"
                f" SELECT hour, event_type, source, events FROM previous.{table}"
            ).fetchall()[0][0]
        return int(copied)
    finally:
        conn.execute("DETACH previous")


def build_warehouse(
    plan: RebuildPlan,
    target: Path,
    *,
    as_of: datetime | None = None,
    on_item: Callable[[int, ReplayItem], None] | None = None,
) -> RebuildResult:
    """Replay the plan into a new DuckDB file at `target` (which must not exist)."""
    if target.exists() or _wal(target).exists():
        raise FileExistsError(f"{target} already exists; a rebuild writes a fresh file")
    conn = connect(target)
    client = fetch.make_client() if plan.archive_hours else None
    try:
        for i, item in enumerate(plan.items):
            # One transaction per file or hour, as when it was first loaded.
            if isinstance(item, LandingFile):
                raw.load_ndjson(conn, item.path, poll_id=item.poll_id, source=item.source)
            else:
                _load_archive_hour(conn, item, plan, client)
            if on_item is not None:
                on_item(i, item)
        if plan.warehouse_state == "opens":
            carry_untracked_counts(conn, plan.warehouse)
        metrics.rebuild_all(conn, as_of=as_of or datetime.now(UTC))
        rows = {t: row_count(conn, t) for t in PUBLISHED_TABLES}
        raw_rows = row_count(conn, catalogue.RAW_EVENTS)
        rejected = row_count(conn, catalogue.REJECTED_EVENTS)
        conn.execute("CHECKPOINT")
    finally:
        conn.close()
        if client is not None:
            client.close()
    return RebuildResult(
        plan=plan, target=target, raw_events=raw_rows, rejected_lines=rejected, table_rows=rows
    )


def swap_in(new: Path, live: Path, *, now: datetime) -> Path | None:
    """Put the rebuilt file in place of the live one; returns where the old one was kept.

    The old file gets a second name (a hard link) first, then one atomic rename replaces the live
    name: at every instant the live name points at a complete warehouse, old or new.
    """
    if _wal(new).exists():
        raise RuntimeError(f"{new} still has a WAL; it was not closed cleanly")
    backup = None
    if live.exists():
        backup = live.with_name(f"{live.name}{BACKUP_INFIX}{now.strftime('%Y%m%dT%H%M%S%fZ')}")
        try:
            os.link(live, backup)
        except OSError:
            shutil.copy2(live, backup)  # a filesystem without hard links
        if _wal(live).exists():
            # A WAL left by a warehouse that would not checkpoint belongs to the old file only:
            # replayed against the new one it would corrupt it.
            os.replace(_wal(live), _wal(backup))
    os.replace(new, live)
    return backup


def rebuild(
    data_dir: Path,
    *,
    warehouse: Path | None = None,
    target: Path | None = None,
    as_of: datetime | None = None,
    archive_hours: Iterable[ArchiveHour] = (),
    include_archive: bool = True,
    publish: bool = True,
    on_item: Callable[[int, ReplayItem], None] | None = None,
) -> RebuildResult:
    """Rebuild from the landing files and GH Archive. With `target`, build there and leave the
    live warehouse alone; otherwise build beside it and swap it in."""
    live = warehouse or settings.warehouse_path(data_dir)
    plan = plan_rebuild(
        data_dir, warehouse=live, archive_hours=archive_hours, include_archive=include_archive
    )
    if plan.warehouse_state == "in use by another process":
        probe_warehouse(live)  # raises WarehouseBusy with the explanation
    if target is not None:
        return build_warehouse(plan, target, as_of=as_of, on_item=on_item)
    work = live.with_name(live.name + REBUILD_SUFFIX)
    _remove_db(work)  # what a crashed rebuild left behind
    result = build_warehouse(plan, work, as_of=as_of, on_item=on_item)
    probe_warehouse(live, checkpoint=True)  # still nobody else in it; its WAL folded in
    backup = swap_in(work, live, now=datetime.now(UTC))
    if publish:
        conn = connect(live)
        try:
            for table in PUBLISHED_TABLES:
                snapshot.publish_table(conn, settings.snapshot_dir(data_dir), table)
        finally:
            conn.close()
    return RebuildResult(
        plan=plan,
        target=live,
        raw_events=result.raw_events,
        rejected_lines=result.rejected_lines,
        table_rows=result.table_rows,
        backup=backup,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Rebuild the warehouse from the landing files and GH Archive."
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="report what would be loaded, change nothing"
    )
    parser.add_argument(
        "--target", type=Path, help="build into this new file and leave the live warehouse as is"
    )
    parser.add_argument(
        "--skip-archive", action="store_true", help="do not download GH Archive hours again"
    )
    parser.add_argument(
        "--archive-hour",
        action="append",
        default=[],
        metavar="YYYY-MM-DD-HH:MM",
        help="also load this GH Archive hour (a partition key); repeatable",
    )
    args = parser.parse_args(argv)
    data_dir = settings.data_dir()
    hours = [ArchiveHour.from_partition_key(k) for k in args.archive_hour]
    if args.dry_run:
        plan = plan_rebuild(data_dir, archive_hours=hours, include_archive=not args.skip_archive)
        print(plan.summary())
        return 0
    try:
        result = rebuild(
            data_dir,
            target=args.target,
            archive_hours=hours,
            include_archive=not args.skip_archive,
        )
    except WarehouseBusy as exc:
        print(f"not rebuilt: {exc}")
        return 2
    print(result.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
