"""Coverage of the watched repositories: which of their events we hold, since when completely,
and where not (no Dagster import).

A repository's feed (`/repos/{owner}/{repo}/events`) shows its newest 300 events. Every id a
poll of it received is kept in `watched_repo_events`; a poll that reaches one of them (or a 304,
or a feed shorter than the cap) overlaps the previous poll, so nothing between them was missed.
`watched_repos` keeps, per repository, the period [complete_since, complete_until] in which
every poll overlapped the one before: within it, every event of the repository is stored. A
poll that did not overlap (three full pages, none seen before) records its span in
`watched_repo_gaps` and starts the complete period again after it.

Everything here runs inside the poll's own transaction (gh_pipeline.live.poll_log.ingest_poll),
so the coverage never describes events that are not stored.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb

from gh_pipeline.live.poll_log import PossibleGap
from gh_pipeline.warehouse.catalogue import WATCHED_REPO_EVENTS, WATCHED_REPO_GAPS, WATCHED_REPOS
from gh_pipeline.warehouse.connection import transaction

# created_at has whole seconds: when a poll hit the 300-event cap, other events of its oldest
# event's second may lie beyond the cap, so completeness starts at the next second.
_SECOND = timedelta(seconds=1)

PENDING = "pending"  # named, not yet polled successfully
OK = "ok"
UNAVAILABLE = "unavailable"  # 404: deleted, private or never there
RENAMED = "renamed"  # 301: its feed now lives under another name
UNWATCHED = "unwatched"  # no longer in GH_PIPELINE_REPOS; its complete period stays true


@dataclass(frozen=True)
class RepoCoverage:
    repo_name: str
    status: str
    detail: str | None
    first_polled_at: datetime | None
    last_polled_at: datetime | None
    last_poll_id: str | None
    complete_since: datetime | None
    complete_until: datetime | None
    events_seen: int
    gaps: int


def known_ids(conn: duckdb.DuckDBPyConnection, repo: str, ids: Iterable[str]) -> set[str]:
    """Of `ids`, those this repository's feed released before. Paging stops at them: an id
    stored only because the global feed sampled it says nothing about what lies below it."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return set()
    rows = conn.execute(
        f"SELECT event_id FROM {WATCHED_REPO_EVENTS}"
        " WHERE repo_name = $repo AND event_id IN (SELECT unnest($ids::VARCHAR[]))",
        {"repo": repo, "ids": wanted},
    ).fetchall()
    return {row[0] for row in rows}


def previous_poll(conn: duckdb.DuckDBPyConnection, repo: str) -> tuple[str | None, datetime | None]:
    """The repository's last successful poll and the newest created_at its feed released (kept
    in its row: a join of its ids with raw_events would scan the whole history every poll)."""
    rows = conn.execute(
        f"SELECT last_poll_id, newest_event_at FROM {WATCHED_REPOS} WHERE repo_name = $repo",
        {"repo": repo},
    ).fetchall()
    return (rows[0][0], rows[0][1]) if rows else (None, None)


_COLUMNS = (
    "repo_name, status, detail, first_polled_at, last_polled_at, last_poll_id, complete_since,"
    " complete_until, events_seen, gaps"
)


def coverage(conn: duckdb.DuckDBPyConnection, repo: str) -> RepoCoverage | None:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM {WATCHED_REPOS} WHERE repo_name = $repo", {"repo": repo}
    ).fetchall()
    return RepoCoverage(*rows[0]) if rows else None


def all_coverage(conn: duckdb.DuckDBPyConnection) -> list[RepoCoverage]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM {WATCHED_REPOS} ORDER BY repo_name").fetchall()
    return [RepoCoverage(*row) for row in rows]


