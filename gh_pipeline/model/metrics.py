"""Metric tables maintained incrementally from the typed filtered tables (no Dagster import).

A poll adds at most 300 events, so a refresh folds in only the filtered rows above its watermark
(see gh_pipeline.warehouse.watermarks) and touches only what they belong to:

- `repo_pr_counts`: the new rows' per-repository counts are added to the stored ones (upsert).
- `pr_intervals`: `pr_opened_times` keeps, per repository, the sorted list of its "opened" times.
  New opened events are merged into the lists of their repositories only, and those
  repositories' rows are recomputed from their merged lists (mean, median, p90 need every gap).
  A late event lands at its place in the sorted list, so its intervals come out right.
- `event_counts`: `event_minute_counts` holds per-minute counts by type. A window
  `as_of - w < created_at <= as_of` is the whole minutes inside it (from the buckets) plus the two
  partial minutes at its edges, counted exactly from the filtered tables with a range on
  `created_at` that DuckDB answers from a few row groups. A late event lands in its own minute.

Completeness: `pr_intervals` and `repo_pr_counts` say what a row rests on. `pr_opened` and
`pr_events` count the events behind it; `completeness` is 'complete' for a watched repository
(GH_PIPELINE_REPOS) whose feed was polled without a gap, and the row then covers exactly the
period [complete_since, complete_until] in which every event of the repository is stored
(gh_pipeline.live.coverage); any other row is a 'sample' of the global feed. After every refresh
and rebuild the rows of covered repositories are recomputed from that period (`_apply_coverage`),
so both paths agree.

Interval arithmetic is done in integer microseconds, so sums are exact and the result does not
depend on the order rows were folded in: incremental maintenance equals the full recomputation
(`rebuild_metrics`) bit for bit, which gh_pipeline_tests/model/test_incremental_equality.py checks.
"""

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import duckdb
import pandas as pd

from gh_pipeline.model import filtered
from gh_pipeline.warehouse.catalogue import (
    EVENT_COUNTS,
    EVENT_MINUTE_COUNTS,
    FILTERED_TABLES,
    PR_INTERVALS,
    PR_OPENED_TIMES,
    PULL_REQUEST_EVENTS,
    REPO_PR_COUNTS,
    TABLE_OF_TYPE,
    TRACKED_EVENT_TYPES,
    WATCHED_REPOS,
    WATERMARKS,
)
from gh_pipeline.warehouse.connection import row_count, table_exists, transaction
from gh_pipeline.warehouse.watermarks import clear_watermarks, max_seq, set_watermark

# The look-back windows of event_counts, in minutes.
EVENT_COUNT_WINDOWS_MIN: tuple[int, ...] = (5, 15, 60, 360, 1440)

MICROS_PER_MINUTE = 60_000_000
REBUILD: Literal["rebuild"] = "rebuild"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The filtered table behind each tracked type, in TRACKED_EVENT_TYPES order.
_TRACKED_TABLES: dict[str, str] = TABLE_OF_TYPE

_PR_INTERVALS_DDL = """
CREATE TABLE pr_intervals (
    repo_name          VARCHAR PRIMARY KEY,
    pr_opened          BIGINT NOT NULL,
    first_opened_at    TIMESTAMPTZ NOT NULL,
    last_opened_at     TIMESTAMPTZ NOT NULL,
    avg_interval_s     DOUBLE,
    median_interval_s  DOUBLE,
    p90_interval_s     DOUBLE
)"""

# The columns the interval statistics fill. With watched repositories the table also has the
# completeness columns (_COMPLETENESS_COLUMNS), which keep their defaults here.
_PR_INTERVALS_STATS = (
    "repo_name, pr_opened, first_opened_at, last_opened_at, avg_interval_s, median_interval_s,"
    " p90_interval_s"
)
SAMPLE = "sample"
COMPLETE = "complete"

_PR_OPENED_TIMES_DDL = """
CREATE TABLE pr_opened_times (
    repo_name  VARCHAR PRIMARY KEY,
    opened_at  TIMESTAMPTZ[] NOT NULL  -- sorted ascending
)"""

