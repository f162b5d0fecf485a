"""The exactly-once load of NDJSON(.gz) files into raw_events (no Dagster import).

Live polls (gh_pipeline.live) and GH Archive hours (gh_pipeline.archive) both load through here:
each event id is stored once, corrupt lines go to rejected_events with their reason, and a load
is one transaction, so a crash leaves either all rows of a file or none.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from gh_pipeline.warehouse.connection import scalar, transaction


@dataclass(frozen=True)
class LoadStats:
    """What one load into raw_events did."""

    received: int
    new: int
    duplicates: int
    rejected: int
    # Valid events left out because their repository is outside the load's scope (GH Archive
    # hours loaded with GH_PIPELINE_ARCHIVE_SCOPE=watched); always 0 for live polls.
    skipped_by_scope: int = 0


def read_lines_sql(paths: str, *options: str) -> str:
    """A `read_csv` call that hands back every line of the files `paths` (a bound parameter such
    as "$path") as opaque text in a column `line`: no quoting, no escapes, no header, so a line
    is never split or reinterpreted and a corrupt one stays a line. `options` are extra
    read_csv options (e.g. "filename = true")."""
    extra = "".join(f", {option}" for option in options)
    return (
        f"read_csv({paths}, columns = {{'line': 'VARCHAR'}}, delim = E'\\x01', quote = '',"
        f" escape = '', header = false, auto_detect = false{extra})"
    )


# Lines are read as opaque text so a corrupt line becomes a rejected row instead of failing the load.
# Speed matters here (a GH Archive hour is 100k+ events): each line is parsed once to validate it and
# once more to pull every column out in one multi-path json_extract; the full-document json_type()
# runs only for lines that already failed a check. Empty lines are not events and are skipped;
# strict_mode=false turns a stray \x01 byte into a truncated (hence rejected) line, not a failed load.
# $repos (lower-cased names, or NULL for every repository) is the load's scope: a valid event of
# another repository is only counted (in_scope false) and its payload and JSON are not kept. A
# rejected line is rejected whatever its repository: a line that fails the checks cannot be
# trusted to name one.
STAGE_TABLE = "_stage"
_SKIP_TABLE = "_stage_skip"
MAX_LINE_BYTES = 16 * 1024 * 1024  # as DuckDB's own read_json default maximum_object_size

_STAGE_SELECT = f"""
WITH lines AS (
    SELECT row_number() OVER () AS line_number, line
    FROM {read_lines_sql("$path", "strict_mode = false", "max_line_size = $max_line_bytes")}
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
), scoped AS (
    SELECT *, reason IS NULL AND ($repos::VARCHAR[] IS NULL
                                  OR list_contains($repos::VARCHAR[], lower(repo_name))) AS in_scope
    FROM checked
)
SELECT line_number, event_id, event_type, created_at, actor_login, repo_id, repo_name,
       CASE WHEN in_scope THEN payload END AS payload, CASE WHEN in_scope THEN j END AS j,
       reason, in_scope, CASE WHEN reason IS NOT NULL THEN line END AS raw_text
FROM scoped
"""
_STAGE_SQL = f"CREATE OR REPLACE TEMP TABLE {STAGE_TABLE} AS {_STAGE_SELECT}"

# Lines to leave out: repeats of an id within the file (the first line wins) and ids already
# stored. Every variant below starts with the repeats and differs in how stored ids are found.
_SKIP_REPEATS_SQL = """
CREATE OR REPLACE TEMP TABLE _stage_skip AS
SELECT line_number FROM _stage
WHERE in_scope
QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY line_number) > 1
UNION ALL
"""

# Stored ids found with a semi join whose hash table holds the file's ids, not the warehouse's,
# so memory stays flat as raw_events grows.
_SKIP_SQL = (
    _SKIP_REPEATS_SQL
    + """
SELECT s.line_number FROM _stage s SEMI JOIN raw_events r ON r.event_id = s.event_id
WHERE s.in_scope
"""
)

# The same for a small file whose stored ids were already looked up in the index ($known).
_SKIP_KNOWN_SQL = (
    _SKIP_REPEATS_SQL
    + """
