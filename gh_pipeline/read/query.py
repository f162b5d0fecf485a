"""Read-only queries for notebooks, over the Parquet snapshot the pipeline publishes (no Dagster import).

Why a snapshot: DuckDB allows one writing process, a read-only open fails while the writer holds
the warehouse, and a reader holding the file blocks the writer. So this module never opens
`warehouse.duckdb`. After each materialisation the pipeline publishes every metric table as an
immutable Parquet version and atomically points `<data_dir>/snapshot/<table>.parquet` at it, and
appends each filtered table's new rows as an immutable part listed by an atomically replaced
`<data_dir>/snapshot/<table>.manifest.json` (`gh_pipeline.publish.snapshot`). Each call here resolves
those links and manifests once and reads the files they name through its own cursor on a private
in-memory DuckDB: a result can be one materialisation stale, never torn, and the pipeline never
waits. That in-memory database locks no file; it is kept open per process and data directory
because opening one costs more than a query (see _reader).

The in-memory database is sandboxed: external access is switched off except for the snapshot
files published when it was opened, and the configuration is locked, so it cannot write a file,
attach the warehouse or read anything else. Every value travels as a bound parameter.

Time: every timestamp is UTC (`datetime64[us, UTC]` columns). `as_of` defaults to the current
time in UTC at the moment of the call and must be timezone-aware when given. A look-back window
of N minutes or days ending at `as_of` holds the events with `as_of - N < created_at <= as_of`
(the same rule as the `event_counts` table); a day is 24 hours.

Bad input raises `ValueError` naming the argument. Before anything is published the functions
return an empty DataFrame with the documented columns and dtypes.
"""

import operator
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import numpy as np
import pandas as pd

from gh_pipeline import settings
from gh_pipeline.publish import snapshot
from gh_pipeline.warehouse import catalogue
from gh_pipeline.warehouse.catalogue import TRACKED_EVENT_TYPES

__all__ = [
    "active_repos",
    "event_counts",
    "event_intervals",
    "events",
    "last_updated",
    "pr_intervals",
    "repo_pr_counts",
    "top_repos",
    "user_sessions",
]

DataDir = str | os.PathLike[str] | None

# Bounds keep every value inside DuckDB's ranges, so bad input is a ValueError, not an engine error.
MAX_WINDOW_MINUTES = 100 * 366 * 24 * 60
MAX_DAYS = 100 * 366
MAX_COUNT = 2**63 - 1

_TS = pd.DatetimeTZDtype(unit="us", tz="UTC")
_T = TypeVar("_T")
_ATTEMPTS = 3
_SANDBOXES: dict[tuple[int, str], "_Sandbox"] = {}
_SANDBOXES_LOCK = threading.Lock()


def _reset_lock_in_child() -> None:
    # A fork while another thread held the lock would leave the child's copy locked for good.
    global _SANDBOXES_LOCK
    _SANDBOXES_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock_in_child)

_TRACKED_TABLES: dict[str, str] = catalogue.TABLE_OF_TYPE
# Snapshot tables in the order last_updated() lists them.
_PUBLISHED_TABLES: tuple[str, ...] = catalogue.PUBLISHED_TABLES