_REPO_PR_COUNTS_DDL = """
CREATE TABLE repo_pr_counts (
    repo_name  VARCHAR PRIMARY KEY,
    pr_events  BIGINT NOT NULL,
    pr_opened  BIGINT NOT NULL
)"""

_EVENT_MINUTE_COUNTS_DDL = """
CREATE TABLE event_minute_counts (
    event_type   VARCHAR NOT NULL,
    minute       BIGINT NOT NULL,  -- epoch_us(created_at) // 60_000_000: time-zone free
    event_count  BIGINT NOT NULL,
    PRIMARY KEY (event_type, minute)
)"""

_EVENT_COUNTS_DDL = """
CREATE TABLE event_counts (
    as_of           TIMESTAMPTZ NOT NULL,
    window_minutes  INTEGER NOT NULL,
    event_type      VARCHAR NOT NULL,
    event_count     BIGINT NOT NULL
)"""

# --- full recomputation (the reference the incremental path must equal) ----------------------

# The definition, straight: gaps between consecutive opened events of a repository.
_PR_INTERVALS_FULL_SQL = f"""
INSERT INTO pr_intervals ({_PR_INTERVALS_STATS})
WITH opened AS (
    SELECT repo_name, created_at,
           epoch_us(created_at) - epoch_us(lag(created_at) OVER (
               PARTITION BY repo_name ORDER BY created_at, event_id)) AS gap_us
    FROM pull_request_events
    WHERE action = 'opened'
)
SELECT repo_name,
       count(*)::BIGINT,
       min(created_at),
       max(created_at),
       avg(gap_us) / 1e6,
       quantile_cont(gap_us, 0.5) / 1e6,
       quantile_cont(gap_us, 0.9) / 1e6
FROM opened
GROUP BY repo_name
"""

_PR_OPENED_TIMES_FULL_SQL = """
INSERT INTO pr_opened_times
SELECT repo_name, list(created_at ORDER BY created_at)
FROM pull_request_events
WHERE action = 'opened'
GROUP BY repo_name
"""

_REPO_PR_COUNTS_FULL_SQL = """
INSERT INTO repo_pr_counts (repo_name, pr_events, pr_opened)
SELECT repo_name,
       count(*)::BIGINT,
       count(*) FILTER (WHERE action = 'opened')::BIGINT
FROM pull_request_events
GROUP BY repo_name
"""

_TRACKED_UNION_SQL = " UNION ALL ".join(
    f"SELECT '{event_type}' AS event_type, created_at, seq FROM {table}"
    for event_type, table in _TRACKED_TABLES.items()
)

_EVENT_MINUTE_COUNTS_FULL_SQL = f"""
INSERT INTO event_minute_counts
SELECT event_type, epoch_us(created_at) // {MICROS_PER_MINUTE}, count(*)
FROM ({_TRACKED_UNION_SQL})
GROUP BY ALL
"""

_EVENT_COUNTS_FULL_SQL = f"""
INSERT INTO event_counts
WITH grid AS (
    SELECT w.window_minutes, t.event_type
    FROM unnest($windows) AS w(window_minutes) CROSS JOIN unnest($types) AS t(event_type)
)
SELECT $as_of::TIMESTAMPTZ,
       g.window_minutes::INTEGER,
       g.event_type,
       count(e.created_at)::BIGINT
FROM grid g
LEFT JOIN ({_TRACKED_UNION_SQL}) e
  ON e.event_type = g.event_type
 AND e.created_at > $as_of::TIMESTAMPTZ - to_minutes(g.window_minutes::BIGINT)
 AND e.created_at <= $as_of::TIMESTAMPTZ
GROUP BY ALL
"""

# --- incremental maintenance ---------------------------------------------------------------

_NEW_OPENED_SQL = """
CREATE OR REPLACE TEMP TABLE _new_opened AS
SELECT repo_name, list(created_at ORDER BY created_at) AS opened_at
FROM pull_request_events
WHERE seq > $after AND seq <= $upto AND action = 'opened'
GROUP BY repo_name
"""

# The gaps of a sorted list of timestamps, in microseconds (1-based list indexing).
_GAPS = "list_transform(range(1, len(opened_at)), lambda i: epoch_us(opened_at[i + 1]) - epoch_us(opened_at[i]))"

