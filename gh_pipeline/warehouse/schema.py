"""The warehouse schema: every permanent table, created once per connection (no Dagster import).

Table names are declared in gh_pipeline.warehouse.catalogue. The metric tables and their working
state are not here: their writer (gh_pipeline.model.metrics) recreates them whole on a rebuild.
"""

import duckdb

from gh_pipeline.warehouse.catalogue import (
    ARCHIVE_HOURS,
    FILTERED_TABLES,
    UNTRACKED_EVENT_COUNTS,
    WATCHED_REPO_ARCHIVE_HOURS,
    WATERMARKS,
    FilteredTable,
)

RAW_SCHEMA_SQL = """
CREATE SEQUENCE IF NOT EXISTS raw_events_seq;
CREATE TABLE IF NOT EXISTS raw_events (
    event_id     VARCHAR PRIMARY KEY,
    event_type   VARCHAR NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    actor_login  VARCHAR,
    repo_id      BIGINT,
    repo_name    VARCHAR NOT NULL,
    -- zstd: JSON text compresses several times better than with DuckDB's default string
    -- codecs and costs less CPU to write (see docs/gharchive.md).
    payload      JSON USING COMPRESSION zstd,
    event        JSON USING COMPRESSION zstd,  -- NULL once older than GH_PIPELINE_RAW_RETENTION_DAYS (ops/retention.py)
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
-- Which feed a request went to: '/events' or '/repos/{owner}/{repo}/events'.
ALTER TABLE poll_log ADD COLUMN IF NOT EXISTS feed VARCHAR DEFAULT '/events';
-- Watched repositories (GH_PIPELINE_REPOS). complete_since/complete_until bound the period for
-- which every event of the repository is stored: every poll in it overlapped the one before.
CREATE TABLE IF NOT EXISTS watched_repos (
    repo_name        VARCHAR PRIMARY KEY,  -- as named in GH_PIPELINE_REPOS
    status           VARCHAR NOT NULL,     -- ok | unavailable | renamed | unwatched
    detail           VARCHAR,              -- why unavailable, the new name, the last error
    first_polled_at  TIMESTAMPTZ,
    last_polled_at   TIMESTAMPTZ,          -- the last poll that succeeded
    last_poll_id     VARCHAR,
    complete_since   TIMESTAMPTZ,
    complete_until   TIMESTAMPTZ,
    newest_event_at  TIMESTAMPTZ,          -- the newest created_at its feed released
    events_seen      BIGINT NOT NULL DEFAULT 0,
    gaps             BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS watched_repo_gaps (
    repo_name        VARCHAR NOT NULL,
    poll_id          VARCHAR NOT NULL,
    detected_at      TIMESTAMPTZ NOT NULL,
    gap_start        TIMESTAMPTZ,
    gap_end          TIMESTAMPTZ,
    pages            INTEGER NOT NULL,
    events_received  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS watched_repo_events (
    repo_name  VARCHAR NOT NULL,
    event_id   VARCHAR NOT NULL,
    poll_id    VARCHAR NOT NULL,
    PRIMARY KEY (repo_name, event_id)
);
"""

_WATERMARKS_SQL = f"""
CREATE TABLE IF NOT EXISTS {WATERMARKS} (
    target      VARCHAR NOT NULL,
    source      VARCHAR NOT NULL,
    last_seq    BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (target, source)
)"""