# Output columns and pandas dtypes of each function; results are conformed to these so that an
# empty answer and a full one have the same dtypes (DuckDB would turn an integer column holding
# NULLs into float64, for instance).
PR_INTERVALS_COLUMNS: dict[str, Any] = {
    "repo_name": object,
    "pr_opened": "int64",
    "first_opened_at": _TS,
    "last_opened_at": _TS,
    "avg_interval_s": "float64",
    "median_interval_s": "float64",
    "p90_interval_s": "float64",
}
EVENT_COUNTS_COLUMNS: dict[str, Any] = {
    "as_of": _TS,
    "window_minutes": "int64",
    "event_type": object,
    "event_count": "int64",
}
REPO_PR_COUNTS_COLUMNS: dict[str, Any] = {
    "repo_name": object,
    "pr_events": "int64",
    "pr_opened": "int64",
}
# What `with_completeness=True` adds to pr_intervals() and repo_pr_counts(): 'complete' for a
# watched repository's exact figure over [complete_since, complete_until], else 'sample'.
COMPLETENESS_COLUMNS: dict[str, Any] = {
    "completeness": object,
    "complete_since": _TS,
    "complete_until": _TS,
}
# The tables gain these columns only once a repository is watched: UNION ALL BY NAME with an
# empty typed row makes them NULL (then 'sample') when a published table does not have them.
_COMPLETENESS_SQL = """
WITH t AS (
    SELECT * FROM ({source})
    UNION ALL BY NAME
    SELECT NULL::VARCHAR AS repo_name, NULL::VARCHAR AS completeness,
           NULL::TIMESTAMPTZ AS complete_since, NULL::TIMESTAMPTZ AS complete_until
    WHERE false
)
SELECT * REPLACE (coalesce(completeness, 'sample') AS completeness) FROM t
"""
EVENTS_COLUMNS: dict[str, Any] = {
    "event_id": object,
    "event_type": object,
    "created_at": _TS,
    "actor_login": object,
    "repo_id": "Int64",
    "repo_name": object,
    "action": object,
    "number": "Int64",
}
EVENT_INTERVALS_COLUMNS: dict[str, Any] = {
    "repo_name": object,
    "events": "int64",
    "first_event_at": _TS,
    "last_event_at": _TS,
    "avg_interval_s": "float64",
    "median_interval_s": "float64",
    "p90_interval_s": "float64",
}
ACTIVE_REPOS_COLUMNS: dict[str, Any] = {
    "repo_name": object,
    "events": "int64",
    "first_event_at": _TS,
    "last_event_at": _TS,
}
TOP_REPOS_COLUMNS: dict[str, Any] = {
    "repo_name": object,
    "events": "int64",
    "unique_actors": "int64",
    "first_event_at": _TS,
    "last_event_at": _TS,
}
USER_SESSIONS_COLUMNS: dict[str, Any] = {
    "actor_login": object,
    "session_start": _TS,
    "session_end": _TS,
    "duration_s": "float64",
    "events": "int64",
    "repos": "int64",
}
LAST_UPDATED_COLUMNS: dict[str, Any] = {
    "table_name": object,
    "published_at": _TS,
    "row_count": "int64",
}


# -- input validation ------------------------------------------------------------------------
def _int(name: str, value: Any, *, low: int, high: int, none_ok: bool = False) -> int | None:
    if value is None and none_ok:
        return None
    # bool is an int subclass in Python; True as a limit is a mistake, not 1.
    if isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be an integer, not a bool ({value!r})")
    try:
        number = operator.index(value)  # int and numpy integers; rejects floats and strings
    except TypeError:
        raise ValueError(
            f"{name} must be an integer{' or None' if none_ok else ''}, "
            f"got {type(value).__name__} {value!r}"
        ) from None
    if not low <= number <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {number}")
    return number


