"""Warehouse schema and the exactly-once load into raw_events (no Dagster import).

Every write happens inside one transaction so a crash leaves either all rows of a load or none.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from gh_pipeline.models import LoadStats, PageResult, PollResult

SCHEMA_SQL = """
CREATE SEQUENCE IF NOT EXISTS raw_events_seq;
CREATE TABLE IF NOT EXISTS raw_events (
    event_id     VARCHAR PRIMARY KEY,
    event_type   VARCHAR NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    actor_login  VARCHAR,
    repo_id      BIGINT,
    repo_name    VARCHAR NOT NULL,
    -- zstd: JSON text compresses several times better than with DuckDB's default string
    -- codecs and costs less CPU to write (see README, "History from GH Archive").
    payload      JSON USING COMPRESSION zstd,
    event        JSON USING COMPRESSION zstd,  -- NULL once older than GH_PIPELINE_RAW_RETENTION_DAYS (retention.py)
    ingested_at  TIMESTAMPTZ NOT NULL,
    poll_id      VARCHAR NOT NULL,
    source       VARCHAR NOT NULL,
    -- Load order: a row loaded later has a higher seq. All rows of one bulk GH Archive load share
    -- one value (insert_file_direct), so seq orders loads but does not identify a row.
    seq          BIGINT NOT NULL DEFAULT nextval('raw_events_seq')
);
CREATE TABLE IF NOT EXISTS rejected_events (
    rejected_at  TIMESTAMPTZ NOT NULL,
    poll_id      VARCHAR NOT NULL,
    source       VARCHAR NOT NULL,
    line_number  BIGINT,
    reason       VARCHAR NOT NULL,
    raw_text     VARCHAR
);
CREATE TABLE IF NOT EXISTS poll_log (
    poll_id               VARCHAR NOT NULL,
    page                  INTEGER NOT NULL,
    requested_at          TIMESTAMPTZ NOT NULL,
    status                INTEGER NOT NULL,
    events                INTEGER NOT NULL,
    new_events            INTEGER NOT NULL,
    duplicates            INTEGER NOT NULL,
    etag_matched          BOOLEAN NOT NULL,
    rate_limit_remaining  INTEGER,
    rate_limit_reset      TIMESTAMPTZ,
    error                 VARCHAR
);
-- One row per HTTP request: retries of a page get attempt 2, 3, ...
ALTER TABLE poll_log ADD COLUMN IF NOT EXISTS attempt INTEGER DEFAULT 1;
CREATE TABLE IF NOT EXISTS poll_gaps (
    poll_id            VARCHAR NOT NULL,
    detected_at        TIMESTAMPTZ NOT NULL,
    previous_poll_id   VARCHAR,
    gap_start          TIMESTAMPTZ,
    gap_end            TIMESTAMPTZ,
    pages              INTEGER NOT NULL,
    events_received    INTEGER NOT NULL
);
"""

# Lines are read as opaque text so a corrupt line becomes a rejected row instead of failing the load.
# Speed matters here (a GH Archive hour is 100k+ events): each line is parsed once to validate it and
# once more to pull every column out in one multi-path json_extract; the full-document json_type()
# runs only for lines that already failed a check. Empty lines are not events and are skipped;
# strict_mode=false turns a stray \x01 byte into a truncated (hence rejected) line, not a failed load.
STAGE_TABLE = "_stage"
_SKIP_TABLE = "_stage_skip"
MAX_LINE_BYTES = 16 * 1024 * 1024  # as DuckDB's own read_json default maximum_object_size

_STAGE_SELECT = r"""
WITH lines AS (
    SELECT row_number() OVER () AS line_number, line
    FROM read_csv($path, columns = {'line': 'VARCHAR'}, delim = E'\x01', quote = '',
                  escape = '', header = false, auto_detect = false, strict_mode = false,
                  max_line_size = $max_line_bytes)
), parsed AS (
    SELECT line_number, line, try_cast(line AS JSON) AS j FROM lines WHERE line IS NOT NULL
), picked AS (
    SELECT line_number, line, j,
        json_extract(j, ['$.id', '$.type', '$.created_at', '$.actor.login', '$.repo.id',
                         '$.repo.name', '$.payload']) AS f
    FROM parsed
), fields AS (
    SELECT line_number, line, j,
        f[1] AS id_j, f[2] AS type_j, f[6] AS repo_name_j, f[7] AS payload,
        f[1] ->> '$' AS event_id,
        f[2] ->> '$' AS event_type,
        try_cast(f[3] ->> '$' AS TIMESTAMPTZ) AS created_at,
        f[4] ->> '$' AS actor_login,
        try_cast(f[5] ->> '$' AS BIGINT) AS repo_id,
        f[6] ->> '$' AS repo_name
    FROM picked
), checked AS (
    SELECT *,
        CASE
            WHEN j IS NULL THEN 'line is not valid JSON'
            WHEN id_j IS NULL OR json_type(id_j) NOT IN ('VARCHAR', 'BIGINT', 'UBIGINT') THEN
                CASE WHEN json_type(j) <> 'OBJECT'
                     THEN 'event is a JSON ' || lower(json_type(j)) || ', expected an object'
                     ELSE 'missing or malformed id' END
            WHEN event_type IS NULL OR json_type(type_j) <> 'VARCHAR'
                THEN 'missing or malformed type'
            WHEN created_at IS NULL THEN 'missing or unparseable created_at'
            WHEN repo_name IS NULL OR json_type(repo_name_j) <> 'VARCHAR'
                THEN 'missing or malformed repo.name'
        END AS reason
    FROM fields
)
SELECT line_number, event_id, event_type, created_at, actor_login, repo_id, repo_name, payload, j,
       reason, CASE WHEN reason IS NOT NULL THEN line END AS raw_text
