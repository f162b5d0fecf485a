"""Read-only snapshots for notebooks (no Dagster import).

Readers never open the warehouse, so they never block the single DuckDB writer. Instead, after
each materialisation a table is published as Parquet:

    snapshot/versions/<table>/<published_at_ns>-<pid>-<random>.parquet   immutable, written once
    snapshot/<table>.parquet -> versions/<table>/...                      symlink, swapped atomically

Why versions rather than renaming a new file over `<table>.parquet`: DuckDB opens a Parquet
file several times during one query (once to bind, again to scan), so a rename landing between
those opens hands the query the footer of one file and the data of another. A reader therefore
resolves the symlink once and reads the immutable version it points to; publishing moves the link
but never touches a file a reader may be reading. A superseded version is deleted only after
SUPERSEDED_GRACE, far longer than a read takes; a reader that stalled longer and finds its
version gone resolves again and retries.

The publication time travels inside the Parquet file (key-value metadata), so "when was this
published" and "what was published" can never disagree.

The filtered tables (gh_pipeline.model.filtered) only ever grow, and rewriting them whole would make
every tick cost as much as their history. They are published append-only instead:

    snapshot/parts/<table>/<seq_lo>-<seq_hi>-<random>.parquet     immutable, written once
    snapshot/<table>.manifest.json                                 replaced atomically

Each publication writes one part holding only the rows whose `seq` is above the last published
part, then a new manifest (written to a temporary file, fsynced and renamed into place) listing
every current part with the publication time and the total row count, which are therefore again
published together with the data. A reader reads the manifest once and then only the immutable
parts it lists. When a table has more than MAX_PARTS parts, the publication also merges the
recent parts (or all of them, once the recent ones are as big as the first) into one new part;
merged parts are listed in the manifest as retired and deleted SUPERSEDED_GRACE after that, as
superseded versions are. A table that was rebuilt or pruned (its rows no longer extend the
manifest's) is republished as a single new part.
"""

import itertools
import json
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from gh_pipeline.warehouse import catalogue, scalar

SNAPSHOT_SUFFIX = ".parquet"
VERSIONS_DIR = "versions"
PUBLISHED_AT_KEY = "gh_pipeline.published_at"
TABLE_KEY = "gh_pipeline.table"
SUPERSEDED_GRACE = timedelta(minutes=2)
PARTS_DIR = "parts"
MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = 1
# Past this many parts a publication merges them: a reader opens every part, so the count must
# stay bounded, while merging only every MAX_PARTS publications keeps its cost off most ticks.
MAX_PARTS = 64
# Tables published as append-only parts (the catalogue's append_only tables); they must have a
# `seq` column that only grows.
APPEND_ONLY_TABLES = catalogue.APPEND_ONLY_TABLES

# The KV metadata keys are part of the file format that gh_pipeline.read.query reads back.
_COPY_SQL = """
COPY (SELECT * FROM {table}) TO $path
    (FORMAT parquet, KV_METADATA {{"{published_key}": $published_at, "{table_key}": $table}})
"""


def snapshot_file(snapshot_dir: Path, table: str) -> Path:
    """The stable name of a table's snapshot (a symlink to its current version)."""
    return snapshot_dir / f"{table}{SNAPSHOT_SUFFIX}"


def versions_dir(snapshot_dir: Path, table: str) -> Path:
    return snapshot_dir / VERSIONS_DIR / table


def current_version(snapshot_dir: Path, table: str) -> Path | None:
    """The immutable file a reader should read for `table` now, or None if never published."""
    link = snapshot_file(snapshot_dir, table)
    try:
        # One readlink: the answer stays valid for the reader even if the link moves next.
        target = link.parent / os.readlink(link)
    except FileNotFoundError:
        return None
    except OSError:
        # Not a symlink: a plain file left by an older version of the pipeline.
        return link if link.is_file() else None
    return target if target.is_file() else None


def _version_stamp(path: Path) -> int:
    return int(path.name.split("-", 1)[0])


def _prune(snapshot_dir: Path, table: str, current: Path, now: datetime) -> None:
    """Delete versions superseded more than SUPERSEDED_GRACE before `now`.

    A version is superseded when the next one is published; the stamps in the names say when.
    """
    versions = sorted(
        versions_dir(snapshot_dir, table).glob(f"*{SNAPSHOT_SUFFIX}"), key=_version_stamp
    )
    cutoff_ns = _ns(now - SUPERSEDED_GRACE)
    for older, newer in itertools.pairwise(versions):
        if older != current and _version_stamp(newer) <= cutoff_ns:
            older.unlink(missing_ok=True)