# RETURNING hands back the merged lists' statistics for exactly the touched repositories, so the
# refresh never scans the per-repository tables to find them again.
_MERGE_OPENED_SQL = f"""
INSERT INTO pr_opened_times SELECT repo_name, opened_at FROM _new_opened
ON CONFLICT (repo_name) DO UPDATE
    SET opened_at = list_sort(list_concat(pr_opened_times.opened_at, excluded.opened_at))
RETURNING repo_name,
          len(opened_at)::BIGINT,
          opened_at[1],
          opened_at[-1],
          list_avg({_GAPS}) / 1e6,
          list_aggregate({_GAPS}, 'quantile_cont', 0.5) / 1e6,
          list_aggregate({_GAPS}, 'quantile_cont', 0.9) / 1e6
"""

_UPSERT_PR_INTERVALS_SQL = f"""
INSERT OR REPLACE INTO pr_intervals ({_PR_INTERVALS_STATS})
SELECT unnest($repo_name), unnest($pr_opened), unnest($first_opened_at::TIMESTAMPTZ[]),
       unnest($last_opened_at::TIMESTAMPTZ[]), unnest($avg::DOUBLE[]),
       unnest($median::DOUBLE[]), unnest($p90::DOUBLE[])
"""

_ADD_REPO_PR_COUNTS_SQL = """
INSERT INTO repo_pr_counts (repo_name, pr_events, pr_opened)
SELECT repo_name, count(*), count(*) FILTER (WHERE action = 'opened')
FROM pull_request_events
WHERE seq > $after AND seq <= $upto
GROUP BY repo_name
ON CONFLICT (repo_name) DO UPDATE
    SET pr_events = repo_pr_counts.pr_events + excluded.pr_events,
        pr_opened = repo_pr_counts.pr_opened + excluded.pr_opened
"""


def _add_minute_counts_sql(table: str) -> str:
    return f"""
    INSERT INTO event_minute_counts
    SELECT $event_type, epoch_us(created_at) // {MICROS_PER_MINUTE}, count(*)
    FROM {table}
    WHERE seq > $after AND seq <= $upto
    GROUP BY ALL
    ON CONFLICT (event_type, minute) DO UPDATE
        SET event_count = event_minute_counts.event_count + excluded.event_count
    """


def _pending(
    conn: duckdb.DuckDBPyConnection, target: str, source: str
) -> tuple[int, int] | Literal["rebuild"] | None:
    """The seq range (after, upto] of `source` not yet folded into `target`; None when there is
    nothing new; "rebuild" when `target` must be rebuilt (never built, or its source was rebuilt
    from scratch and no longer reaches the watermark)."""
    # One round trip: at a few hundred events per tick, statement count is most of the cost.
    watermark, exists, newest = conn.execute(
        f"""
        SELECT (SELECT last_seq FROM {WATERMARKS}
                WHERE target = $target AND source = $source),
               (SELECT count(*) FROM duckdb_tables()
                WHERE table_name = $target AND NOT temporary),
               (SELECT max(seq) FROM {source})
        """,
        {"target": target, "source": source},
    ).fetchall()[0]
    if watermark is None or not exists:
        return REBUILD
    after = int(watermark)
    if newest is None:
        return REBUILD if after > 0 else None
    if newest < after:
        return REBUILD
    if newest == after:
        return None
    return after, int(newest)


# --- completeness --------------------------------------------------------------------------


def _gaps(column: str) -> str:
    return (
        f"list_transform(range(1, len({column})), "
        f"lambda i: epoch_us({column}[i + 1]) - epoch_us({column}[i]))"
    )


def _list_stats(column: str) -> str:
    gaps = _gaps(column)
    return (
        f"len({column})::BIGINT, {column}[1], {column}[-1], list_avg({gaps}) / 1e6,"
        f" list_aggregate({gaps}, 'quantile_cont', 0.5) / 1e6,"
        f" list_aggregate({gaps}, 'quantile_cont', 0.9) / 1e6"
    )