FROM checked
"""
_STAGE_SQL = f"CREATE OR REPLACE TEMP TABLE {STAGE_TABLE} AS {_STAGE_SELECT}"

# Lines to leave out: repeats of an id within the file (the first line wins) and ids already
# stored. Every variant below starts with the repeats and differs in how stored ids are found.
_SKIP_REPEATS_SQL = """
CREATE OR REPLACE TEMP TABLE _stage_skip AS
SELECT line_number FROM _stage
WHERE reason IS NULL
QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY line_number) > 1
UNION ALL
"""

# Stored ids found with a semi join whose hash table holds the file's ids, not the warehouse's,
# so memory stays flat as raw_events grows.
_SKIP_SQL = (
    _SKIP_REPEATS_SQL
    + """
SELECT s.line_number FROM _stage s SEMI JOIN raw_events r ON r.event_id = s.event_id
WHERE s.reason IS NULL
"""
)

# The same for a small file whose stored ids were already looked up in the index ($known).
_SKIP_KNOWN_SQL = (
    _SKIP_REPEATS_SQL
    + """
SELECT line_number FROM _stage
WHERE reason IS NULL AND event_id IN (SELECT unnest($known::VARCHAR[]))
"""
)

# The same when the caller knows when the file's events happened: only stored events created in
# [$window_start, $window_end) are looked at, so the cost follows that window, not the history.
# An id stored with a created_at outside the window is not found here; inserting it again then
# violates the primary key, and the caller retries without a window (see gharchive.py).
_SKIP_WINDOW_SQL = (
    _SKIP_REPEATS_SQL
    + """
SELECT s.line_number FROM _stage s
SEMI JOIN (SELECT event_id FROM raw_events
           WHERE created_at >= $window_start AND created_at < $window_end) r
    ON r.event_id = s.event_id
WHERE s.reason IS NULL
"""
)

# One pass from file to table, no staging: for a file expected to be all new, valid, distinct
# events (a fresh GH Archive hour). It stores no rejected lines, and a repeated id, or one stored
# outside the window, violates the primary key: the caller checks the count and falls back to
# the staged load otherwise (gharchive.load_hour_file). Every row gets the same $seq: a
# per-row nextval() makes DuckDB run the whole insert on one thread (~35 % slower on 2 cores).
_DIRECT_INSERT_SQL = f"""
INSERT INTO raw_events (event_id, event_type, created_at, actor_login, repo_id, repo_name,
                        payload, event, ingested_at, poll_id, source, seq)
