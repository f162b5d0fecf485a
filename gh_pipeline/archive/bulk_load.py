"""The load of one verified GH Archive hour into raw_events (no Dagster import).

DuckDB's bulk readers (gh_pipeline.warehouse.raw) load the hour in one transaction: events already
stored (from the live feed or an earlier load) are skipped by id, corrupt lines go to
rejected_events with their reason, and a crash or kill -9 leaves either the whole hour or nothing.
"""

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from gh_pipeline.archive.eras import era_of
from gh_pipeline.archive.hours import SOURCE, ArchiveHour
from gh_pipeline.settings import ARCHIVE_SCOPE_ALL, ARCHIVE_SCOPE_WATCHED, ArchiveScope
from gh_pipeline.warehouse import raw
from gh_pipeline.warehouse.catalogue import ARCHIVE_HOURS, WATCHED_REPO_ARCHIVE_HOURS
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


# Under a scope ($repos, lower-cased; NULL for all) both sides count that scope's events only.
_COVERAGE_SQL = f"""
WITH archive AS (
    SELECT DISTINCT event_id FROM {raw.STAGE_TABLE}
    WHERE in_scope AND created_at >= $start AND created_at < $end
), live AS (
    SELECT event_id FROM raw_events
    WHERE source = 'api' AND created_at >= $start AND created_at < $end
      AND ($repos::VARCHAR[] IS NULL OR list_contains($repos::VARCHAR[], lower(repo_name)))
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
    scope: ArchiveScope = field(default_factory=ArchiveScope)  # what this load stored
    hour_scope: str = ARCHIVE_SCOPE_ALL  # what the hour holds over all its loads (archive_hours)
    hour_scope_repos: tuple[str, ...] | None = None  # with hour_scope watched: whose events
    repo_events: tuple[tuple[str, int], ...] = ()  # per watched repository: its events in the file

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


_RECORD_HOUR_SQL = f"""
INSERT OR REPLACE INTO {ARCHIVE_HOURS} (
    hour_start, poll_id, era, era_summary, loaded_at, load_method, events_in_file, new_events,
    already_stored, rejected_lines, live_events, live_events_in_file, live_share_in_archive,
    scope, scope_repos, skipped_by_scope
) VALUES (
    $hour_start, $poll_id, $era, $era_summary, $loaded_at, $method, $events, $new, $duplicates,
    $rejected, $live, $in_both, $share, $scope, $scope_repos, $skipped
)
"""


def recorded_scope(
    conn: duckdb.DuckDBPyConnection, hour: ArchiveHour
) -> tuple[str, tuple[str, ...] | None] | None:
    """What archive_hours says the hour holds: (scope, its lower-cased repositories for
    `watched`), or None when the hour was never loaded."""
    rows = conn.execute(
        f"SELECT scope, scope_repos FROM {ARCHIVE_HOURS} WHERE hour_start = $start",
        {"start": hour.start},
    ).fetchall()
    if not rows:
        return None
    scope, repos = rows[0]
    return scope, None if repos is None else tuple(repos)


def scope_holds(held: tuple[str, tuple[str, ...] | None] | None, wanted: ArchiveScope) -> bool:
    """Whether an hour holding `held` (recorded_scope) already has every event `wanted` asks
    for: an hour loaded with `all` has them for any scope, one loaded with `watched` only for
    the repositories it was loaded for."""
    if held is None:
        return False
    scope, repos = held
    if scope == ARCHIVE_SCOPE_ALL:
        return True
    return wanted.repos is not None and set(wanted.repos) <= set(repos or ())


def _merged_scope(
    conn: duckdb.DuckDBPyConnection, hour: ArchiveHour, scope: ArchiveScope
) -> tuple[str, tuple[str, ...] | None]:
    """What the hour holds after this load: events stored by earlier loads stay stored, so an
    hour once loaded with `all` stays `all`, and `watched` loads add up their repositories."""
    if scope.repos is None:
        return ARCHIVE_SCOPE_ALL, None
    held = recorded_scope(conn, hour)
    if held is not None and held[0] == ARCHIVE_SCOPE_ALL:
        return ARCHIVE_SCOPE_ALL, None
    earlier = set(held[1] or ()) if held is not None else set()
    return ARCHIVE_SCOPE_WATCHED, tuple(sorted(earlier | set(scope.repos)))


_RECORD_REPO_HOUR_SQL = f"""
INSERT OR REPLACE INTO {WATCHED_REPO_ARCHIVE_HOURS} VALUES (
    $repo, $hour_start, $hour_end, $poll_id, $source, $events, $era, $complete_crawl, $caveat, $now
)
"""

# The watched repositories' events in the hour's file, by lower-cased name: from the stage (every
# valid line, stored now or before) or, after a one-pass load, from the rows it stored (then the
# whole file, as nothing of the hour was stored before). Bounded by created_at like
# stored_from_hour.
_REPO_EVENTS_STAGED_SQL = f"""
SELECT lower(repo_name), count(DISTINCT event_id) FROM {raw.STAGE_TABLE}
WHERE reason IS NULL AND list_contains($watched::VARCHAR[], lower(repo_name)) GROUP BY 1
"""
_REPO_EVENTS_STORED_SQL = """
SELECT lower(repo_name), count(*) FROM raw_events
WHERE poll_id = $poll_id AND created_at >= $start AND created_at < $end
  AND list_contains($watched::VARCHAR[], lower(repo_name))
