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
"""

import itertools
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

SNAPSHOT_SUFFIX = ".parquet"
VERSIONS_DIR = "versions"
PUBLISHED_AT_KEY = "gh_pipeline.published_at"
TABLE_KEY = "gh_pipeline.table"
SUPERSEDED_GRACE = timedelta(minutes=2)

# The KV metadata keys are part of the file format that gh_pipeline.query reads back.
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
    """Publish `table` as a new immutable Parquet version and point `<table>.parquet` at it;
    returns the version's path."""
    if not table.isidentifier():
        # The name is spliced into SQL; callers pass module constants, this guards the contract.
        raise ValueError(f"table must be a plain identifier, got {table!r}")
    published_at = published_at or datetime.now(UTC)
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