# One row per GH Archive hour loaded (gh_pipeline.archive.bulk_load), replaced by each load of it.
_ARCHIVE_HOURS_SQL = f"""
CREATE TABLE IF NOT EXISTS {ARCHIVE_HOURS} (
    hour_start              TIMESTAMPTZ PRIMARY KEY,
    poll_id                 VARCHAR NOT NULL,
    era                     VARCHAR NOT NULL,
    era_summary             VARCHAR NOT NULL,
    loaded_at               TIMESTAMPTZ NOT NULL,
    load_method             VARCHAR NOT NULL,
    events_in_file          BIGINT NOT NULL,
    new_events              BIGINT NOT NULL,
    already_stored          BIGINT NOT NULL,
    rejected_lines          BIGINT NOT NULL,
    live_events             BIGINT NOT NULL,  -- stored from live polls, created in the hour
    live_events_in_file     BIGINT NOT NULL,  -- of those, how many the hour's file holds
    live_share_in_archive   DOUBLE            -- their share; NULL when no live event overlaps
);
-- GH_PIPELINE_ARCHIVE_SCOPE: what the hour holds, over all its loads. 'all': every event of the
-- file; 'watched': the events of scope_repos (lower-cased) only. Hours loaded before the setting
-- existed hold every event, hence the default.
ALTER TABLE {ARCHIVE_HOURS} ADD COLUMN IF NOT EXISTS scope VARCHAR DEFAULT 'all';
ALTER TABLE {ARCHIVE_HOURS} ADD COLUMN IF NOT EXISTS scope_repos VARCHAR[];
ALTER TABLE {ARCHIVE_HOURS} ADD COLUMN IF NOT EXISTS skipped_by_scope BIGINT DEFAULT 0;
-- Per watched repository and archive hour: that the hour's file was read for it and how many of
-- its events the file held. Not a completeness claim: since 2025-05-24 GH Archive crawls one page
-- of /events per poll, so the file holds a sample of the repository's events (complete_crawl
-- false, caveat says why); completeness comes only from the live repository feed (watched_repos).
CREATE TABLE IF NOT EXISTS {WATCHED_REPO_ARCHIVE_HOURS} (
    repo_name       VARCHAR NOT NULL,      -- as named in GH_PIPELINE_REPOS
    hour_start      TIMESTAMPTZ NOT NULL,
    hour_end        TIMESTAMPTZ NOT NULL,
    poll_id         VARCHAR NOT NULL,      -- gharchive:YYYY-MM-DD-H
    source          VARCHAR NOT NULL,      -- 'gharchive'
    events          BIGINT NOT NULL,       -- distinct valid events of the repository in the file
    era             VARCHAR NOT NULL,
    complete_crawl  BOOLEAN NOT NULL,      -- GH Archive crawled every page that hour (era complete)
    caveat          VARCHAR NOT NULL,      -- the era's summary: what the file can be trusted for
    recorded_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (repo_name, hour_start)
)"""

# What retention deleted of untracked live events (gh_pipeline.ops.retention): per hour of
# created_at (UTC), type and source, how many. Each deletion adds to its cell in the same
# transaction, so raw_events plus these counts always account for every event ever stored.
_UNTRACKED_COUNTS_SQL = f"""
CREATE TABLE IF NOT EXISTS {UNTRACKED_EVENT_COUNTS} (
    hour        TIMESTAMPTZ NOT NULL,
    event_type  VARCHAR NOT NULL,
    source      VARCHAR NOT NULL,
    events      BIGINT NOT NULL,
    PRIMARY KEY (hour, event_type, source)
)"""

# The schema-drift baseline of gh_pipeline.ops.quality.
_PROFILE_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS schema_profile (
    source         VARCHAR NOT NULL,
    event_type     VARCHAR NOT NULL,
    kind           VARCHAR NOT NULL,   -- 'key': share carrying the key; 'missing': share missing a relied-on field
    path           VARCHAR NOT NULL,
    share          DOUBLE NOT NULL,
    first_seen_at  TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS schema_profile_types (
    source           VARCHAR NOT NULL,
    event_type       VARCHAR NOT NULL,
    weight           DOUBLE NOT NULL,   -- events the baseline stands for (capped)
    events_profiled  BIGINT NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS schema_profile_watermark (
    profiled_seq  BIGINT NOT NULL,
    profiled_at   TIMESTAMPTZ NOT NULL
);
"""


def filtered_ddl(table: FilteredTable, *, if_not_exists: bool = True) -> str:
    """CREATE TABLE for one filtered table (its name comes from the catalogue, never input)."""
    number = "number INTEGER," if table.has_number else ""
    guard = "IF NOT EXISTS" if if_not_exists else ""
    return f"""
    CREATE TABLE {guard} {table.name} (
        event_id    VARCHAR PRIMARY KEY,
        created_at  TIMESTAMPTZ NOT NULL,
        actor_login VARCHAR,
        repo_id     BIGINT,
        repo_name   VARCHAR NOT NULL,
        action      VARCHAR,
        {number}
        source      VARCHAR NOT NULL,
        seq         BIGINT NOT NULL
    )"""


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Create whatever permanent table is missing: raw_events and its bookkeeping, the
    watermarks, the archive hours, the filtered tables, the drift baseline and the untracked
    event counts. Idempotent and cheap."""
    conn.execute(RAW_SCHEMA_SQL)
    conn.execute(_WATERMARKS_SQL)
    conn.execute(_ARCHIVE_HOURS_SQL)
    for table in FILTERED_TABLES.values():
        conn.execute(filtered_ddl(table))
    conn.execute(_PROFILE_SCHEMA_SQL)
    conn.execute(_UNTRACKED_COUNTS_SQL)
