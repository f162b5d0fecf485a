"""The load of one verified GH Archive hour into raw_events (no Dagster import).

DuckDB's bulk readers (gh_pipeline.warehouse.raw) load the hour in one transaction: events already
stored (from the live feed or an earlier load) are skipped by id, corrupt lines go to
rejected_events with their reason, and a crash or kill -9 leaves either the whole hour or nothing.
"""

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from gh_pipeline.archive.eras import era_of
from gh_pipeline.archive.hours import SOURCE, ArchiveHour
from gh_pipeline.warehouse import raw
from gh_pipeline.warehouse.connection import Rollback, scalar, transaction
from gh_pipeline.warehouse.raw import LoadStats

# DuckDB's memory limit while an hour loads (its own setting is 80 % of RAM).
LOAD_MEMORY_LIMIT = "1GB"
# How far from its hour a stored copy of an archive event is looked for (see dedup_window).
DEDUP_MARGIN = timedelta(hours=1)
# How far from its hour an event of the hour's file is counted by stored_from_hour.
STORED_MARGIN = timedelta(days=1)


@dataclass(frozen=True)
class Coverage:
    """How the live feed and the archive overlap in one hour (events created in the hour)."""

    live_events: int  # stored from live polls, created in the hour
    archive_events: int  # distinct valid events in the hour's file
    in_both: int  # live events of the hour that the file also has

    @property
    def live_only(self) -> int:
        return self.live_events - self.in_both

    @property
    def archive_only(self) -> int:
        return self.archive_events - self.in_both

    @property
    def live_share_in_archive(self) -> float | None:
        return self.in_both / self.live_events if self.live_events else None

    @property
    def archive_share_in_live(self) -> float | None:
        return self.in_both / self.archive_events if self.archive_events else None


_COVERAGE_SQL = f"""
WITH archive AS (
    SELECT DISTINCT event_id FROM {raw.STAGE_TABLE}
    WHERE reason IS NULL AND created_at >= $start AND created_at < $end
), live AS (
    SELECT event_id FROM raw_events
    WHERE source = 'api' AND created_at >= $start AND created_at < $end
)
SELECT (SELECT count(*) FROM live), (SELECT count(*) FROM archive),
       (SELECT count(*) FROM live SEMI JOIN archive USING (event_id))
"""


@dataclass(frozen=True)
class ArchiveLoad:
    stats: LoadStats
    coverage: Coverage
    seconds: float
    method: str  # how it was loaded: "direct", "staged" or "staged, all ids checked"

    @property
    def events_per_s(self) -> float:
        return self.stats.received / self.seconds if self.seconds > 0 else 0.0


def dedup_window(hour: ArchiveHour) -> tuple[datetime, datetime]:
    """Where stored copies of the hour's events can be: an event keeps its created_at, and an
    hour file holds the events created in that hour (an hour's margin for stragglers)."""
    return hour.start - DEDUP_MARGIN, hour.end + DEDUP_MARGIN


def _rows_of(hour: ArchiveHour, now: datetime, keep_event: bool) -> dict[str, Any]:
    """What every raw_events row of the hour carries, whichever way it is loaded."""
    return {"poll_id": hour.poll_id, "source": SOURCE, "now": now, "keep_event": keep_event}


_RECORD_HOUR_SQL = """
INSERT OR REPLACE INTO archive_hours VALUES (
    $hour_start, $poll_id, $era, $era_summary, $loaded_at, $method, $events, $new, $duplicates,
    $rejected, $live, $in_both, $share
)
"""


def _record_hour(
    conn: duckdb.DuckDBPyConnection,
    hour: ArchiveHour,
    now: datetime,
    method: str,
    stats: LoadStats,
    coverage: Coverage,
) -> None:
    """The hour's row in archive_hours, inside the load's own transaction."""
    era = era_of(hour.start)
    conn.execute(
        _RECORD_HOUR_SQL,
        {
            "hour_start": hour.start,
            "poll_id": hour.poll_id,
            "era": era.name,
            "era_summary": era.summary,
            "loaded_at": now,
            "method": method,
            "events": stats.received,
            "new": stats.new,
            "duplicates": stats.duplicates,
            "rejected": stats.rejected,
            "live": coverage.live_events,
            "in_both": coverage.in_both,
            "share": coverage.live_share_in_archive,
        },
    )


_FRESH_SQL = """
SELECT count(*) FILTER (WHERE source = 'api' AND created_at >= $start AND created_at < $end),
       count(*) FILTER (WHERE poll_id = $poll_id)
FROM raw_events WHERE created_at >= $window_start AND created_at < $window_end
"""

_IN_HOUR_SQL = """
SELECT count(*) FROM raw_events
WHERE poll_id = $poll_id AND created_at >= $start AND created_at < $end
"""