SELECT line_number FROM _stage
WHERE in_scope AND event_id IN (SELECT unnest($known::VARCHAR[]))
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
WHERE s.in_scope
"""
)

# Not stored yet among the events created in the load's window (see _SKIP_WINDOW_SQL).
_NOT_STORED_IN_WINDOW = """NOT EXISTS (SELECT 1 FROM raw_events r
                  WHERE r.event_id = s.event_id
                    AND r.created_at >= $window_start AND r.created_at < $window_end)"""

# One pass from file to table, no staging: for a file expected to be all new, valid, distinct
# events (a fresh GH Archive hour). It stores no rejected lines, and a repeated id, or one stored
# outside the window, violates the primary key: the caller checks the count and falls back to
# the staged load otherwise (archive.bulk_load.load_hour_file). Every row gets the same $seq: a
# per-row nextval() makes DuckDB run the whole insert on one thread (~35 % slower on 2 cores).
# `event` (the whole line) is stored only when $keep_event: without it the line is parsed once
# (DuckDB's read_json with pinned columns), with it twice (as text, then as JSON).
_DIRECT_INSERT_SQL = f"""
INSERT INTO raw_events (event_id, event_type, created_at, actor_login, repo_id, repo_name,
                        payload, event, ingested_at, poll_id, source, seq)
SELECT s.event_id, s.event_type, s.created_at, s.actor_login, s.repo_id, s.repo_name,
       s.payload, s.j, $ingested_at, $poll_id, $source, $seq
FROM ({_STAGE_SELECT}) s
WHERE s.in_scope AND {_NOT_STORED_IN_WINDOW}
"""

# The same one pass, reading only the fields the warehouse keeps, through DuckDB's typed JSON
# reader: about twice as fast on real GH Archive hours (docs/gharchive.md). It accepts exactly the
# lines _STAGE_SELECT accepts and extracts the same values from them; anything _STAGE_SELECT would
# reject (not JSON, not an object, a bad id, type, created_at or repo.name) raises an
# InvalidInputException here instead, and the caller takes the staged path, which quarantines it
# with its reason. An empty line is skipped here and by the staged path alike (the caller's line
# count then differs, which also sends it to the staged path).
_TYPED_COLUMNS = (
    "{id: 'JSON', type: 'JSON', actor: 'JSON', repo: 'JSON', payload: 'JSON', created_at: 'JSON'}"
)
_TYPED_FIELDS = """
        CASE WHEN json_type(id) IN ('VARCHAR', 'BIGINT', 'UBIGINT') THEN id ->> '$'
             ELSE error('missing or malformed id') END AS event_id,
        CASE WHEN json_type(type) = 'VARCHAR' THEN type ->> '$'
             ELSE error('missing or malformed type') END AS event_type,
        coalesce(try_cast(created_at ->> '$' AS TIMESTAMPTZ),
                 error('missing or unparseable created_at')) AS created_at,
        actor ->> '$.login' AS actor_login,
        try_cast(repo ->> '$.id' AS BIGINT) AS repo_id,
        CASE WHEN json_type(repo, '$.name') = 'VARCHAR' THEN repo ->> '$.name'
             ELSE error('missing or malformed repo.name') END AS repo_name,
        payload"""
_TYPED_READ = f"""read_json($path, columns = {_TYPED_COLUMNS}, format = 'newline_delimited',
                   maximum_object_size = $max_line_bytes)"""
_TYPED_INSERT_SQL = f"""
INSERT INTO raw_events (event_id, event_type, created_at, actor_login, repo_id, repo_name,
                        payload, event, ingested_at, poll_id, source, seq)
SELECT s.event_id, s.event_type, s.created_at, s.actor_login, s.repo_id, s.repo_name,
       s.payload, NULL, $ingested_at, $poll_id, $source, $seq