SELECT s.event_id, s.event_type, s.created_at, s.actor_login, s.repo_id, s.repo_name,
       s.payload, s.j, $ingested_at, $poll_id, $source, $seq
FROM ({_STAGE_SELECT}) s
WHERE s.reason IS NULL
  AND NOT EXISTS (SELECT 1 FROM raw_events r
                  WHERE r.event_id = s.event_id
                    AND r.created_at >= $window_start AND r.created_at < $window_end)
"""

# A plain INSERT: INSERT OR IGNORE would group every staged row (JSON included) by id first.
_INSERT_RAW_SQL = """
INSERT INTO raw_events (event_id, event_type, created_at, actor_login, repo_id, repo_name,
                        payload, event, ingested_at, poll_id, source)
SELECT s.event_id, s.event_type, s.created_at, s.actor_login, s.repo_id, s.repo_name,
       s.payload, s.j, $ingested_at, $poll_id, $source
FROM _stage s
WHERE s.reason IS NULL
  AND NOT EXISTS (SELECT 1 FROM _stage_skip k WHERE k.line_number = s.line_number)
"""

_INSERT_REJECTED_SQL = """
INSERT INTO rejected_events
SELECT $now, $poll_id, $source, s.line_number, s.reason, s.raw_text
FROM _stage s
WHERE s.reason IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM rejected_events r
                  WHERE r.poll_id = $poll_id AND r.line_number = s.line_number)
"""


def scalar(conn: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None) -> Any:
    """First value of a query, fully consuming the result (DuckDB 2 refuses new work on a
    connection that still holds an unfinished result)."""
    rows = conn.execute(sql, params or {}).fetchall()
    return rows[0][0] if rows else None


def connect(path: Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(str(path), read_only=read_only)


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(SCHEMA_SQL)


# A poll's few hundred ids are looked up in the primary-key index: DuckDB does that for an IN
# list of bound values, whereas IN (SELECT unnest(...)) or a join scans every stored id, which
# costs ~1.7 s per call at 10M events (issue 7). Above this many ids a scan is cheaper anyway.
INDEX_LOOKUP_MAX_IDS = 1000
_INDEX_LOOKUP_CHUNK = 250


def known_event_ids(conn: duckdb.DuckDBPyConnection, ids: Iterable[str]) -> set[str]:
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return set()
    if len(wanted) > INDEX_LOOKUP_MAX_IDS:
        rows = conn.execute(
            "SELECT event_id FROM raw_events WHERE event_id IN (SELECT unnest($ids))",
            {"ids": wanted},
        ).fetchall()
        return {row[0] for row in rows}
    found: set[str] = set()
    for at in range(0, len(wanted), _INDEX_LOOKUP_CHUNK):
        chunk = wanted[at : at + _INDEX_LOOKUP_CHUNK]
        # Only generated parameter names enter the SQL text; the ids are bound values.
        names = ", ".join(f"$id{i}" for i in range(len(chunk)))
        rows = conn.execute(
            f"SELECT event_id FROM raw_events WHERE event_id IN ({names})",
            {f"id{i}": value for i, value in enumerate(chunk)},
        ).fetchall()
        found.update(row[0] for row in rows)
    return found


def stage_ndjson(conn: duckdb.DuckDBPyConnection, path: Path) -> tuple[int, int]:
    """Read and check one NDJSON(.gz) file into the temp table `_stage`; returns (lines, rejected).
    Call inside the caller's transaction, then insert_staged() and drop_stage()."""
    conn.execute(_STAGE_SQL, {"path": str(path), "max_line_bytes": MAX_LINE_BYTES})
    received, rejected = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE reason IS NOT NULL) FROM _stage"
    ).fetchall()[0]
    return int(received), int(rejected)