def record_poll(
    conn: duckdb.DuckDBPyConnection,
    *,
    repo: str,
    poll_id: str,
    polled_at: datetime,
    event_ids: Sequence[str],
    oldest: datetime | None,
    newest: datetime | None,
    capped: bool,
    gap: PossibleGap | None,
    detail: str | None = None,
) -> None:
    """A successful poll of `repo`'s feed, inside the poll's transaction: its ids, its gap, and
    the complete period. `capped`: the poll stopped at the 300-event cap without reaching an
    event seen before, so events older than `oldest` may be missing."""
    current = coverage(conn, repo)
    start = None if oldest is None else (oldest + _SECOND if capped else oldest)
    if current is None or current.complete_since is None:
        # The first poll brings the backlog the endpoint still serves: complete from its oldest
        # event on (or from now, when the feed is empty).
        complete_since = start or polled_at
    elif gap is not None:
        complete_since = start or polled_at
    else:
        complete_since = current.complete_since
    new_ids = len(set(event_ids) - known_ids(conn, repo, event_ids))
    conn.execute(
        f"""
        INSERT INTO {WATCHED_REPOS} ({_COLUMNS}, newest_event_at)
        VALUES ($repo, $status, $detail, $at, $at, $poll_id, $since, $at, $new, $gaps, $newest)
        ON CONFLICT (repo_name) DO UPDATE SET
            newest_event_at = CASE
                WHEN {WATCHED_REPOS}.newest_event_at IS NULL THEN excluded.newest_event_at
                WHEN excluded.newest_event_at IS NULL THEN {WATCHED_REPOS}.newest_event_at
                ELSE greatest({WATCHED_REPOS}.newest_event_at, excluded.newest_event_at) END,
            status = excluded.status,
            detail = excluded.detail,
            first_polled_at = coalesce({WATCHED_REPOS}.first_polled_at, excluded.first_polled_at),
            last_polled_at = excluded.last_polled_at,
            last_poll_id = excluded.last_poll_id,
            complete_since = excluded.complete_since,
            complete_until = excluded.complete_until,
            events_seen = {WATCHED_REPOS}.events_seen + excluded.events_seen,
            gaps = {WATCHED_REPOS}.gaps + excluded.gaps
        """,
        {
            "repo": repo,
            "status": OK,
            "detail": detail,
            "at": polled_at,
            "poll_id": poll_id,
            "since": complete_since,
            "new": new_ids,
            "gaps": 1 if gap is not None else 0,
            "newest": newest,
        },
    )
    if event_ids:
        conn.execute(
            f"INSERT OR IGNORE INTO {WATCHED_REPO_EVENTS}"
            " SELECT $repo, unnest($ids::VARCHAR[]), $poll_id",
            {"repo": repo, "ids": list(dict.fromkeys(event_ids)), "poll_id": poll_id},
        )
    if gap is not None:
        conn.execute(
            f"INSERT INTO {WATCHED_REPO_GAPS} VALUES ($repo, $poll_id, $at, $start, $end, $pages,"
            " $events)",
            {
                "repo": repo,
                "poll_id": poll_id,
                "at": polled_at,
                "start": gap.gap_start,
                "end": gap.gap_end,
                "pages": gap.pages,
                "events": gap.events_received,
            },
        )


def put_status(
    conn: duckdb.DuckDBPyConnection, repo: str, *, status: str, detail: str | None
) -> None:
    """Mark a repository (unavailable, renamed, unwatched, pending) inside the caller's
    transaction, without touching its complete period: what was complete stays complete."""
    conn.execute(
        f"""
        INSERT INTO {WATCHED_REPOS} (repo_name, status, detail) VALUES ($repo, $status, $detail)
        ON CONFLICT (repo_name) DO UPDATE SET status = excluded.status, detail = excluded.detail
        """,
        {"repo": repo, "status": status, "detail": detail},
    )


def set_status(
    conn: duckdb.DuckDBPyConnection, repo: str, *, status: str, detail: str | None
) -> None:
    """put_status in its own transaction."""
    with transaction(conn):
        put_status(conn, repo, status=status, detail=detail)


def sync_watch_list(conn: duckdb.DuckDBPyConnection, repos: Sequence[str]) -> None:
    """Rows for newly named repositories (pending) and `unwatched` for those no longer named;
    nothing stored is removed, so naming a repository again picks up where it left off."""
    with transaction(conn):
        conn.execute(
            f"""
            UPDATE {WATCHED_REPOS} SET status = $unwatched,
                detail = 'no longer in GH_PIPELINE_REPOS; complete_since..complete_until stays true'
            WHERE status <> $unwatched AND status <> $renamed
              AND lower(repo_name) NOT IN (SELECT lower(unnest($repos::VARCHAR[])))
            """,
            {"unwatched": UNWATCHED, "renamed": RENAMED, "repos": list(repos)},
        )
        for repo in repos:
            conn.execute(
                f"""
                INSERT INTO {WATCHED_REPOS} (repo_name, status, detail)
                VALUES ($repo, $pending, 'waiting for its first poll')
                ON CONFLICT (repo_name) DO UPDATE SET
                    status = CASE WHEN {WATCHED_REPOS}.status = $unwatched
                                  THEN CASE WHEN {WATCHED_REPOS}.last_polled_at IS NULL
                                            THEN $pending ELSE $ok END
                                  ELSE {WATCHED_REPOS}.status END,
                    detail = CASE WHEN {WATCHED_REPOS}.status = $unwatched THEN NULL
                                  ELSE {WATCHED_REPOS}.detail END
                """,
                {"repo": repo, "pending": PENDING, "unwatched": UNWATCHED, "ok": OK},
            )
