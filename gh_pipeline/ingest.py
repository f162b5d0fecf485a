"""One poll of the Events API, end to end: wait → fetch → land → load → save state (no Dagster import)."""

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from gh_pipeline import landing, poll_state, polling, settings, store
from gh_pipeline.github_client import GitHubApiError, GitHubEventsClient
from gh_pipeline.models import DEFAULT_POLL_INTERVAL_S


class PollNotAllowed(RuntimeError):
    """GitHub has asked us not to poll yet, and the wait is too long to sit out inside a run."""


@dataclass(frozen=True)
class PollOutcome:
    poll_id: str
    status: int
    pages: int
    received: int
    new: int
    duplicates: int
    rejected: int
    etag_matched: bool
    reached_known: bool
    rate_limit_remaining: int | None
    next_poll_at: datetime | None
    landing_file: Path | None


def _utcnow() -> datetime:
    return datetime.now(UTC)


def poll_once(
    *,
    client: GitHubEventsClient,
    conn: duckdb.DuckDBPyConnection,
    data_dir: Path,
    poll_id: str,
    now: Callable[[], datetime] = _utcnow,
    sleep: Callable[[float], None] = time.sleep,
    max_wait_s: float = 90.0,
) -> PollOutcome:
    state_dir = settings.state_dir(data_dir)
    state = poll_state.load_state(state_dir)
    if state.next_poll_at is not None:
        wait_s = (state.next_poll_at - now()).total_seconds()
        if wait_s > max_wait_s:
            raise PollNotAllowed(
                f"next poll allowed at {state.next_poll_at.isoformat()} ({state.reason}); "
                f"not waiting {wait_s:.0f}s inside a run"
            )
        if wait_s > 0:
            sleep(wait_s)
    store.ensure_schema(conn)
    try:
        result = client.poll(
            etag=state.etag, known_ids=lambda ids: store.known_event_ids(conn, ids)
        )
    except GitHubApiError as exc:
        page = exc.page
        store.record_failed_request(
            conn,
            poll_id=poll_id,
            page=page.page if page else 1,
            status=page.status if page else 0,
            error=str(exc),
            requested_at=page.requested_at if page else now(),
            rate_limit_remaining=page.rate_limit.remaining if page else None,
        )
        # The ETag stays as it was: the data it would describe was never stored.
        poll_state.save_state(
            state_dir,
            state.with_(
                last_poll_id=poll_id,
                last_status=page.status if page else 0,
                next_poll_at=now()
                + timedelta(seconds=state.poll_interval_s or DEFAULT_POLL_INTERVAL_S),
                reason=f"last poll failed: {exc}",
            ),
        )
        raise
    page_known = [
        store.known_event_ids(conn, [str(e.get("id")) for e in p.events if isinstance(e, dict)])
        for p in result.pages
    ]
    events = result.events
    landing_file = None
    if events:
        landing_file = landing.write_landing_file(
            landing.landing_path(
                settings.landing_dir(data_dir), source="api", poll_id=poll_id, at=result.started_at
            ),
            events,
        )
    stats = store.ingest_poll(
        conn, result, poll_id=poll_id, landing_file=landing_file, page_known=page_known
    )
    new_state = polling.state_after_poll(state, result, poll_id=poll_id)
    # Saved only now, after the rows it describes are committed.
    poll_state.save_state(state_dir, new_state)
    return PollOutcome(
        poll_id=poll_id,
        status=result.first.status,
        pages=len(result.pages),
        received=stats.received,
        new=stats.new,
        duplicates=stats.duplicates,
        rejected=stats.rejected,
        etag_matched=result.etag_matched,
        reached_known=result.reached_known,
        rate_limit_remaining=result.rate_limit.remaining,
        next_poll_at=new_state.next_poll_at,
        landing_file=landing_file,
    )
