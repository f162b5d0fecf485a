"""One poll of the Events API, end to end: wait → fetch → land → load → save state (no Dagster import).

The same machinery polls the global feed (`GET /events`) and each watched repository's feed
(`GET /repos/{owner}/{repo}/events`, see `Feed`): every rule below holds for both. A repository
poll also records what its feed released and the repository's coverage (gh_pipeline.live.coverage)
in the same transaction as its events.

A poll is all or nothing: when any of its requests fails (after the client's retries) or GitHub
refuses one, nothing of it is stored and the ETag stays where it was, so the next poll fetches
the same events again. Only the poll_log rows (one per request) and the poll state's
"when may we ask again" are written. The ETag is saved only after the rows it describes are
committed, so a crash between the two costs a re-fetch, never an event.
"""

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from gh_pipeline import settings
from gh_pipeline.live import coverage, landing, poll_log, poll_state, polling
from gh_pipeline.live.github_client import (
    PER_PAGE,
    GitHubApiError,
    GitHubEventsClient,
    GitHubNotFound,
    GitHubRefusal,
)
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


class RepoUnavailable(PollFailed):
    """A watched repository's feed answered 404: deleted, private or never there."""


# A repository that answered 404 is asked again this much later (it may come back public).
UNAVAILABLE_RETRY_S = 3600


@dataclass(frozen=True)
class Feed:
    """One feed: the global `/events` (repo None) or a watched repository's events."""

    repo: str | None = None  # owner/name as named in GH_PIPELINE_REPOS

    @property
    def path(self) -> str:
        return "/events" if self.repo is None else f"/repos/{self.repo}/events"

    @property
    def state_name(self) -> str:
        """The poll state file, relative to the state directory."""
        if self.repo is None:
            return poll_state.STATE_FILE
        owner, _, name = self.repo.lower().partition("/")
        return f"repos/{owner}--{name}.json"

    def poll_id(self, run_id: str) -> str:
        """The poll's id: the run id for the global feed; run id and repository otherwise (a
        GitHub owner never holds '--', and the id is already safe as a landing file name)."""
        if self.repo is None:
            return run_id
        owner, _, name = self.repo.partition("/")
        return f"{run_id}--{owner}--{name}"


GLOBAL_FEED = Feed()


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
    feed: Feed = GLOBAL_FEED
    renamed_to: str | None = None  # a repository feed followed a 301 to this name


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _oldest_created_at(events: list[dict[str, Any]]) -> datetime | None:
    times = _created_times(events)
    return min(times) if times else None


def _newest_created_at(events: list[dict[str, Any]]) -> datetime | None:
    times = _created_times(events)
    return max(times) if times else None