FROM (SELECT {_TYPED_FIELDS} FROM {_TYPED_READ}) s
WHERE {_NOT_STORED_IN_WINDOW}
"""

# The typed one pass for a scope ($repos, lower-cased names): every line is still checked, and
# only the watched repositories' events keep their fields. The checks live in the one expression
# the scope is decided by (scope_key), so DuckDB must evaluate them on every line: with the scope
# in a separate filter it could drop another repository's line before computing (and failing)
# its id, and a line the staged path rejects would vanish without a trace. The pass keeps one
# small row per line in _scoped (a flag, and the fields for the watched ones), so the caller
# learns how many lines were read and how many were in scope, exactly as the staged path counts.
_SCOPED_TABLE = "_scoped"
_TYPED_SCOPED_SQL = f"""
CREATE OR REPLACE TEMP TABLE {_SCOPED_TABLE} AS
SELECT in_scope,
       CASE WHEN in_scope THEN event_id END AS event_id,
       CASE WHEN in_scope THEN event_type END AS event_type,
       CASE WHEN in_scope THEN created_at END AS created_at,
       CASE WHEN in_scope THEN actor_login END AS actor_login,
       CASE WHEN in_scope THEN repo_id END AS repo_id,
       CASE WHEN in_scope THEN repo_name END AS repo_name,
       CASE WHEN in_scope THEN payload END AS payload
FROM (
    SELECT list_contains($repos::VARCHAR[], scope_key) AS in_scope, *
    FROM (
        SELECT
            CASE WHEN json_type(id) NOT IN ('VARCHAR', 'BIGINT', 'UBIGINT') OR id IS NULL
                     THEN error('missing or malformed id')
                 WHEN json_type(type) <> 'VARCHAR' OR type IS NULL
                     THEN error('missing or malformed type')
                 WHEN try_cast(created_at ->> '$' AS TIMESTAMPTZ) IS NULL
                     THEN error('missing or unparseable created_at')
                 WHEN json_type(repo, '$.name') = 'VARCHAR' THEN lower(repo ->> '$.name')
                 ELSE error('missing or malformed repo.name') END AS scope_key,
            {_TYPED_FIELDS}
        FROM {_TYPED_READ}
    )
)
"""
_SCOPED_INSERT_SQL = f"""
INSERT INTO raw_events (event_id, event_type, created_at, actor_login, repo_id, repo_name,
                        payload, event, ingested_at, poll_id, source, seq)
SELECT s.event_id, s.event_type, s.created_at, s.actor_login, s.repo_id, s.repo_name,
       s.payload, NULL, $ingested_at, $poll_id, $source, $seq
FROM {_SCOPED_TABLE} s
WHERE s.in_scope AND {_NOT_STORED_IN_WINDOW}
"""

# A plain INSERT: INSERT OR IGNORE would group every staged row (JSON included) by id first.
_INSERT_RAW_SQL = """
INSERT INTO raw_events (event_id, event_type, created_at, actor_login, repo_id, repo_name,
                        payload, event, ingested_at, poll_id, source)
SELECT s.event_id, s.event_type, s.created_at, s.actor_login, s.repo_id, s.repo_name,
       s.payload, CASE WHEN $keep_event THEN s.j END, $ingested_at, $poll_id, $source
FROM _stage s
WHERE s.in_scope
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


def stage_ndjson(
    conn: duckdb.DuckDBPyConnection, path: Path, *, repos: Sequence[str] | None = None
) -> tuple[int, int, int]:
    """Read and check one NDJSON(.gz) file into the temp table `_stage`; returns (lines,
    rejected, skipped by scope). With `repos` (lower-cased owner/name) only those repositories'
    valid events are in scope; the others are counted, not kept. Call inside the caller's
    transaction, then insert_staged() and drop_stage()."""
    conn.execute(
        _STAGE_SQL,
        {
            "path": str(path),
            "max_line_bytes": MAX_LINE_BYTES,
            "repos": None if repos is None else list(repos),
        },
    )
    received, rejected, skipped = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE reason IS NOT NULL),"
        " count(*) FILTER (WHERE reason IS NULL AND NOT in_scope) FROM _stage"
    ).fetchall()[0]
    return int(received), int(rejected), int(skipped)