def _load_direct(
    conn: duckdb.DuckDBPyConnection,
    path: Path,
    hour: ArchiveHour,
    now: datetime,
    lines: int,
    keep_event: bool,
) -> tuple[LoadStats, Coverage] | None:
    """The one-pass load of an hour nothing has touched yet; None (and nothing stored) when the
    file turns out to hold anything but `lines` new, valid, distinct events."""
    window = dedup_window(hour)
    outcome: tuple[LoadStats, Coverage] | None = None
    try:
        with transaction(conn):
            new = raw.insert_file_direct(
                conn, path, window=window, **_rows_of(hour, now, keep_event)
            )
            if new != lines:  # a rejected, repeated or empty line, or a known event: go staged
                raise Rollback
            in_hour = int(
                scalar(
                    conn,
                    _IN_HOUR_SQL,
                    {"poll_id": hour.poll_id, "start": hour.start, "end": hour.end},
                )
            )
            outcome = (
                LoadStats(received=new, new=new, duplicates=0, rejected=0),
                Coverage(live_events=0, archive_events=in_hour, in_both=0),
            )
            _record_hour(conn, hour, now, "direct", *outcome)
    except duckdb.ConstraintException:  # an id repeated in the file or stored elsewhere
        return None
    except duckdb.InvalidInputException:  # a line the staged path rejects with its reason
        return None
    return outcome


def _load_staged(
    conn: duckdb.DuckDBPyConnection,
    path: Path,
    hour: ArchiveHour,
    now: datetime,
    window: tuple[datetime, datetime] | None,
    keep_event: bool,
    method: str,
) -> tuple[LoadStats, Coverage]:
    with transaction(conn):
        received, rejected = raw.stage_ndjson(conn, path)
        # Measured before the insert: the overlap with what the live feed already stored.
        live, archive, both = conn.execute(
            _COVERAGE_SQL, {"start": hour.start, "end": hour.end}
        ).fetchall()[0]
        new = raw.insert_staged(conn, window=window, **_rows_of(hour, now, keep_event))
        raw.drop_stage(conn)
        stats = LoadStats(
            received=received, new=new, duplicates=received - rejected - new, rejected=rejected
        )
        coverage = Coverage(live_events=int(live), archive_events=int(archive), in_both=int(both))
        _record_hour(conn, hour, now, method, stats, coverage)
    return stats, coverage


def load_hour_file(
    conn: duckdb.DuckDBPyConnection,
    path: Path,
    hour: ArchiveHour,
    *,
    now: datetime | None = None,
    expected_lines: int | None = None,
    keep_event: bool = False,
) -> ArchiveLoad:
    """Load one verified hour file into raw_events in a single transaction; rerunning adds nothing.

    With `expected_lines` (the download's count), an hour that neither the live feed nor an
    earlier load has touched goes straight from file to table in one pass (the common case of a
    backfill): DuckDB's typed JSON reader parses each line once. Anything else, or a direct pass
    that finds a bad, repeated or known line, takes the staged path: stage and check every line,
    then insert. Every attempt is its own transaction and a failed one stores nothing, so the
    outcome is the same whichever path ran.

    Archive rows keep the typed columns and `payload`; the whole line goes to `event` only with
    `keep_event` ($GH_PIPELINE_ARCHIVE_FULL_EVENTS): GH Archive itself is the durable copy of the
    line, and keeping it costs a second parse and about twice the stored bytes.
    """
    now = now or datetime.now(UTC)
    started = time.perf_counter()
    # An hour is hundreds of MB of JSON: past the limit DuckDB spills its staging tables to
    # <warehouse>.tmp instead of growing (an older, fatter hour peaked at 3.3 GB without it).
    conn.execute("SET memory_limit = $limit", {"limit": LOAD_MEMORY_LIMIT})
    try:
        window = dedup_window(hour)
        result = None
        method = "direct"
        if expected_lines:
            live, earlier = conn.execute(
                _FRESH_SQL,
                {
                    "start": hour.start,
                    "end": hour.end,
                    "poll_id": hour.poll_id,
                    "window_start": window[0],
                    "window_end": window[1],
                },
            ).fetchall()[0]
            if not live and not earlier:
                result = _load_direct(conn, path, hour, now, expected_lines, keep_event)
        if result is None:
            try:
                method = "staged"
                result = _load_staged(conn, path, hour, now, window, keep_event, method)
            except duckdb.ConstraintException:
                # An event of this hour stored with a created_at outside the window: check
                # against every stored id instead (slower as history grows, always right).
                method = "staged, all ids checked"
                result = _load_staged(conn, path, hour, now, None, keep_event, method)
    finally:
        # Back to DuckDB's default (nothing here configures another; SET with the value read
        # back would lose precision, DuckDB prints it rounded).
        conn.execute("RESET memory_limit")
    stats, coverage = result
    return ArchiveLoad(
        stats=stats, coverage=coverage, seconds=time.perf_counter() - started, method=method
    )


def stored_from_hour(conn: duckdb.DuckDBPyConnection, hour: ArchiveHour) -> tuple[int, int]:
    """(events, rejected lines) the warehouse holds from this hour's file, over all loads."""
    # Bounded by created_at so that DuckDB reads only the row groups near the hour.
    events = scalar(
        conn,
        "SELECT count(*) FROM raw_events WHERE source = $source AND poll_id = $poll_id"
        " AND created_at >= $start AND created_at < $end",
        {
            "source": SOURCE,
            "poll_id": hour.poll_id,
            "start": hour.start - STORED_MARGIN,
            "end": hour.end + STORED_MARGIN,
        },
    )
    rejected = scalar(
        conn,
        "SELECT count(*) FROM rejected_events WHERE source = $source AND poll_id = $poll_id",
        {"source": SOURCE, "poll_id": hour.poll_id},
    )
    return int(events), int(rejected)