# Added to pr_intervals and repo_pr_counts once a watched repository has a complete period; a
# warehouse that watches none keeps the tables exactly as they were.
_COMPLETENESS_COLUMNS = (
    ("completeness", f"VARCHAR DEFAULT '{SAMPLE}'"),  # 'complete' | 'sample'
    ("complete_since", "TIMESTAMPTZ"),  # the complete period a 'complete' row covers
    ("complete_until", "TIMESTAMPTZ"),
)
_COMPLETENESS = "completeness, complete_since, complete_until"

_COVERED_SQL = f"""
CREATE OR REPLACE TEMP TABLE _covered AS
SELECT repo_name, complete_since, complete_until FROM {WATCHED_REPOS}
WHERE complete_since IS NOT NULL AND complete_until IS NOT NULL
"""

# A covered repository's row is its complete period's, when a PR was opened in it; otherwise the
# sample of every opened PR stored, as for any other repository.
_COVERED_PR_INTERVALS_SQL = f"""
INSERT INTO pr_intervals ({_PR_INTERVALS_STATS}, {_COMPLETENESS})
WITH lists AS (
    SELECT p.repo_name, c.complete_since, c.complete_until, p.opened_at AS all_at,
           list_filter(p.opened_at,
                       lambda t: t >= c.complete_since AND t <= c.complete_until) AS period_at
    FROM {PR_OPENED_TIMES} p JOIN _covered c USING (repo_name)
)
SELECT repo_name, {_list_stats("period_at")}, '{COMPLETE}', complete_since, complete_until
FROM lists WHERE len(period_at) > 0
UNION ALL
SELECT repo_name, {_list_stats("all_at")}, '{SAMPLE}', NULL, NULL
FROM lists WHERE len(period_at) = 0
"""

_COVERED_REPO_PR_COUNTS_SQL = f"""
INSERT INTO repo_pr_counts (repo_name, pr_events, pr_opened, {_COMPLETENESS})
SELECT c.repo_name, count(e.repo_name)::BIGINT,
       count(e.repo_name) FILTER (WHERE e.action = 'opened')::BIGINT,
       '{COMPLETE}', c.complete_since, c.complete_until
FROM _covered c
LEFT JOIN {PULL_REQUEST_EVENTS} e
  ON e.repo_name = c.repo_name
 AND e.created_at >= c.complete_since AND e.created_at <= c.complete_until
GROUP BY ALL
"""


def _apply_coverage(conn: duckdb.DuckDBPyConnection, table: str) -> None:
    """Recompute the rows of repositories with a complete period (see the module docstring),
    inside the caller's transaction. Nothing to do, one cheap query, when none is watched."""
    if not table_exists(conn, WATCHED_REPOS) or not table_exists(conn, table):
        return
    covered = conn.execute(
        f"SELECT count(*) FROM {WATCHED_REPOS} WHERE complete_since IS NOT NULL"
    ).fetchone()
    if not covered or not covered[0]:
        return
    existing = {
        row[0]
        for row in conn.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = $t AND schema_name = 'main'",
            {"t": table},
        ).fetchall()
    }
    for column, kind in _COMPLETENESS_COLUMNS:
        if column not in existing:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    conn.execute(_COVERED_SQL)
    conn.execute(f"DELETE FROM {table} WHERE repo_name IN (SELECT repo_name FROM _covered)")
    conn.execute(
        _COVERED_PR_INTERVALS_SQL if table == PR_INTERVALS else _COVERED_REPO_PR_COUNTS_SQL
    )
    conn.execute("DROP TABLE _covered")


# --- pr_intervals --------------------------------------------------------------------------


def _rebuild_from_pull_requests(
    conn: duckdb.DuckDBPyConnection, target: str, *tables: tuple[str, str, str]
) -> None:
    """Recreate each (table, DDL, fill SQL) from all of pull_request_events and record that
    `target` has folded in everything up to its newest row."""
    upto = max_seq(conn, PULL_REQUEST_EVENTS) or 0
    for table, ddl, sql in tables:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(ddl)
        conn.execute(sql)
    clear_watermarks(conn, target)
    set_watermark(conn, target, PULL_REQUEST_EVENTS, upto)


