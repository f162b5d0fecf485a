"""The poll log: one row per HTTP request, the possible gaps, and what a poll stored (no Dagster import).

A poll's events, its poll_log rows and its possible gap commit in one transaction
(`ingest_poll`), so the log never describes rows that are not there.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from gh_pipeline.live.models import PageResult, PollResult
from gh_pipeline.warehouse import raw
from gh_pipeline.warehouse.connection import transaction
from gh_pipeline.warehouse.raw import LoadStats


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
                      etag_matched, rate_limit_remaining, rate_limit_reset, error, feed)
VALUES ($poll_id, $page, $attempt, $requested_at, $status, $events, $new, $dups, $etag_matched,
        $remaining, $reset, $error, $feed)
"""

GLOBAL_FEED_PATH = "/events"


def _insert_request(
    conn: duckdb.DuckDBPyConnection,
    *,
    poll_id: str,
    page: PageResult,
    attempt: int,
    new: int,
    duplicates: int,
    feed: str = GLOBAL_FEED_PATH,
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
            "feed": feed,
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
    feed: str = GLOBAL_FEED_PATH,
    also: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
) -> LoadStats:
    """Load a poll's landing file, its poll_log rows (one per request in `requests`, default one
    per page), its possible gap and whatever `also` writes (a repository's coverage) in one
    transaction."""
    now = datetime.now(UTC)
    with transaction(conn):
        if landing_file is not None:
            stats = raw.load_staged(conn, landing_file, poll_id=poll_id, source="api", now=now)
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
                conn,
                poll_id=poll_id,
                page=page,
                attempt=attempt,
                new=new,
                duplicates=dups,
                feed=feed,
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
        if also is not None:
            also(conn)
    return stats


def record_requests(
    conn: duckdb.DuckDBPyConnection,
    *,
    poll_id: str,
    requests: Sequence[tuple[PageResult, int]],
    feed: str = GLOBAL_FEED_PATH,
) -> None:
    """poll_log rows for a poll that stored nothing (it failed or was refused)."""
    with transaction(conn):
        for page, attempt in requests:
            _insert_request(
                conn, poll_id=poll_id, page=page, attempt=attempt, new=0, duplicates=0, feed=feed
            )


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


_POLL_HISTORY_SQL = """
WITH polls AS (
    SELECT poll_id, min(requested_at) AS polled_at, sum(duplicates)::BIGINT AS duplicates
    FROM poll_log
    GROUP BY poll_id
    ORDER BY polled_at DESC
    LIMIT $limit
), stored AS (
    SELECT poll_id,
           CASE WHEN event_type IN (SELECT unnest($types)) THEN event_type ELSE $other END
               AS category,
           count(*)::BIGINT AS events
    FROM raw_events
    WHERE poll_id IN (SELECT poll_id FROM polls)
    GROUP BY ALL
)
SELECT p.poll_id, p.polled_at, s.category, s.events
FROM polls p JOIN stored s USING (poll_id)
UNION ALL
SELECT poll_id, polled_at, $duplicates, duplicates FROM polls
ORDER BY polled_at, category
"""


def poll_history(
    conn: duckdb.DuckDBPyConnection,
    *,
    limit: int,
    tracked: Sequence[str],
    other: str,
    duplicates: str,
) -> pd.DataFrame:
    """Per poll (the latest `limit`): new events stored by category and the duplicates, as rows
    poll_id, polled_at, category, events. A category is a type in `tracked`, `other` for every
    other type, or `duplicates`. New events are counted from raw_events by poll_id (what was
    really stored); duplicates come from poll_log, since duplicates are, by design, never stored."""
    return conn.execute(
        _POLL_HISTORY_SQL,
        {"limit": limit, "types": list(tracked), "other": other, "duplicates": duplicates},
    ).df()