def insert_staged(
    conn: duckdb.DuckDBPyConnection,
    *,
    poll_id: str,
    source: str,
    now: datetime,
    window: tuple[datetime, datetime] | None = None,
    keep_event: bool = True,
) -> int:
    """Insert the staged events not stored yet and record the rejected lines; returns new rows.
    With a `window` only stored events created in it are checked (_SKIP_WINDOW_SQL); without
    `keep_event` the whole line is not stored in `event` (payload and typed columns are)."""
    if window is not None:
        conn.execute(_SKIP_WINDOW_SQL, {"window_start": window[0], "window_end": window[1]})
    elif int(scalar(conn, "SELECT count(*) FROM _stage WHERE in_scope")) <= INDEX_LOOKUP_MAX_IDS:
        # A poll-sized file: find its stored ids through the index instead of scanning them all.
        sql = "SELECT DISTINCT event_id FROM _stage WHERE in_scope"
        staged = [r[0] for r in conn.execute(sql).fetchall()]
        conn.execute(_SKIP_KNOWN_SQL, {"known": sorted(known_event_ids(conn, staged))})
    else:
        conn.execute(_SKIP_SQL)
    new = int(
        scalar(
            conn,
            _INSERT_RAW_SQL,
            {"ingested_at": now, "poll_id": poll_id, "source": source, "keep_event": keep_event},
        )
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
    keep_event: bool = True,
) -> int:
    """Insert a file's valid events not stored in `window` in one pass; returns rows inserted.
    Records no rejected lines; raises duckdb.ConstraintException on an id repeated in the file or
    stored outside the window, and (without `keep_event`, the typed reader) InvalidInputException
    on any line the staged path would reject. Only for callers that verify the count and fall
    back to the staged load (see _DIRECT_INSERT_SQL, _TYPED_INSERT_SQL). The rows share one
    `seq`, drawn inside the caller's transaction."""
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
    if keep_event:
        params["repos"] = None  # _STAGE_SELECT's scope: every repository
    return int(scalar(conn, _DIRECT_INSERT_SQL if keep_event else _TYPED_INSERT_SQL, params))


def insert_file_scoped(
    conn: duckdb.DuckDBPyConnection,
    path: Path,
    *,
    repos: Sequence[str],
    poll_id: str,
    source: str,
    now: datetime,
    window: tuple[datetime, datetime],
) -> tuple[int, int, int]:
    """insert_file_direct (typed, without `event`) for the events of `repos` (lower-cased
    owner/name) only; returns (lines read, events in scope, rows inserted). Raises as
    insert_file_direct does, on any line the staged path would reject whatever its repository
    (_TYPED_SCOPED_SQL); the caller checks the counts and falls back to the staged load."""
    read_params = {"path": str(path), "max_line_bytes": MAX_LINE_BYTES, "repos": list(repos)}
    # Created inside the caller's transaction: a failed attempt rolls the table back with it.
    conn.execute(_TYPED_SCOPED_SQL, read_params)
    lines, in_scope = conn.execute(
        f"SELECT count(*), count(*) FILTER (WHERE in_scope) FROM {_SCOPED_TABLE}"
    ).fetchall()[0]
    inserted = scalar(
        conn,
        _SCOPED_INSERT_SQL,
        {
            "seq": int(scalar(conn, "SELECT nextval('raw_events_seq')")),
            "ingested_at": now,
            "poll_id": poll_id,
            "source": source,
            "window_start": window[0],
            "window_end": window[1],
        },
    )
    conn.execute(f"DROP TABLE {_SCOPED_TABLE}")
    return int(lines), int(in_scope), int(inserted)


def load_staged(
    conn: duckdb.DuckDBPyConnection, path: Path, *, poll_id: str, source: str, now: datetime
) -> LoadStats:
    """Stage, check and insert one file inside the caller's transaction."""
    received, rejected, _ = stage_ndjson(conn, path)
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
    with transaction(conn):
        stats = load_staged(conn, path, poll_id=poll_id, source=source, now=now)
    return stats