def insert_staged(
    conn: duckdb.DuckDBPyConnection,
    *,
    poll_id: str,
    source: str,
    now: datetime,
    window: tuple[datetime, datetime] | None = None,
) -> int:
    """Insert the staged events not stored yet and record the rejected lines; returns new rows.
    With a `window` only stored events created in it are checked (_SKIP_WINDOW_SQL)."""
    if window is not None:
        conn.execute(_SKIP_WINDOW_SQL, {"window_start": window[0], "window_end": window[1]})
    elif int(scalar(conn, "SELECT count(*) FROM _stage")) <= INDEX_LOOKUP_MAX_IDS:
        # A poll-sized file: find its stored ids through the index instead of scanning them all.
        sql = "SELECT DISTINCT event_id FROM _stage WHERE reason IS NULL"
        staged = [r[0] for r in conn.execute(sql).fetchall()]
        conn.execute(_SKIP_KNOWN_SQL, {"known": sorted(known_event_ids(conn, staged))})
    else:
        conn.execute(_SKIP_SQL)
    new = int(
        scalar(conn, _INSERT_RAW_SQL, {"ingested_at": now, "poll_id": poll_id, "source": source})
    )
    conn.execute(_INSERT_REJECTED_SQL, {"now": now, "poll_id": poll_id, "source": source})
    return new