def _str(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string or None, got {type(value).__name__} {value!r}")
    return str(value)


def _event_type(name: str, value: Any, *, none_ok: bool) -> str | None:
    if value is None and none_ok:
        return None
    if not isinstance(value, str) or value not in TRACKED_EVENT_TYPES:
        raise ValueError(
            f"{name} must be one of {', '.join(TRACKED_EVENT_TYPES)}"
            f"{' or None' if none_ok else ''}, got {value!r}"
        )
    return value


def _timestamp(name: str, value: Any) -> datetime | None:
    if value is None:
        return None
    if value is pd.NaT:  # NaT passes isinstance(..., datetime) but has no time
        raise ValueError(f"{name} must be a timezone-aware datetime or None, got NaT")
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime(warn=False)
    if not isinstance(value, datetime):
        raise ValueError(
            f"{name} must be a timezone-aware datetime or None, got {type(value).__name__} {value!r}"
        )
    if value.utcoffset() is None:
        # Guessing a timezone would silently shift every window; say how to be explicit instead.
        raise ValueError(
            f"{name} must be timezone-aware (e.g. datetime(..., tzinfo=datetime.UTC)), got {value!r}"
        )
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError(f"{name} is out of range in UTC: {value!r}") from None


def _now_or(name: str, value: Any) -> datetime:
    checked = _timestamp(name, value)
    return checked if checked is not None else datetime.now(UTC)


def _snapshot_dir(data_dir: DataDir) -> Path:
    if data_dir is not None and not isinstance(data_dir, str | os.PathLike):
        raise ValueError(
            f"data_dir must be a path, a string or None, got {type(data_dir).__name__} {data_dir!r}"
        )
    # Fully resolved: every spelling of one directory (relative, through a symlink) then shares
    # one cached engine (_reader), whose allow-list holds resolved file names.
    return Path(os.path.realpath(settings.snapshot_dir(settings.data_dir(data_dir))))


# -- reading ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Sources:
    """The snapshot files one call reads: SQL fragments that name them only via parameters."""

    directory: Path  # the snapshot directory the files were resolved in (keys the engine)
    sql: str | None  # a subquery, or None when nothing is published yet
    params: dict[str, Any]
    paths: tuple[Path, ...]


def _resolved(snapshot_dir: Path, table: str) -> snapshot.Published | None:
    """The immutable files of `table` to read, resolved once per call: the version a whole-table
    snapshot points at, or the parts an append-only table's manifest lists. See
    gh_pipeline.publish.snapshot: DuckDB reopens a file during a query, so it must be given names whose
    content never changes."""
    published = snapshot.current_snapshot(snapshot_dir, table)
    if published is None:
        return None
    # Fully resolved: the sandbox's allow-list and the read then name each file identically, by a
    # path with no link in it that could move.
    files = tuple(Path(os.path.realpath(f)) for f in published.files)
    return snapshot.Published(files, published.published_at, published.rows)


def _table_source(snapshot_dir: Path, table: str) -> _Sources:
    published = _resolved(snapshot_dir, table)
    if published is None:
        return _Sources(snapshot_dir, None, {}, ())
    files = published.files
    params = {"files": [str(f) for f in files]}
    return _Sources(snapshot_dir, "SELECT * FROM read_parquet($files)", params, files)


def _tracked_source(snapshot_dir: Path, event_types: Sequence[str]) -> _Sources:
    """The union of the published filtered tables for `event_types`, in one column layout."""
    parts: list[str] = []
    params: dict[str, Any] = {}
    paths: list[Path] = []
    for i, event_type in enumerate(event_types):
        table = catalogue.FILTERED_TABLES[_TRACKED_TABLES[event_type]]
        published = _resolved(snapshot_dir, table.name)
        if published is None:
            continue
        number = "number::INTEGER" if table.has_number else "NULL::INTEGER"
        # Only parameter names ($files_0, $type_0) and fixed column expressions enter the text.
        parts.append(
            f"SELECT event_id::VARCHAR AS event_id, $type_{i}::VARCHAR AS event_type, "
            f"created_at::TIMESTAMPTZ AS created_at, actor_login::VARCHAR AS actor_login, "
            f"repo_id::BIGINT AS repo_id, repo_name::VARCHAR AS repo_name, "
            f"action::VARCHAR AS action, {number} AS number "
            f"FROM read_parquet($files_{i})"
        )
        # A list of files travels as one bound parameter too.
        params[f"files_{i}"] = [str(f) for f in published.files]
        params[f"type_{i}"] = event_type
        paths.extend(published.files)
    if not parts:
        return _Sources(snapshot_dir, None, {}, ())
    return _Sources(snapshot_dir, " UNION ALL ".join(parts), params, tuple(paths))


@dataclass(frozen=True)
class _Sandbox:
    conn: duckdb.DuckDBPyConnection
    allowed: frozenset[str]


def _all_published(directory: Path) -> set[str]:
    files: set[str] = set()
    for table in _PUBLISHED_TABLES:
        try:
            published = _resolved(directory, table)
        except (OSError, ValueError, KeyError):
            # A table this call does not read must not fail it; a call that reads it says why.
            continue
        if published is not None:
            files.update(str(f) for f in published.files)
    return files


def _new_sandbox(allowed: frozenset[str]) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect(":memory:")
    conn.execute("SET GLOBAL TimeZone = 'UTC'")
    conn.execute("SET allowed_paths = $paths", {"paths": sorted(allowed)})
    conn.execute("SET enable_external_access = false")
    # Version and part names never repeat (the files are immutable), so a cached footer always
    # describes the file of that name.
    conn.execute("SET parquet_metadata_cache = true")
    conn.execute("SET lock_configuration = true")
    return conn


@contextmanager
def _reader(directory: Path, paths: Sequence[Path]) -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor on a private in-memory DuckDB that may read the published snapshot files, `paths`
    among them, and nothing else, and write nothing.

    Opening an in-memory DuckDB costs ~30 ms here, more than a query on the snapshots, so one is
    kept per process and snapshot directory, allowing every file published when it was opened. A
    call whose files it does not allow (the pipeline published since) opens the next one, at most
    once per publication. An in-memory database locks no file, so keeping it open blocks no one;
    each call gets its own cursor, so threads may share it.
    """
    wanted = {str(p) for p in paths}
    key = (os.getpid(), str(directory))  # a forked child must not use its parent's engine
    with _SANDBOXES_LOCK:
        sandbox = _SANDBOXES.get(key)
        if sandbox is None or not wanted <= sandbox.allowed:
            allowed = frozenset(wanted | _all_published(directory))
            # The replaced engine closes once the last cursor of a running call on it is closed.
            sandbox = _SANDBOXES[key] = _Sandbox(_new_sandbox(allowed), allowed)
        cursor = sandbox.conn.cursor()
    try:
        yield cursor
    finally:
        cursor.close()


def _empty(columns: Mapping[str, Any]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})


def _conform(frame: pd.DataFrame, columns: Mapping[str, Any]) -> pd.DataFrame:
    frame = frame[list(columns)]
    return frame.astype(dict(columns)).reset_index(drop=True)


def _with_retry(read: Callable[[], _T], paths: Callable[[], Sequence[Path]]) -> _T:
    """Run `read`; if it fails because a version it resolved was pruned meanwhile (a reader
    stalled for longer than snapshot.SUPERSEDED_GRACE), resolve again and retry."""
    for attempt in range(_ATTEMPTS):
        try:
            return read()
        except duckdb.Error:
            if attempt == _ATTEMPTS - 1 or all(p.exists() for p in paths()):
                raise
    raise AssertionError("unreachable")


def _run(
    resolve: Callable[[], _Sources],
    sql: str,
    params: Mapping[str, Any],
    columns: Mapping[str, Any],
) -> pd.DataFrame:
    resolved: list[_Sources] = []

    def read() -> pd.DataFrame:
        sources = resolve()
        resolved.append(sources)
        if sources.sql is None:
            return _empty(columns)
        with _reader(sources.directory, sources.paths) as conn:
            frame = conn.execute(sql.format(source=sources.sql), {**sources.params, **params}).df()
        return _conform(frame, columns)

    return _with_retry(read, lambda: resolved[-1].paths)


# -- the API ---------------------------------------------------------------------------------
def _completeness(
    sql: str, columns: dict[str, Any], with_completeness: bool
) -> tuple[str, dict[str, Any]]:
    if not with_completeness:
        return sql, columns
    select = ", ".join(COMPLETENESS_COLUMNS)
    sql = sql.replace("\n    FROM ({source})", f", {select}\n    FROM ({_COMPLETENESS_SQL})")
    return sql, {**columns, **COMPLETENESS_COLUMNS}


def pr_intervals(
    repo: str | None = None, *, with_completeness: bool = False, data_dir: DataDir = None
) -> pd.DataFrame:
    """The `pr_intervals` table (time between opened pull requests per repository), ordered by
    repository; `repo` keeps the one repository with exactly that name. `pr_opened` is the
    number of events a row rests on; `with_completeness=True` adds `completeness` ('complete':
    a watched repository's exact figure over [`complete_since`, `complete_until`]; 'sample':
    from the events the global feed happened to show)."""
    repo = _str("repo", repo)
    sql = """
    SELECT repo_name, pr_opened, first_opened_at, last_opened_at,
           avg_interval_s, median_interval_s, p90_interval_s
    FROM ({source})
    WHERE $repo::VARCHAR IS NULL OR repo_name = $repo::VARCHAR
    ORDER BY repo_name
    """
    sql, columns = _completeness(sql, PR_INTERVALS_COLUMNS, with_completeness)
    sources = partial(_table_source, _snapshot_dir(data_dir), catalogue.PR_INTERVALS)
    return _run(sources, sql, {"repo": repo}, columns)


def event_counts(
    offset_minutes: int = 60, *, as_of: datetime | None = None, data_dir: DataDir = None
) -> pd.DataFrame:
    """Tracked-event counts by type for the window `as_of - offset_minutes < created_at <= as_of`
    (as_of defaults to now, UTC): one row per tracked type, zeros included. Any window length
    works, not only the precomputed ones in the `event_counts` table."""
    minutes = _int("offset_minutes", offset_minutes, low=1, high=MAX_WINDOW_MINUTES)
    end = _now_or("as_of", as_of)
    sql = """
    WITH types AS (SELECT unnest($types::VARCHAR[]) AS event_type)
    SELECT $as_of::TIMESTAMPTZ AS as_of,
           $minutes::BIGINT AS window_minutes,
           t.event_type,
           count(e.created_at)::BIGINT AS event_count
    FROM types t
    LEFT JOIN ({source}) e
      ON e.event_type = t.event_type
     AND e.created_at > $as_of::TIMESTAMPTZ - to_minutes($minutes::BIGINT)
     AND e.created_at <= $as_of::TIMESTAMPTZ
    GROUP BY ALL
    ORDER BY t.event_type
    """
    params = {"types": list(TRACKED_EVENT_TYPES), "as_of": end, "minutes": minutes}
    sources = partial(_tracked_source, _snapshot_dir(data_dir), TRACKED_EVENT_TYPES)
    return _run(sources, sql, params, EVENT_COUNTS_COLUMNS)


def repo_pr_counts(
    limit: int | None = None, *, with_completeness: bool = False, data_dir: DataDir = None
) -> pd.DataFrame:
    """The `repo_pr_counts` table, most pull-request events first (ties by repository name);
    `with_completeness=True` adds the columns pr_intervals() describes."""
    limit = _int("limit", limit, low=0, high=MAX_COUNT, none_ok=True)
    sql = """
    SELECT repo_name, pr_events, pr_opened
    FROM ({source})
    ORDER BY pr_events DESC, repo_name
    LIMIT $limit::BIGINT
    """
    sql, columns = _completeness(sql, REPO_PR_COUNTS_COLUMNS, with_completeness)
    sources = partial(_table_source, _snapshot_dir(data_dir), catalogue.REPO_PR_COUNTS)
    return _run(sources, sql, {"limit": limit}, columns)


def events(
    event_type: str | None = None,
    repo: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
    *,
    data_dir: DataDir = None,
) -> pd.DataFrame:
    """Tracked events, newest first: optionally one type, one repository, and
    `since < created_at <= until` (the same window rule as event_counts)."""
    event_type = _event_type("event_type", event_type, none_ok=True)
    repo = _str("repo", repo)
    start = _timestamp("since", since)
    end = _timestamp("until", until)
    if start is not None and end is not None and start > end:
        raise ValueError(f"since ({start.isoformat()}) is after until ({end.isoformat()})")
    limit = _int("limit", limit, low=0, high=MAX_COUNT, none_ok=True)
    sql = """
    SELECT event_id, event_type, created_at, actor_login, repo_id, repo_name, action, number
    FROM ({source})
    WHERE ($repo::VARCHAR IS NULL OR repo_name = $repo::VARCHAR)
      AND ($since::TIMESTAMPTZ IS NULL OR created_at > $since::TIMESTAMPTZ)
      AND ($until::TIMESTAMPTZ IS NULL OR created_at <= $until::TIMESTAMPTZ)
    ORDER BY created_at DESC, event_id DESC
    LIMIT $limit::BIGINT
    """
    types = TRACKED_EVENT_TYPES if event_type is None else (event_type,)
    params = {"repo": repo, "since": start, "until": end, "limit": limit}
    sources = partial(_tracked_source, _snapshot_dir(data_dir), types)
    return _run(sources, sql, params, EVENTS_COLUMNS)


def event_intervals(
    event_type: str,
    action: str | None = None,
    repo: str | None = None,
    *,
    data_dir: DataDir = None,
) -> pd.DataFrame:
    """Time between adjacent events of one type (and `action`, e.g. "opened") per repository:
    count, first/last, mean/median/p90 gap in seconds (NULL below two events), by repository.
    `event_intervals("PullRequestEvent", "opened")` matches the `pr_intervals` table."""
    event_type = _event_type("event_type", event_type, none_ok=False)
    action = _str("action", action)
    repo = _str("repo", repo)
    sql = """
    WITH e AS (
        SELECT repo_name, created_at,
               epoch(created_at) - epoch(lag(created_at) OVER (
                   PARTITION BY repo_name ORDER BY created_at, event_id)) AS gap_s
        FROM ({source})
        WHERE ($action::VARCHAR IS NULL OR action = $action::VARCHAR)
          AND ($repo::VARCHAR IS NULL OR repo_name = $repo::VARCHAR)
    )
    SELECT repo_name,
           count(*)::BIGINT AS events,
           min(created_at) AS first_event_at,
           max(created_at) AS last_event_at,
           avg(gap_s)::DOUBLE AS avg_interval_s,
           quantile_cont(gap_s, 0.5)::DOUBLE AS median_interval_s,
           quantile_cont(gap_s, 0.9)::DOUBLE AS p90_interval_s
    FROM e
    GROUP BY repo_name
    ORDER BY repo_name
    """
    sources = partial(_tracked_source, _snapshot_dir(data_dir), (event_type,))
    return _run(sources, sql, {"action": action, "repo": repo}, EVENT_INTERVALS_COLUMNS)


def active_repos(
    event_type: str,
    min_events: int,
    *,
    limit: int | None = None,
    data_dir: DataDir = None,
) -> pd.DataFrame:
    """Repositories with at least `min_events` events of `event_type`, most events first."""
    event_type = _event_type("event_type", event_type, none_ok=False)
    min_events = _int("min_events", min_events, low=0, high=MAX_COUNT)
    limit = _int("limit", limit, low=0, high=MAX_COUNT, none_ok=True)
    sql = """
    SELECT repo_name,
           count(*)::BIGINT AS events,
           min(created_at) AS first_event_at,
           max(created_at) AS last_event_at
    FROM ({source})
    GROUP BY repo_name
    HAVING count(*) >= $min_events::BIGINT
    ORDER BY events DESC, repo_name
    LIMIT $limit::BIGINT
    """
    params = {"min_events": min_events, "limit": limit}
    sources = partial(_tracked_source, _snapshot_dir(data_dir), (event_type,))
    return _run(sources, sql, params, ACTIVE_REPOS_COLUMNS)


def top_repos(
    days: int | None = 7,
    limit: int | None = 10,
    *,
    as_of: datetime | None = None,
    data_dir: DataDir = None,
) -> pd.DataFrame:
    """Repositories with the most tracked events in the `days` (24 h each) up to `as_of` (default
    now, UTC; days=None means all history): events, unique actors, first and last event."""
    days = _int("days", days, low=1, high=MAX_DAYS, none_ok=True)
    limit = _int("limit", limit, low=0, high=MAX_COUNT, none_ok=True)
    end = _now_or("as_of", as_of)
    sql = """
    SELECT repo_name,
           count(*)::BIGINT AS events,
           count(DISTINCT actor_login)::BIGINT AS unique_actors,
           min(created_at) AS first_event_at,
           max(created_at) AS last_event_at
    FROM ({source})
    WHERE created_at <= $as_of::TIMESTAMPTZ
      AND ($days::INTEGER IS NULL OR created_at > $as_of::TIMESTAMPTZ - to_days($days::INTEGER))
    GROUP BY repo_name
    ORDER BY events DESC, unique_actors DESC, repo_name
    LIMIT $limit::BIGINT
    """
    params = {"days": days, "limit": limit, "as_of": end}
    sources = partial(_tracked_source, _snapshot_dir(data_dir), TRACKED_EVENT_TYPES)
    return _run(sources, sql, params, TOP_REPOS_COLUMNS)


def user_sessions(
    gap_minutes: int = 30,
    days: int | None = 7,
    limit: int | None = 50,
    *,
    as_of: datetime | None = None,
    data_dir: DataDir = None,
) -> pd.DataFrame:
    """Sessions: runs of one actor's tracked events where each gap to the previous event is at
    most `gap_minutes`, among the events of the `days` up to `as_of` (default now, UTC; None = all
    history). Longest sessions (by events, then duration) first."""
    gap_minutes = _int("gap_minutes", gap_minutes, low=0, high=MAX_WINDOW_MINUTES)
    days = _int("days", days, low=1, high=MAX_DAYS, none_ok=True)
    limit = _int("limit", limit, low=0, high=MAX_COUNT, none_ok=True)
    end = _now_or("as_of", as_of)
    sql = """
    WITH e AS (
        SELECT actor_login, repo_name, created_at, event_id
        FROM ({source})
        WHERE actor_login IS NOT NULL
          AND created_at <= $as_of::TIMESTAMPTZ
          AND ($days::INTEGER IS NULL OR created_at > $as_of::TIMESTAMPTZ - to_days($days::INTEGER))
    ), marked AS (
        SELECT *,
               CASE WHEN epoch(created_at) - epoch(lag(created_at) OVER w) <= $gap_s::DOUBLE
                    THEN 0 ELSE 1 END AS starts_session
        FROM e
        WINDOW w AS (PARTITION BY actor_login ORDER BY created_at, event_id)
    ), numbered AS (
        SELECT *,
               sum(starts_session) OVER (
                   PARTITION BY actor_login ORDER BY created_at, event_id
                   ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS session_no
        FROM marked
    )
    SELECT actor_login,
           min(created_at) AS session_start,
           max(created_at) AS session_end,
           (epoch(max(created_at)) - epoch(min(created_at)))::DOUBLE AS duration_s,
           count(*)::BIGINT AS events,
           count(DISTINCT repo_name)::BIGINT AS repos
    FROM numbered
    GROUP BY actor_login, session_no
    ORDER BY events DESC, duration_s DESC, session_start, actor_login
    LIMIT $limit::BIGINT
    """
    params = {"gap_s": gap_minutes * 60.0, "days": days, "limit": limit, "as_of": end}
    sources = partial(_tracked_source, _snapshot_dir(data_dir), TRACKED_EVENT_TYPES)
    return _run(sources, sql, params, USER_SESSIONS_COLUMNS)


def _version_facts(conn: duckdb.DuckDBPyConnection, path: Path) -> tuple[datetime, int]:
    """Publication time and row count of a whole-table version, from its Parquet metadata."""
    stamp, count = conn.execute(
        """
        SELECT (SELECT max(decode(value)) FROM parquet_kv_metadata($path)
                WHERE decode(key) = $key),
               (SELECT sum(num_rows) FROM parquet_file_metadata($path))
        """,
        {"path": str(path), "key": snapshot.PUBLISHED_AT_KEY},
    ).fetchall()[0]
    # Snapshots from before the timestamp moved into the file fall back to mtime.
    at = (
        datetime.fromisoformat(stamp)
        if stamp
        else datetime.fromtimestamp(path.stat().st_mtime, UTC)
    )
    return at, int(count or 0)


def last_updated(*, data_dir: DataDir = None) -> pd.DataFrame:
    """When each published table was last published (UTC) and how many rows that snapshot holds;
    tables not published yet are absent."""
    directory = _snapshot_dir(data_dir)
    resolved: list[dict[str, snapshot.Published]] = []

    def read() -> list[dict[str, Any]]:
        published = {t: p for t in _PUBLISHED_TABLES if (p := _resolved(directory, t)) is not None}
        resolved.append(published)
        rows = []
        # A manifest says when and how much it published; a whole-table version says it inside.
        files = [f for p in published.values() if p.published_at is None for f in p.files]
        with _reader(directory, files) as conn:
            for table, entry in published.items():
                if entry.published_at is not None and entry.rows is not None:
                    at, count = entry.published_at, entry.rows
                else:
                    (path,) = entry.files
                    at, count = _version_facts(conn, path)
                rows.append({"table_name": table, "published_at": at, "row_count": int(count)})
        return rows

    rows = _with_retry(read, lambda: [f for p in resolved[-1].values() for f in p.files])
    if not rows:
        return _empty(LAST_UPDATED_COLUMNS)
    return _conform(pd.DataFrame(rows), LAST_UPDATED_COLUMNS)