def _rebuild_pr_intervals(conn: duckdb.DuckDBPyConnection) -> None:
    _rebuild_from_pull_requests(
        conn,
        PR_INTERVALS,
        (PR_INTERVALS, _PR_INTERVALS_DDL, _PR_INTERVALS_FULL_SQL),
        (PR_OPENED_TIMES, _PR_OPENED_TIMES_DDL, _PR_OPENED_TIMES_FULL_SQL),
    )


def _fold_pr_intervals(conn: duckdb.DuckDBPyConnection, after: int, upto: int) -> None:
    conn.execute(_NEW_OPENED_SQL, {"after": after, "upto": upto})
    rows = conn.execute(_MERGE_OPENED_SQL).fetchall()
    conn.execute("DROP TABLE _new_opened")
    if rows:
        names = ("repo_name", "pr_opened", "first_opened_at", "last_opened_at", "avg", "median")
        columns = list(zip(*rows, strict=True))
        params = {name: list(col) for name, col in zip((*names, "p90"), columns, strict=True)}
        conn.execute(_UPSERT_PR_INTERVALS_SQL, params)
    set_watermark(conn, PR_INTERVALS, PULL_REQUEST_EVENTS, upto)


def _refresh_from_pull_requests(
    conn: duckdb.DuckDBPyConnection,
    target: str,
    rebuild: Callable[[duckdb.DuckDBPyConnection], None],
    fold: Callable[[duckdb.DuckDBPyConnection, int, int], None],
) -> int:
    """In one transaction, fold the pull_request_events rows above `target`'s watermark into it
    (or rebuild it when it has no incremental state); returns `target`'s row count."""
    with transaction(conn):
        pending = _pending(conn, target, PULL_REQUEST_EVENTS)
        if pending == REBUILD:
            rebuild(conn)
        elif isinstance(pending, tuple):
            fold(conn, *pending)
        # Every time, new events or not: a watched repository's complete period moves with
        # each of its polls.
        _apply_coverage(conn, target)
    return row_count(conn, target)


def refresh_pr_intervals(conn: duckdb.DuckDBPyConnection) -> int:
    """Fold new opened pull requests into `pr_intervals`; returns the table's row count."""
    return _refresh_from_pull_requests(
        conn, PR_INTERVALS, _rebuild_pr_intervals, _fold_pr_intervals
    )


# --- repo_pr_counts ------------------------------------------------------------------------


def _rebuild_repo_pr_counts(conn: duckdb.DuckDBPyConnection) -> None:
    _rebuild_from_pull_requests(
        conn, REPO_PR_COUNTS, (REPO_PR_COUNTS, _REPO_PR_COUNTS_DDL, _REPO_PR_COUNTS_FULL_SQL)
    )


def _fold_repo_pr_counts(conn: duckdb.DuckDBPyConnection, after: int, upto: int) -> None:
    conn.execute(_ADD_REPO_PR_COUNTS_SQL, {"after": after, "upto": upto})
    set_watermark(conn, REPO_PR_COUNTS, PULL_REQUEST_EVENTS, upto)


def refresh_repo_pr_counts(conn: duckdb.DuckDBPyConnection) -> int:
    """Add the new pull-request events to their repositories' counts; returns the row count."""
    return _refresh_from_pull_requests(
        conn, REPO_PR_COUNTS, _rebuild_repo_pr_counts, _fold_repo_pr_counts
    )


# --- event_counts --------------------------------------------------------------------------