def _ns(at: datetime) -> int:
    delta = at.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def publish_table(
    conn: duckdb.DuckDBPyConnection,
    snapshot_dir: Path,
    table: str,
    *,
    published_at: datetime | None = None,
) -> Path:
    """Publish `table` for readers: an append-only table (APPEND_ONLY_TABLES) as a new part and
    manifest, returning the manifest's path; any other table as a new immutable Parquet version
    that `<table>.parquet` then points at, returning the version's path."""
    if not table.isidentifier():
        # The name is spliced into SQL; callers pass module constants, this guards the contract.
        raise ValueError(f"table must be a plain identifier, got {table!r}")
    published_at = published_at or datetime.now(UTC)
    if table in APPEND_ONLY_TABLES:
        return _publish_parts(conn, snapshot_dir, table, published_at)
    directory = versions_dir(snapshot_dir, table)
    directory.mkdir(parents=True, exist_ok=True)
    # Unique even when two publications share a timestamp: a version is never overwritten.
    version = (
        directory
        / f"{_ns(published_at):020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SNAPSHOT_SUFFIX}"
    )
    link = snapshot_file(snapshot_dir, table)
    tmp_link = snapshot_dir / f".{table}.{os.getpid()}.link.tmp"
    try:
        conn.execute(
            _COPY_SQL.format(table=table, published_key=PUBLISHED_AT_KEY, table_key=TABLE_KEY),
            {"path": str(version), "published_at": published_at.isoformat(), "table": table},
        ).fetchall()
        # Flush before the link moves: after a crash the name must point at a complete file.
        with version.open("rb") as fh:
            os.fsync(fh.fileno())
        tmp_link.unlink(missing_ok=True)
        # Relative, so the data directory can be moved or mounted elsewhere.
        os.symlink(version.relative_to(snapshot_dir), tmp_link)
        tmp_link.replace(link)
    except BaseException:
        tmp_link.unlink(missing_ok=True)
        version.unlink(missing_ok=True)
        raise
    _prune(snapshot_dir, table, version, published_at)
    # The side file of the first snapshot format; the time now lives inside the Parquet file.
    (snapshot_dir / f"{table}.json").unlink(missing_ok=True)
    return version


# -- append-only tables: parts and a manifest ---------------------------------------------------
@dataclass(frozen=True)
class Published:
    """What a reader reads for one table: immutable files, and (from a manifest) when they were
    published and how many rows they hold; None where only the files can tell."""

    files: tuple[Path, ...]
    published_at: datetime | None = None
    rows: int | None = None


def manifest_file(snapshot_dir: Path, table: str) -> Path:
    """The stable name of an append-only table's manifest (replaced atomically)."""
    return snapshot_dir / f"{table}{MANIFEST_SUFFIX}"


def parts_dir(snapshot_dir: Path, table: str) -> Path:
    return snapshot_dir / PARTS_DIR / table


def read_manifest(snapshot_dir: Path, table: str) -> dict[str, Any] | None:
    """The current manifest of `table`, or None if it has none. One read of a file that is only
    ever replaced by rename, so the answer is one whole publication."""
    try:
        text = manifest_file(snapshot_dir, table).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    manifest = json.loads(text)
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("table") != table:
        raise ValueError(f"{manifest_file(snapshot_dir, table)} is not a {table} manifest")
    return manifest


def current_snapshot(snapshot_dir: Path, table: str) -> Published | None:
    """The files a reader should read for `table` now, or None if it was never published."""
    manifest = read_manifest(snapshot_dir, table)
    if manifest is not None:
        return Published(
            files=tuple(snapshot_dir / part["file"] for part in manifest["parts"]),
            published_at=datetime.fromisoformat(manifest["published_at"]),
            rows=int(manifest["rows"]),
        )
    version = current_version(snapshot_dir, table)
    return None if version is None else Published(files=(version,))


