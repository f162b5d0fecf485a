"""Warehouse schema and the exactly-once load into raw_events (no Dagster import).

Every write happens inside one transaction so a crash leaves either all rows of a load or none.
"""

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from gh_pipeline.models import LoadStats, PollResult

SCHEMA_SQL = """
CREATE SEQUENCE IF NOT EXISTS raw_events_seq;
CREATE TABLE IF NOT EXISTS raw_events (
    event_id     VARCHAR PRIMARY KEY,
    event_type   VARCHAR NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    actor_login  VARCHAR,
    repo_id      BIGINT,
    repo_name    VARCHAR NOT NULL,
    payload      JSON,
    event        JSON NOT NULL,
    ingested_at  TIMESTAMPTZ NOT NULL,
    poll_id      VARCHAR NOT NULL,
    source       VARCHAR NOT NULL,
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
"""

# Lines are read as opaque text so a corrupt line becomes a rejected row instead of failing the load.
_STAGE_SQL = r"""
CREATE OR REPLACE TEMP TABLE _stage AS
WITH lines AS (
    SELECT line, row_number() OVER () AS line_number
    FROM read_csv($path, columns = {'line': 'VARCHAR'}, delim = E'\x01', quote = '',
                  escape = '', header = false, auto_detect = false)
), parsed AS (
    SELECT line_number, line, try_cast(line AS JSON) AS j FROM lines
), fields AS (
    SELECT line_number, line, j,
        json_type(j) AS j_type,
        json_type(j, '$.id') AS id_type,
        j ->> '$.id' AS event_id,
        j ->> '$.type' AS event_type,
        try_cast(j ->> '$.created_at' AS TIMESTAMPTZ) AS created_at,
        j ->> '$.created_at' AS created_at_text,
        j ->> '$.actor.login' AS actor_login,
        try_cast(j ->> '$.repo.id' AS BIGINT) AS repo_id,
        j ->> '$.repo.name' AS repo_name,
        j -> '$.payload' AS payload
    FROM parsed
)
SELECT *,
    CASE
        WHEN j IS NULL THEN 'line is not valid JSON'
        WHEN j_type <> 'OBJECT' THEN 'event is a JSON ' || lower(j_type) || ', expected an object'
        WHEN event_id IS NULL OR id_type NOT IN ('VARCHAR', 'BIGINT', 'UBIGINT')
            THEN 'missing or malformed id'
        WHEN event_type IS NULL OR json_type(j, '$.type') <> 'VARCHAR' THEN 'missing or malformed type'
        WHEN created_at IS NULL THEN 'missing or unparseable created_at'
        WHEN repo_name IS NULL OR json_type(j, '$.repo.name') <> 'VARCHAR'
            THEN 'missing or malformed repo.name'
    END AS reason
FROM fields
"""

_INSERT_RAW_SQL = """
INSERT INTO raw_events (event_id, event_type, created_at, actor_login, repo_id, repo_name,
                        payload, event, ingested_at, poll_id, source)
SELECT s.event_id, s.event_type, s.created_at, s.actor_login, s.repo_id, s.repo_name,
       s.payload, s.j, $ingested_at, $poll_id, $source
FROM _stage s
WHERE s.reason IS NULL
  AND NOT EXISTS (SELECT 1 FROM raw_events r WHERE r.event_id = s.event_id)
QUALIFY row_number() OVER (PARTITION BY s.event_id ORDER BY s.line_number) = 1
ORDER BY s.line_number
"""

_INSERT_REJECTED_SQL = """
INSERT INTO rejected_events
SELECT $now, $poll_id, $source, s.line_number, s.reason, s.line
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


def known_event_ids(conn: duckdb.DuckDBPyConnection, ids: Iterable[str]) -> set[str]:
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return set()
    rows = conn.execute(
        "SELECT event_id FROM raw_events WHERE event_id IN (SELECT unnest($ids))", {"ids": wanted}
    ).fetchall()
    return {row[0] for row in rows}


def _load_staged(
    conn: duckdb.DuckDBPyConnection, path: Path, *, poll_id: str, source: str, now: datetime
) -> LoadStats:
    conn.execute(_STAGE_SQL, {"path": str(path)})
    received, rejected = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE reason IS NOT NULL) FROM _stage"
    ).fetchall()[0]
    new = int(
        scalar(conn, _INSERT_RAW_SQL, {"ingested_at": now, "poll_id": poll_id, "source": source})
    )
    conn.execute(_INSERT_REJECTED_SQL, {"now": now, "poll_id": poll_id, "source": source})
    conn.execute("DROP TABLE _stage")
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


def ingest_poll(
    conn: duckdb.DuckDBPyConnection,
    poll: PollResult,
    *,
    poll_id: str,
    landing_file: Path | None,
    page_known: list[set[str]],
) -> LoadStats:
    """Load a poll's landing file and its poll_log rows in one transaction."""
    now = datetime.now(UTC)
    conn.execute("BEGIN TRANSACTION")
    try:
        if landing_file is not None:
            stats = _load_staged(conn, landing_file, poll_id=poll_id, source="api", now=now)
        else:
            stats = LoadStats(received=0, new=0, duplicates=0, rejected=0)
        seen: set[str] = set()
        for page, known in zip(poll.pages, page_known, strict=True):
            ids = [str(e["id"]) for e in page.events if isinstance(e, dict) and "id" in e]
            new_ids = {i for i in ids if i not in known and i not in seen}
            seen.update(ids)
            conn.execute(
                "INSERT INTO poll_log VALUES ($poll_id, $page, $requested_at, $status, $events, $new,"
                " $dups, $etag_matched, $remaining, $reset, $error)",
                {
                    "poll_id": poll_id,
                    "page": page.page,
                    "requested_at": page.requested_at,
                    "status": page.status,
                    "events": len(page.events),
                    "new": len(new_ids),
                    "dups": len(page.events) - len(new_ids),
                    "etag_matched": page.not_modified,
                    "remaining": page.rate_limit.remaining,
                    "reset": page.rate_limit.reset_at,
                    "error": page.error,
                },
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return stats


def record_failed_request(
    conn: duckdb.DuckDBPyConnection,
    *,
    poll_id: str,
    page: int,
    status: int,
    error: str,
    requested_at: datetime,
    rate_limit_remaining: int | None = None,
) -> None:
    conn.execute(
        "INSERT INTO poll_log VALUES ($poll_id, $page, $at, $status, 0, 0, 0, false, $remaining,"
        " NULL, $error)",
        {
            "poll_id": poll_id,
            "page": page,
            "at": requested_at,
            "status": status,
            "remaining": rate_limit_remaining,
            "error": error,
        },
    )