GROUP BY 1
"""


def _repo_events(
    conn: duckdb.DuckDBPyConnection, hour: ArchiveHour, scope: ArchiveScope, *, staged: bool
) -> tuple[tuple[str, int], ...]:
    """Per watched repository (as named in GH_PIPELINE_REPOS), its events in the hour's file."""
    if not scope.watched:
        return ()
    watched = sorted({repo.lower() for repo in scope.watched})
    if staged:
        rows = conn.execute(_REPO_EVENTS_STAGED_SQL, {"watched": watched}).fetchall()
    else:
        rows = conn.execute(
            _REPO_EVENTS_STORED_SQL,
            {
                "poll_id": hour.poll_id,
                "start": hour.start - STORED_MARGIN,
                "end": hour.end + STORED_MARGIN,
                "watched": watched,
            },
        ).fetchall()
    counts = {name: int(n) for name, n in rows}
    return tuple((repo, counts.get(repo.lower(), 0)) for repo in scope.watched)


def _record_hour(
    conn: duckdb.DuckDBPyConnection,
    hour: ArchiveHour,
    now: datetime,
    method: str,
    stats: LoadStats,
    coverage: Coverage,
    scope: ArchiveScope,
    repo_events: tuple[tuple[str, int], ...],
) -> tuple[str, tuple[str, ...] | None]:
    """The hour's row in archive_hours and its watched repositories' rows in
    watched_repo_archive_hours, inside the load's own transaction; returns the hour's scope."""
    era = era_of(hour.start)
    hour_scope, hour_repos = _merged_scope(conn, hour, scope)
    for repo, events in repo_events:
        conn.execute(
            _RECORD_REPO_HOUR_SQL,
            {
                "repo": repo,
                "hour_start": hour.start,
                "hour_end": hour.end,
                "poll_id": hour.poll_id,
                "source": SOURCE,
                "events": events,
                "era": era.name,
                "complete_crawl": era.name == "complete",
                "caveat": era.summary,
                "now": now,
            },
        )
    conn.execute(
        _RECORD_HOUR_SQL,
        {
            "scope": hour_scope,
            "scope_repos": None if hour_repos is None else list(hour_repos),
            "skipped": stats.skipped_by_scope,
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
    return hour_scope, hour_repos


_FRESH_SQL = """
SELECT count(*) FILTER (WHERE source = 'api' AND created_at >= $start AND created_at < $end),
       count(*) FILTER (WHERE poll_id = $poll_id)
FROM raw_events WHERE created_at >= $window_start AND created_at < $window_end
"""

_IN_HOUR_SQL = """
SELECT count(*) FROM raw_events
WHERE poll_id = $poll_id AND created_at >= $start AND created_at < $end
"""


@dataclass(frozen=True)
class _Outcome:
    stats: LoadStats
    coverage: Coverage
    hour_scope: tuple[str, tuple[str, ...] | None]
    repo_events: tuple[tuple[str, int], ...]


def _load_direct(
    conn: duckdb.DuckDBPyConnection,
    path: Path,
    hour: ArchiveHour,
    now: datetime,
    lines: int,
    keep_event: bool,
    scope: ArchiveScope,
) -> _Outcome | None:
    """The one-pass load of an hour nothing has touched yet; None (and nothing stored) when the
    file turns out to hold anything but `lines` new, valid, distinct events (of the scope)."""
    window = dedup_window(hour)
    outcome: _Outcome | None = None
    rows = _rows_of(hour, now, keep_event)
    try:
        with transaction(conn):
            if scope.repos is None:
                read = new = in_scope = raw.insert_file_direct(conn, path, window=window, **rows)
            else:
                del rows["keep_event"]  # a scoped load never keeps `event` (see load_hour_file)
                read, in_scope, new = raw.insert_file_scoped(
                    conn, path, repos=scope.repos, window=window, **rows
                )
            # A rejected, repeated or empty line, or a known event: go staged.
            if read != lines or new != in_scope:
                raise Rollback
            in_hour = int(
                scalar(
                    conn,
                    _IN_HOUR_SQL,
                    {"poll_id": hour.poll_id, "start": hour.start, "end": hour.end},
                )
            )
            stats = LoadStats(
                received=read, new=new, duplicates=0, rejected=0, skipped_by_scope=read - in_scope
            )
            coverage = Coverage(live_events=0, archive_events=in_hour, in_both=0)
            repo_events = _repo_events(conn, hour, scope, staged=False)
            hour_scope = _record_hour(
                conn, hour, now, "direct", stats, coverage, scope, repo_events
            )
            outcome = _Outcome(stats, coverage, hour_scope, repo_events)
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
    scope: ArchiveScope,
) -> _Outcome:
    with transaction(conn):
        received, rejected, skipped = raw.stage_ndjson(conn, path, repos=scope.repos)
        # Measured before the insert: the overlap with what the live feed already stored.
        live, archive, both = conn.execute(
            _COVERAGE_SQL, {"start": hour.start, "end": hour.end, "repos": scope.repos}
        ).fetchall()[0]
        repo_events = _repo_events(conn, hour, scope, staged=True)
        new = raw.insert_staged(conn, window=window, **_rows_of(hour, now, keep_event))
        raw.drop_stage(conn)
        stats = LoadStats(
            received=received,
            new=new,
            duplicates=received - rejected - skipped - new,
            rejected=rejected,
            skipped_by_scope=skipped,
        )
        coverage = Coverage(live_events=int(live), archive_events=int(archive), in_both=int(both))
        hour_scope = _record_hour(conn, hour, now, method, stats, coverage, scope, repo_events)
    return _Outcome(stats, coverage, hour_scope, repo_events)


def load_hour_file(
    conn: duckdb.DuckDBPyConnection,
    path: Path,
    hour: ArchiveHour,
    *,
    now: datetime | None = None,
    expected_lines: int | None = None,
    keep_event: bool = False,
    scope: ArchiveScope | None = None,
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

    `scope` ($GH_PIPELINE_ARCHIVE_SCOPE, default all) decides whose events are stored: with
    `watched`, only the watched repositories' (matched case-insensitively) while the file is
    read; every line is still checked and a corrupt one quarantined. Under either scope, each
    watched repository gets its row for the hour in watched_repo_archive_hours.
    """
    scope = scope or ArchiveScope()
    now = now or datetime.now(UTC)
    started = time.perf_counter()
    # An hour is hundreds of MB of JSON: past the limit DuckDB spills its staging tables to
    # <warehouse>.tmp instead of growing (an older, fatter hour peaked at 3.3 GB without it).
    conn.execute("SET memory_limit = $limit", {"limit": LOAD_MEMORY_LIMIT})
    try:
        window = dedup_window(hour)
        result = None
        method = "direct"
        # The one pass keeps `event` only through the staged select, which cannot tell another
        # repository's event from a rejected line by the count: a scoped load with `event` goes
        # staged.
        if expected_lines and not (keep_event and scope.repos is not None):
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
                result = _load_direct(conn, path, hour, now, expected_lines, keep_event, scope)
        if result is None:
            try:
                method = "staged"
                result = _load_staged(conn, path, hour, now, window, keep_event, method, scope)
            except duckdb.ConstraintException:
                # An event of this hour stored with a created_at outside the window: check
                # against every stored id instead (slower as history grows, always right).
                method = "staged, all ids checked"
                result = _load_staged(conn, path, hour, now, None, keep_event, method, scope)
    finally:
        # Back to DuckDB's default (nothing here configures another; SET with the value read
        # back would lose precision, DuckDB prints it rounded).
        conn.execute("RESET memory_limit")
    return ArchiveLoad(
        stats=result.stats,
        coverage=result.coverage,
        seconds=time.perf_counter() - started,
        method=method,
        scope=scope,
        hour_scope=result.hour_scope[0],
        hour_scope_repos=result.hour_scope[1],
        repo_events=result.repo_events,
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