def _copy(
    conn: duckdb.DuckDBPyConnection,
    select: str,
    params: dict[str, Any],
    path: Path,
    table: str,
    published_at: datetime,
) -> None:
    conn.execute(
        f"""
        COPY ({select}) TO $path
            (FORMAT parquet, KV_METADATA {{"{PUBLISHED_AT_KEY}": $published_at, "{TABLE_KEY}": $table}})
        """,
        {**params, "path": str(path), "published_at": published_at.isoformat(), "table": table},
    ).fetchall()
    # Flush before a manifest names it: after a crash a listed part must be complete.
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def _new_part(snapshot_dir: Path, table: str, seq_lo: int, seq_hi: int) -> Path:
    # The random suffix keeps a part from ever being overwritten, e.g. by a publication retried
    # after a crash that left an unlisted part with the same range behind.
    name = f"{seq_lo:020d}-{seq_hi:020d}-{uuid.uuid4().hex[:8]}{SNAPSHOT_SUFFIX}"
    return parts_dir(snapshot_dir, table) / name


def _part_entry(snapshot_dir: Path, path: Path, seq_lo: int, seq_hi: int, rows: int) -> dict:
    return {
        "file": path.relative_to(snapshot_dir).as_posix(),
        "seq_lo": seq_lo,
        "seq_hi": seq_hi,
        "rows": rows,
    }


def _appends(conn: duckdb.DuckDBPyConnection, table: str, manifest: dict[str, Any] | None) -> bool:
    """Whether the table still holds exactly the published rows plus rows above their seq.

    Cheap at any size: the filters on `seq` are answered from row-group statistics."""
    if manifest is None:
        return False
    published, last = int(manifest["rows"]), int(manifest["max_seq"])
    total = int(scalar(conn, f"SELECT count(*) FROM {table}"))
    newer = int(scalar(conn, f"SELECT count(*) FROM {table} WHERE seq > $last", {"last": last}))
    if total != published + newer:
        return False
    # Same count but a different history (a rebuild that lost the newest published row).
    return published == 0 or bool(
        scalar(conn, f"SELECT count(*) FROM {table} WHERE seq = $last", {"last": last})
    )


def _publish_parts(
    conn: duckdb.DuckDBPyConnection, snapshot_dir: Path, table: str, published_at: datetime
) -> Path:
    directory = parts_dir(snapshot_dir, table)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        previous = read_manifest(snapshot_dir, table)
        if previous is not None:
            _check_manifest(previous)
    except (ValueError, KeyError, TypeError):
        previous = None  # unreadable: publish the whole table again
    appending = _appends(conn, table, previous)
    parts: list[dict[str, Any]] = list(previous["parts"]) if appending and previous else []
    retired: list[dict[str, Any]] = list(previous.get("retired", [])) if previous else []
    superseded_at = published_at.isoformat()
    if previous is not None and not appending:
        retired += [{"file": p["file"], "at": superseded_at} for p in previous["parts"]]
    last = int(previous["max_seq"]) if appending and previous else 0
    written: list[Path] = []
    try:
        where = "WHERE seq > $last" if appending else ""
        rows, seq_lo, seq_hi = conn.execute(
            f"SELECT count(*), min(seq), max(seq) FROM {table} {where}",
            {"last": last} if appending else {},
        ).fetchall()[0]
        if rows or not appending:
            # A full publication always writes a part, even an empty one: it carries the schema.
            lo, hi = int(seq_lo or 0), int(seq_hi or 0)
            part = _new_part(snapshot_dir, table, lo, hi)
            written.append(part)
            _copy(
                conn,
                f"SELECT * FROM {table} {where} ORDER BY seq",
                {"last": last} if appending else {},
                part,
                table,
                published_at,
            )
            parts.append(_part_entry(snapshot_dir, part, lo, hi, int(rows)))
        if len(parts) > MAX_PARTS:
            parts, merged = _compact(conn, snapshot_dir, table, parts, published_at, written)
            retired += [{"file": p["file"], "at": superseded_at} for p in merged]
        # An older pipeline's whole-table snapshot: retired like a part, its link removed below.
        legacy = _legacy_versions(snapshot_dir, table)
        retired += [
            {"file": v.relative_to(snapshot_dir).as_posix(), "at": superseded_at} for v in legacy
        ]
        kept = _still_needed(retired, published_at)
        manifest = {
            "format": MANIFEST_FORMAT,
            "table": table,
            "published_at": published_at.isoformat(),
            "rows": sum(int(p["rows"]) for p in parts),
            "max_seq": max([int(p["seq_hi"]) for p in parts] + [last]),
            "parts": parts,
            "retired": kept,
        }
        _write_manifest(snapshot_dir, table, manifest)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    # Readers prefer the manifest, so the old link can go now; its versions wait out the grace.
    snapshot_file(snapshot_dir, table).unlink(missing_ok=True)
    kept_files = {r["file"] for r in kept}
    dropped = [r["file"] for r in retired if r["file"] not in kept_files]
    _sweep(snapshot_dir, table, manifest, dropped)
    # The side file of the first snapshot format.
    (snapshot_dir / f"{table}.json").unlink(missing_ok=True)
    return manifest_file(snapshot_dir, table)