def _rebuild_minute_counts(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {EVENT_MINUTE_COUNTS}")
    conn.execute(_EVENT_MINUTE_COUNTS_DDL)
    conn.execute(_EVENT_MINUTE_COUNTS_FULL_SQL)
    clear_watermarks(conn, EVENT_MINUTE_COUNTS)
    for table in _TRACKED_TABLES.values():
        set_watermark(conn, EVENT_MINUTE_COUNTS, table, max_seq(conn, table) or 0)


def _fold_minute_counts(conn: duckdb.DuckDBPyConnection) -> None:
    pendings = {
        table: _pending(conn, EVENT_MINUTE_COUNTS, table) for table in _TRACKED_TABLES.values()
    }
    if any(p == REBUILD for p in pendings.values()):
        _rebuild_minute_counts(conn)
        return
    for event_type, table in _TRACKED_TABLES.items():
        pending = pendings[table]
        if not isinstance(pending, tuple):
            continue
        after, upto = pending
        conn.execute(
            _add_minute_counts_sql(table), {"event_type": event_type, "after": after, "upto": upto}
        )
        set_watermark(conn, EVENT_MINUTE_COUNTS, table, upto)


def _micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"as_of must be timezone-aware, got naive {moment!r}")
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _at(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _exact_counts(
    conn: duckdb.DuckDBPyConnection, ranges: Sequence[tuple[int, int]]
) -> list[dict[str, int]]:
    """Tracked events by type with created_at in each half-open microsecond range [start, end),
    straight from the filtered tables. Each range is at most a minute, and each sub-query has
    constant bounds so DuckDB prunes row groups by their created_at statistics."""
    parts: list[str] = []
    params: dict[str, Any] = {}
    for i, (start, end) in enumerate(ranges):
        params[f"start_{i}"] = _at(start)
        params[f"end_{i}"] = _at(end)
        for event_type, table in _TRACKED_TABLES.items():
            parts.append(
                f"SELECT {i} AS range_no, '{event_type}' AS event_type, count(*) AS n FROM {table}"
                f" WHERE created_at >= $start_{i}::TIMESTAMPTZ AND created_at < $end_{i}::TIMESTAMPTZ"
            )
    result: list[dict[str, int]] = [{} for _ in ranges]
    for range_no, event_type, n in conn.execute(" UNION ALL ".join(parts), params).fetchall():
        result[range_no][event_type] = int(n)
    return result


def compute_event_counts(
    conn: duckdb.DuckDBPyConnection,
    *,
    as_of: datetime,
    windows: Sequence[int] = EVENT_COUNT_WINDOWS_MIN,
) -> list[tuple[datetime, int, str, int]]:
    """(as_of, window_minutes, event_type, event_count) for `as_of - w < created_at <= as_of`,
    from the minute buckets plus exact counts of the partial edge minutes. The buckets must be
    current (`refresh_event_counts` folds new rows in first)."""
    if any(not isinstance(w, int) or w < 1 for w in windows):
        raise ValueError(f"windows must be whole minutes >= 1, got {list(windows)!r}")
    end = _micros(as_of)  # inclusive
    last_minute = end // MICROS_PER_MINUTE  # the minute holding as_of: only partly in any window
    ranges: list[tuple[int, int]] = [(last_minute * MICROS_PER_MINUTE, end + 1)]
    first_minutes: list[int] = []
    for w in windows:
        start = end - w * MICROS_PER_MINUTE  # exclusive
        first_full = start // MICROS_PER_MINUTE + 1  # first minute that begins after `start`
        first_minutes.append(first_full)
        # (start, first_full) is the partial minute at the window's old edge; w >= 1 keeps it
        # before last_minute, so whole minutes [first_full, last_minute) fill the middle.
        ranges.append((start + 1, first_full * MICROS_PER_MINUTE))
    exact = _exact_counts(conn, ranges)
    buckets = conn.execute(
        f"""
        SELECT w.window_minutes, c.event_type, sum(c.event_count)::BIGINT
        FROM (SELECT unnest($windows) AS window_minutes, unnest($first_minutes) AS first_full) w
        JOIN (SELECT * FROM {EVENT_MINUTE_COUNTS}
              WHERE minute >= $oldest AND minute < $last_minute) c
          ON c.minute >= w.first_full
        GROUP BY ALL
        """,
        {
            "windows": list(windows),
            "first_minutes": first_minutes,
            "oldest": min(first_minutes),
            "last_minute": last_minute,
        },
    ).fetchall()
    whole = {(int(w), t): int(n) for w, t, n in buckets}
    rows = []
    for i, w in enumerate(windows):
        for event_type in TRACKED_EVENT_TYPES:
            n = (
                whole.get((w, event_type), 0)
                + exact[0].get(event_type, 0)
                + exact[i + 1].get(event_type, 0)
            )
            rows.append((as_of, w, event_type, n))
    return rows


def refresh_event_counts(conn: duckdb.DuckDBPyConnection, *, as_of: datetime) -> int:
    """Fold new tracked events into the minute buckets and rewrite `event_counts` for `as_of`;
    returns the table's row count."""
    with transaction(conn):
        _fold_minute_counts(conn)
        rows = compute_event_counts(conn, as_of=as_of)
        if not table_exists(conn, EVENT_COUNTS):
            conn.execute(_EVENT_COUNTS_DDL)
        # 15 rows, rewritten whole: the windows move with as_of.
        conn.execute(f"DELETE FROM {EVENT_COUNTS}")
        conn.execute(
            f"INSERT INTO {EVENT_COUNTS} SELECT unnest($as_of::TIMESTAMPTZ[]), unnest($w),"
            " unnest($t), unnest($n)",
            {
                "as_of": [r[0] for r in rows],
                "w": [r[1] for r in rows],
                "t": [r[2] for r in rows],
                "n": [r[3] for r in rows],
            },
        )
    return row_count(conn, EVENT_COUNTS)


def _rebuild_event_counts(conn: duckdb.DuckDBPyConnection, *, as_of: datetime) -> None:
    _rebuild_minute_counts(conn)
    conn.execute(f"DROP TABLE IF EXISTS {EVENT_COUNTS}")
    conn.execute(_EVENT_COUNTS_DDL)
    conn.execute(
        _EVENT_COUNTS_FULL_SQL,
        {
            "as_of": as_of,
            "windows": list(EVENT_COUNT_WINDOWS_MIN),
            "types": list(TRACKED_EVENT_TYPES),
        },
    )


def refresh_all(conn: duckdb.DuckDBPyConnection, *, as_of: datetime) -> None:
    """One tick's incremental path in one call, in the order the assets run: the new raw events
    into the filtered tables, then every metric table (the twin of rebuild_all)."""
    for name in FILTERED_TABLES:
        filtered.refresh_filtered(conn, name)
    refresh_pr_intervals(conn)
    refresh_repo_pr_counts(conn)
    refresh_event_counts(conn, as_of=as_of)


# --- full rebuild --------------------------------------------------------------------------


def rebuild_metrics(conn: duckdb.DuckDBPyConnection, *, as_of: datetime) -> None:
    """Full-rebuild path: recompute every metric table and its state from the filtered tables,
    straight from the definitions (no buckets, no merged lists for the public values)."""
    with transaction(conn):
        _rebuild_pr_intervals(conn)
        _rebuild_repo_pr_counts(conn)
        _apply_coverage(conn, PR_INTERVALS)
        _apply_coverage(conn, REPO_PR_COUNTS)
        _rebuild_event_counts(conn, as_of=as_of)


def rebuild_all(conn: duckdb.DuckDBPyConnection, *, as_of: datetime | None = None) -> None:
    """Rebuild the filtered tables from raw_events, then every metric table from them."""
    filtered.rebuild_filtered(conn)
    rebuild_metrics(conn, as_of=as_of or datetime.now(UTC))


# --- reading the working state -------------------------------------------------------------

# A key lookup in pr_opened_times (one row per repository, its "opened" times sorted) instead of a
# scan of pull_request_events.
_REPO_INTERVALS_SQL = f"""
WITH times AS (
    SELECT unnest(opened_at) AS opened_at FROM {PR_OPENED_TIMES} WHERE repo_name = $repo
), gaps AS (
    SELECT opened_at, epoch(opened_at - lag(opened_at) OVER (ORDER BY opened_at)) AS gap_s
    FROM times
)
SELECT opened_at, gap_s
FROM gaps
WHERE gap_s IS NOT NULL
ORDER BY opened_at DESC
LIMIT $limit
"""


def repo_intervals(conn: duckdb.DuckDBPyConnection, repo: str, *, limit: int) -> pd.DataFrame:
    """Each interval between consecutive opened PRs of one repository (the definition behind
    pr_intervals), the most recent `limit`: columns opened_at, gap_s (seconds)."""
    return conn.execute(_REPO_INTERVALS_SQL, {"repo": repo, "limit": limit}).df()
