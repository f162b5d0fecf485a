"""One poll of the Events API, end to end: wait → fetch → land → load → save state (no Dagster import).

A poll is all or nothing: when any of its requests fails (after the client's retries) or GitHub
refuses one, nothing of it is stored and the ETag stays where it was, so the next poll fetches
the same events again. Only the poll_log rows (one per request) and the poll state's
"when may we ask again" are written. The ETag is saved only after the rows it describes are
committed, so a crash between the two costs a re-fetch, never an event.
"""

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from gh_pipeline import settings
from gh_pipeline.live import landing, poll_log, poll_state, polling
from gh_pipeline.live.github_client import GitHubApiError, GitHubEventsClient, GitHubRefusal
from gh_pipeline.live.models import PageResult, PollResult
from gh_pipeline.live.poll_log import PossibleGap
from gh_pipeline.warehouse import raw

# A run launched early (the sensor launches ahead, or someone clicks "Materialize") waits this
# long at most for the allowed moment; beyond it the run fails rather than hold the warehouse.
MAX_WAIT_S = 90.0


class PollNotAllowed(RuntimeError):
    """GitHub has asked us not to poll yet, and the wait is too long to sit out inside a run."""


class PollFailed(RuntimeError):
    """A poll could not be completed; nothing of it was stored and the ETag did not advance."""


class PollRefused(PollFailed):
    """GitHub refused a request (403/429); no request goes out until the time it allows."""


@dataclass(frozen=True)
class PollOutcome:
    poll_id: str
    status: int
    pages: int
    requests: int
    received: int
    new: int
    duplicates: int
    rejected: int
    etag_matched: bool
    reached_known: bool
    rate_limit_remaining: int | None
    next_poll_at: datetime | None
    next_poll_reason: str | None
    landing_file: Path | None
    possible_gap: PossibleGap | None


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _oldest_created_at(events: list[dict[str, Any]]) -> datetime | None:
    times = []
    for event in events:
        value = event.get("created_at") if isinstance(event, dict) else None
        if isinstance(value, str):
            try:
                times.append(datetime.fromisoformat(value))
            except ValueError:
                continue  # a malformed event; the loader rejects it with its reason
    return min(times) if times else None


def detect_gap(
    result: PollResult,
    *,
    feed_exhausted: bool,
    previous_poll_id: str | None,
    newest_stored: datetime | None,
) -> PossibleGap | None:
    """A poll that got new events, never reached a stored one and did not see the whole feed
    may have missed events between the previous poll's newest event and its own oldest."""
    if previous_poll_id is None or result.first.status != 200 or not result.events:
        return None
    if result.reached_known or feed_exhausted:
        return None
    return PossibleGap(
        previous_poll_id=previous_poll_id,
        gap_start=newest_stored,
        gap_end=_oldest_created_at(result.events),
        pages=len(result.pages),
        events_received=len(result.events),
    )


def _wait_until_allowed(
    state: poll_state.PollState,
    *,
    now: Callable[[], datetime],
    sleep: Callable[[float], None],
    max_wait_s: float,
) -> None:
    if state.next_poll_at is None:
        return
    wait_s = (state.next_poll_at - now()).total_seconds()
    if wait_s > max_wait_s:
        raise PollNotAllowed(
            f"next poll allowed at {state.next_poll_at.isoformat(timespec='seconds')} "
            f"({state.reason}); not waiting {wait_s:.0f}s inside a run"
        )
    if wait_s > 0:
        sleep(wait_s)