def drop_stage(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {_SKIP_TABLE}")
    conn.execute(f"DROP TABLE IF EXISTS {STAGE_TABLE}")


def insert_file_direct(
    conn: duckdb.DuckDBPyConnection,
    path: Path,
    *,
    poll_id: str,
    source: str,
    now: datetime,
    window: tuple[datetime, datetime],
) -> int:
    """Insert a file's valid events not stored in `window` in one pass; returns rows inserted.
    Records no rejected lines; raises duckdb.ConstraintException on an id repeated in the file or
    stored outside the window. Only for callers that verify the count (see _DIRECT_INSERT_SQL).
    The rows share one `seq`, drawn inside the caller's transaction."""
    params = {
        "seq": int(scalar(conn, "SELECT nextval('raw_events_seq')")),
        "path": str(path),
        "max_line_bytes": MAX_LINE_BYTES,
        "ingested_at": now,
        "poll_id": poll_id,
        "source": source,
        "window_start": window[0],
        "window_end": window[1],
    }
    return int(scalar(conn, _DIRECT_INSERT_SQL, params))


def _load_staged(
    conn: duckdb.DuckDBPyConnection, path: Path, *, poll_id: str, source: str, now: datetime
) -> LoadStats:
    received, rejected = stage_ndjson(conn, path)
    new = insert_staged(conn, poll_id=poll_id, source=source, now=now)
    drop_stage(conn)
    return LoadStats(
        received=received, new=new, duplicates=received - rejected - new, rejected=rejected
    )


def load_ndjson(
    conn: duckdb.DuckDBPyConnection, path: Path, *, poll_id: str, source: str
) -> LoadStats:
    """Load one NDJSON(.gz) file into raw_events atomically; rerunning it adds nothing."""
    now = datetime.now(UTC)
    conn.execute("BEGIN TRANSACTION")
    try:
        stats = _load_staged(conn, path, poll_id=poll_id, source=source, now=now)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return stats


@dataclass(frozen=True)
class PossibleGap:
    """A poll whose pages never reached events stored before it: events may have been missed
    between `gap_start` (newest event stored before) and `gap_end` (oldest event it received)."""

    previous_poll_id: str | None
    gap_start: datetime | None
    gap_end: datetime | None
    pages: int
    events_received: int


_INSERT_POLL_LOG_SQL = """
INSERT INTO poll_log (poll_id, page, attempt, requested_at, status, events, new_events, duplicates,
                      etag_matched, rate_limit_remaining, rate_limit_reset, error)
VALUES ($poll_id, $page, $attempt, $requested_at, $status, $events, $new, $dups, $etag_matched,
        $remaining, $reset, $error)
"""


def _insert_request(
    conn: duckdb.DuckDBPyConnection,
    *,
    poll_id: str,
    page: PageResult,
    attempt: int,
    new: int,
    duplicates: int,
) -> None:
    conn.execute(
        _INSERT_POLL_LOG_SQL,
        {
            "poll_id": poll_id,
            "page": page.page,
            "attempt": attempt,
            "requested_at": page.requested_at,
            "status": page.status,
            "events": len(page.events),
            "new": new,
            "dups": duplicates,
            "etag_matched": page.not_modified,
            "remaining": page.rate_limit.remaining,
            "reset": page.rate_limit.reset_at,
            "error": page.error,
        },
    )


def ingest_poll(
    conn: duckdb.DuckDBPyConnection,
    poll: PollResult,
    *,
    poll_id: str,
    landing_file: Path | None,
    page_known: list[set[str]],
    requests: Sequence[tuple[PageResult, int]] | None = None,
    gap: PossibleGap | None = None,
) -> LoadStats:
    """Load a poll's landing file, its poll_log rows (one per request in `requests`, default one
    per page) and its possible gap in one transaction."""
    now = datetime.now(UTC)
    conn.execute("BEGIN TRANSACTION")
    try:
        if landing_file is not None:
            stats = _load_staged(conn, landing_file, poll_id=poll_id, source="api", now=now)
        else:
            stats = LoadStats(received=0, new=0, duplicates=0, rejected=0)
        counts: dict[int, tuple[int, int]] = {}
        seen: set[str] = set()
        for page, known in zip(poll.pages, page_known, strict=True):
            ids = page.event_ids
            new_ids = {i for i in ids if i not in known and i not in seen}
            seen.update(ids)
            counts[id(page)] = (len(new_ids), len(page.events) - len(new_ids))
        for page, attempt in requests if requests is not None else [(p, 1) for p in poll.pages]:
            new, dups = counts.get(id(page), (0, 0))
            _insert_request(
                conn, poll_id=poll_id, page=page, attempt=attempt, new=new, duplicates=dups
            )
        if gap is not None:
            conn.execute(
                "INSERT INTO poll_gaps VALUES ($poll_id, $at, $previous, $start, $end, $pages,"
                " $events)",
                {
                    "poll_id": poll_id,
                    "at": poll.started_at,
                    "previous": gap.previous_poll_id,
                    "start": gap.gap_start,
                    "end": gap.gap_end,
                    "pages": gap.pages,
                    "events": gap.events_received,
                },
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return stats


def record_requests(
    conn: duckdb.DuckDBPyConnection, *, poll_id: str, requests: Sequence[tuple[PageResult, int]]
) -> None:
    """poll_log rows for a poll that stored nothing (it failed or was refused)."""
    conn.execute("BEGIN TRANSACTION")
    try:
        for page, attempt in requests:
            _insert_request(conn, poll_id=poll_id, page=page, attempt=attempt, new=0, duplicates=0)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def latest_api_poll(conn: duckdb.DuckDBPyConnection) -> tuple[str | None, datetime | None]:
    """The last poll that stored API events, and the newest created_at stored from the API."""
    rows = conn.execute(
        "SELECT (SELECT poll_id FROM raw_events WHERE source = 'api' ORDER BY seq DESC LIMIT 1),"
        " (SELECT max(created_at) FROM raw_events WHERE source = 'api')"
    ).fetchall()
    return rows[0][0], rows[0][1]


def gap_summary(conn: duckdb.DuckDBPyConnection, *, since: datetime) -> dict[str, Any]:
    """Possible gaps detected since `since`, the total, and the most recent one."""
    recent, total = conn.execute(
        "SELECT count(*) FILTER (WHERE detected_at >= $since), count(*) FROM poll_gaps",
        {"since": since},
    ).fetchall()[0]
    latest = conn.execute(
        "SELECT poll_id, detected_at, previous_poll_id, gap_start, gap_end FROM poll_gaps"
        " ORDER BY detected_at DESC LIMIT 1"
    ).fetchall()
    keys = ("poll_id", "detected_at", "previous_poll_id", "gap_start", "gap_end")
    return {
        "recent": int(recent),
        "total": int(total),
        "latest": dict(zip(keys, latest[0], strict=True)) if latest else None,
    }