def _created_times(events: list[dict[str, Any]]) -> list[datetime]:
    times = []
    for event in events:
        value = event.get("created_at") if isinstance(event, dict) else None
        if isinstance(value, str):
            try:
                times.append(datetime.fromisoformat(value))
            except ValueError:
                continue  # a malformed event; the loader rejects it with its reason
    return times


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
    feed: Feed = GLOBAL_FEED,
    share: int = 1,
) -> PollOutcome:
    """One poll of `feed`. `share`: how many feeds draw on the rate budget (plan_next_poll)."""
    state_dir = settings.state_dir(data_dir)
    state = poll_state.load_state(state_dir, feed.state_name)
    _wait_until_allowed(state, now=now, sleep=sleep, max_wait_s=max_wait_s)
    requests: list[tuple[PageResult, int]] = []
    # Each page's stored ids are looked up once, while paging; the poll log reuses the answers.
    known_by_ids: dict[tuple[str, ...], set[str]] = {}

    def known_ids(ids: Iterable[str]) -> set[str]:
        key = tuple(ids)
        if key not in known_by_ids:
            known_by_ids[key] = raw.known_event_ids(conn, key)
        return known_by_ids[key]

    # Where a repository's coverage is kept: its new name once it was renamed.
    covered = state.renamed_to or feed.repo

    def stop_at(ids: Iterable[str]) -> set[str]:
        # The global feed stops at any stored event; a repository feed only at one its own feed
        # released before, since events the global feed sampled may sit above unseen ones.
        if covered is None:
            return known_ids(ids)
        return coverage.known_ids(conn, covered, ids)

    started_at = now()
    try:
        result = client.poll(
            etag=state.etag,
            known_ids=stop_at,
            on_request=lambda page, attempt: requests.append((page, attempt)),
            path=feed.path,
            url=state.feed_url,
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
            feed=feed,
        ) from exc
    page_known = [known_ids(p.event_ids) for p in result.pages]
    renamed_to = _renamed_to(feed, result) if result.moved_to else None
    if renamed_to is not None:
        covered = renamed_to
    if covered is None:
        previous_poll_id, newest_stored = poll_log.latest_api_poll(conn)
    else:
        previous_poll_id, newest_stored = coverage.previous_poll(conn, covered)
    gap = detect_gap(
        result,
        feed_exhausted=result.feed_exhausted,
        previous_poll_id=previous_poll_id,
        newest_stored=newest_stored,
    )
    events = result.events
    record_coverage = None
    if covered is not None:
        repo_gap, gap = gap, None  # a repository's gap is its own, not the global feed's

        def record_coverage(c: duckdb.DuckDBPyConnection) -> None:
            capped = (
                result.first.status == 200
                and bool(result.events)
                and not result.reached_known
                and not result.feed_exhausted
            )
            coverage.record_poll(
                c,
                repo=covered,
                poll_id=poll_id,
                polled_at=result.started_at,
                event_ids=[i for p in result.pages for i in p.event_ids],
                oldest=_oldest_created_at(events),
                newest=_newest_created_at(events),
                capped=capped,
                gap=repo_gap,
                detail=f"renamed from {feed.repo}" if covered != feed.repo else None,
            )
            if renamed_to is not None and feed.repo is not None:
                coverage.put_status(
                    c,
                    feed.repo,
                    status=coverage.RENAMED,
                    detail=f"renamed to {renamed_to}: its feed is followed there; "
                    f"name {renamed_to} in GH_PIPELINE_REPOS",
                )

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
        feed=feed.path,
        also=record_coverage,
    )
    new_state = polling.state_after_poll(
        state, result, poll_id=poll_id, requests=len(requests), share=share
    )
    if result.moved_to:
        new_state = new_state.with_(
            feed_url=f"{result.moved_to}?per_page={PER_PAGE}",
            renamed_to=renamed_to or state.renamed_to,
        )
    if state.unavailable:
        new_state = new_state.with_(unavailable=None)
    if covered is not None:
        now_covered = coverage.coverage(conn, covered)
        if now_covered is not None:
            new_state = new_state.with_(
                complete_since=now_covered.complete_since, gaps=now_covered.gaps
            )
    # Saved only now, after the rows it describes are committed.
    poll_state.save_state(state_dir, new_state, feed.state_name)
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
        possible_gap=gap if covered is None else repo_gap,
        feed=feed,
        renamed_to=renamed_to,
    )


def _renamed_to(feed: Feed, result: PollResult) -> str | None:
    """A renamed repository's new name: from the redirect when it names one, else from its
    events (GitHub redirects to /repositories/{id}/events, which does not)."""
    moved = getattr(result, "moved_to", None) or ""
    parts = moved.split("?")[0].rstrip("/").split("/")
    if len(parts) >= 4 and parts[-4] == "repos" and parts[-1] == "events":
        return f"{parts[-3]}/{parts[-2]}"
    for event in result.events:
        name = (event.get("repo") or {}).get("name") if isinstance(event, dict) else None
        if isinstance(name, str) and name.lower() != (feed.repo or "").lower():
            return name
    return None


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
    feed: Feed = GLOBAL_FEED,
) -> PollFailed:
    """Record a failed or refused poll (state first: it is what keeps us polite); returns the
    error for the run to raise."""
    if isinstance(exc, GitHubNotFound) and feed.repo is not None:
        reason = (
            f"{feed.repo} answered HTTP 404: deleted, private or never there; asked again "
            f"after {UNAVAILABLE_RETRY_S}s"
        )
        new_state = state.with_(
            last_poll_id=poll_id,
            last_poll_started_at=started_at,
            last_status=404,
            next_poll_at=now + timedelta(seconds=UNAVAILABLE_RETRY_S),
            reason=reason,
            last_poll_requests=len(requests),
            last_error=reason,
            unavailable=reason,
        )
        poll_state.save_state(state_dir, new_state, feed.state_name)
        poll_log.record_requests(conn, poll_id=poll_id, requests=requests, feed=feed.path)
        coverage.set_status(conn, feed.repo, status=coverage.UNAVAILABLE, detail=reason)
        return RepoUnavailable(f"{reason}. Nothing of this poll was stored.")
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
    poll_state.save_state(state_dir, new_state, feed.state_name)
    poll_log.record_requests(conn, poll_id=poll_id, requests=requests, feed=feed.path)
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