def poll_once(
    *,
    client: GitHubEventsClient,
    conn: duckdb.DuckDBPyConnection,
    data_dir: Path,
    poll_id: str,
    now: Callable[[], datetime] = _utcnow,
    sleep: Callable[[float], None] = time.sleep,
    max_wait_s: float = MAX_WAIT_S,
) -> PollOutcome:
    state_dir = settings.state_dir(data_dir)
    state = poll_state.load_state(state_dir)
    _wait_until_allowed(state, now=now, sleep=sleep, max_wait_s=max_wait_s)
    requests: list[tuple[PageResult, int]] = []
    # Each page's stored ids are looked up once, while paging; the poll log reuses the answers.
    known_by_ids: dict[tuple[str, ...], set[str]] = {}

    def known_ids(ids: Iterable[str]) -> set[str]:
        key = tuple(ids)
        if key not in known_by_ids:
            known_by_ids[key] = raw.known_event_ids(conn, key)
        return known_by_ids[key]

    started_at = now()
    try:
        result = client.poll(
            etag=state.etag,
            known_ids=known_ids,
            on_request=lambda page, attempt: requests.append((page, attempt)),
        )
    except GitHubApiError as exc:
        raise _record_failure(
            exc,
            conn=conn,
            state=state,
            state_dir=state_dir,
            poll_id=poll_id,
            now=now(),
            started_at=requests[0][0].requested_at if requests else started_at,
            requests=requests,
        ) from exc
    page_known = [known_ids(p.event_ids) for p in result.pages]
    previous_poll_id, newest_stored = poll_log.latest_api_poll(conn)
    gap = detect_gap(
        result,
        feed_exhausted=result.feed_exhausted,
        previous_poll_id=previous_poll_id,
        newest_stored=newest_stored,
    )
    events = result.events
    landing_file = None
    if events:
        landing_file = landing.write_landing_file(
            landing.landing_path(
                settings.landing_dir(data_dir), source="api", poll_id=poll_id, at=result.started_at
            ),
            events,
        )
    stats = poll_log.ingest_poll(
        conn,
        result,
        poll_id=poll_id,
        landing_file=landing_file,
        page_known=page_known,
        requests=requests,
        gap=gap,
    )
    new_state = polling.state_after_poll(state, result, poll_id=poll_id, requests=len(requests))
    # Saved only now, after the rows it describes are committed.
    poll_state.save_state(state_dir, new_state)
    return PollOutcome(
        poll_id=poll_id,
        status=result.first.status,
        pages=len(result.pages),
        requests=len(requests),
        received=stats.received,
        new=stats.new,
        duplicates=stats.duplicates,
        rejected=stats.rejected,
        etag_matched=result.etag_matched,
        reached_known=result.reached_known,
        rate_limit_remaining=result.rate_limit.remaining,
        next_poll_at=new_state.next_poll_at,
        next_poll_reason=new_state.reason,
        landing_file=landing_file,
        possible_gap=gap,
    )


def _record_failure(
    exc: GitHubApiError,
    *,
    conn: duckdb.DuckDBPyConnection,
    state: poll_state.PollState,
    state_dir: Path,
    poll_id: str,
    now: datetime,
    started_at: datetime,
    requests: list[tuple[PageResult, int]],
) -> PollFailed:
    """Record a failed or refused poll (state first: it is what keeps us polite); returns the
    error for the run to raise."""
    if isinstance(exc, GitHubRefusal) and exc.page is not None:
        new_state = polling.state_after_refusal(
            state, exc.page, poll_id=poll_id, started_at=started_at, requests=len(requests)
        )
        error: type[PollFailed] = PollRefused
        what = f"{exc}. {new_state.reason}."
    else:
        new_state = polling.state_after_failure(
            state,
            poll_id=poll_id,
            started_at=started_at,
            page=exc.page,
            error=str(exc),
            requests=len(requests),
            now=now,
        )
        error = PollFailed
        what = f"poll failed: {exc}."
    # The ETag stays as it was: the data it would describe was never stored.
    poll_state.save_state(state_dir, new_state)
    poll_log.record_requests(conn, poll_id=poll_id, requests=requests)
    next_at = (
        new_state.next_poll_at.isoformat(timespec="seconds") if new_state.next_poll_at else "?"
    )
    return error(
        f"{what} Nothing of this poll was stored and the ETag was kept; "
        f"next poll allowed at {next_at}."
    )


def describe_gap(gap: PossibleGap) -> str:
    """One line for run metadata and logs."""

    def at(t: datetime | None) -> str:
        return t.isoformat(timespec="seconds") if t is not None else "unknown"

    return (
        f"events created between {at(gap.gap_start)} (newest stored before) and "
        f"{at(gap.gap_end)} (oldest this poll received) may be missing: {gap.pages} page(s), "
        f"{gap.events_received} events, none already stored (previous poll {gap.previous_poll_id})"
    )