def _check_manifest(manifest: dict[str, Any]) -> None:
    """Raise KeyError/TypeError/ValueError unless the fields a publication builds on are sound."""
    int(manifest["rows"]), int(manifest["max_seq"])
    for part in manifest["parts"]:
        str(part["file"]), int(part["seq_lo"]), int(part["seq_hi"]), int(part["rows"])
    for entry in manifest.get("retired", []):
        str(entry["file"]), datetime.fromisoformat(entry["at"])


def _compact(
    conn: duckdb.DuckDBPyConnection,
    snapshot_dir: Path,
    table: str,
    parts: list[dict[str, Any]],
    published_at: datetime,
    written: list[Path],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Merge parts into one; returns the new part list and the parts merged away.

    The recent parts are merged among themselves while they are smaller than the first part
    (usually the whole history at the first publication), so a merge costs about what was
    appended since, not the history; once they outgrow it, everything is merged."""
    head, tail = parts[0], parts[1:]
    victims = parts if sum(int(p["rows"]) for p in tail) >= int(head["rows"]) else tail
    keep = [p for p in parts if p not in victims]
    lo, hi = int(victims[0]["seq_lo"]), int(victims[-1]["seq_hi"])
    merged = _new_part(snapshot_dir, table, lo, hi)
    written.append(merged)
    # Read back from the published parts rather than the table, so the merge publishes exactly
    # what readers saw; parts are in seq order and DuckDB keeps the file order.
    _copy(
        conn,
        "SELECT * FROM read_parquet($files)",
        {"files": [str(snapshot_dir / p["file"]) for p in victims]},
        merged,
        table,
        published_at,
    )
    rows = sum(int(p["rows"]) for p in victims)
    return [*keep, _part_entry(snapshot_dir, merged, lo, hi, rows)], victims


def _still_needed(retired: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Retired files a reader may still be reading (superseded less than SUPERSEDED_GRACE ago)."""
    cutoff = now - SUPERSEDED_GRACE
    return [r for r in retired if datetime.fromisoformat(r["at"]) > cutoff]


def _write_manifest(snapshot_dir: Path, table: str, manifest: dict[str, Any]) -> None:
    target = manifest_file(snapshot_dir, table)
    tmp = snapshot_dir / f".{table}.{os.getpid()}.{uuid.uuid4().hex[:8]}.manifest.tmp"
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        # rename is atomic: a reader sees the previous manifest or this one, never a mix.
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _legacy_versions(snapshot_dir: Path, table: str) -> list[Path]:
    """Whole-table versions an older pipeline published for `table`, if its link is still there."""
    link = snapshot_file(snapshot_dir, table)
    if not (link.is_symlink() or link.exists()):
        return []
    return sorted(versions_dir(snapshot_dir, table).glob(f"*{SNAPSHOT_SUFFIX}"))


def _sweep(snapshot_dir: Path, table: str, manifest: dict[str, Any], dropped: list[str]) -> None:
    """Delete the retired files whose grace ended, and part files a crashed publication wrote but
    never listed (those once they are older than the grace, by the clock)."""
    for name in dropped:
        (snapshot_dir / name).unlink(missing_ok=True)
    listed = {p["file"] for p in manifest["parts"]} | {r["file"] for r in manifest["retired"]}
    cutoff = time.time() - SUPERSEDED_GRACE.total_seconds()
    for path in parts_dir(snapshot_dir, table).glob(f"*{SNAPSHOT_SUFFIX}"):
        if path.relative_to(snapshot_dir).as_posix() in listed:
            continue
        try:
            if path.stat().st_mtime <= cutoff:
                path.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
