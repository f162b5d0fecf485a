"""When may we poll? Pure decisions for the sensor and the poll asset (no Dagster import).

Every rule GitHub sets for polling lands here as a `next_poll_at` plus a human-readable reason:
X-Poll-Interval, the hourly rate budget spread evenly until its reset, primary and secondary
rate-limit refusals, retry-after, and a gentle backoff after failed polls.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from gh_pipeline.live.github_client import MAX_PAGES
from gh_pipeline.live.models import DEFAULT_POLL_INTERVAL_S, PageResult, PollResult, RateLimit
from gh_pipeline.live.poll_state import PollState

# The sensor launches a run this long before the poll is allowed; the run waits out the rest,
# so the request goes out within a second or two of the allowed moment despite process start-up.
LAUNCH_LEAD_S = 10

# Requests kept back from the hourly budget: enough for one full poll (all pages), so a poll that
# starts can always finish, and the budget never reaches zero before its reset.
BUDGET_RESERVE = MAX_PAGES

# GitHub's reset time comes from its clock; ours may be a little behind.
RESET_SKEW_S = 1

# Secondary rate limits come without a time: GitHub asks for at least a minute, then exponentially
# longer while they continue.
SECONDARY_MIN_S = 60
SECONDARY_MAX_S = 3600

# Failed polls (5xx, timeouts after the in-poll retries) slow the cadence down to this at most.
FAILURE_BACKOFF_MAX_S = 300


@dataclass(frozen=True)
class Decision:
    poll: bool
    reason: str
    next_poll_at: datetime | None


def _at(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


def plan_next_poll(
    *,
    started_at: datetime,
    interval_s: int,
    rate: RateLimit,
    cost: int,
    now: datetime,
    interval_reason: str | None = None,
    share: int = 1,
) -> tuple[datetime, str]:
    """When the next poll may start, so that the rate budget lasts until its reset.

    `cost` is what a poll spends (requests, counting 304s: unauthenticated they are charged).
    The remaining budget minus the reserve is spread evenly over the time left until the reset,
    and among the `share` feeds that draw on it (the global feed and each watched repository):
    each feed plans as if every other one polled at its own pace, so together they spend the
    budget evenly until the reset and never run it dry.
    """
    interval_at = started_at + timedelta(seconds=interval_s)
    interval_reason = interval_reason or f"X-Poll-Interval {interval_s}s"
    if rate.remaining is None or rate.reset_at is None or rate.reset_at <= now:
        # No budget information, or the window has already reset: only the interval applies.
        return interval_at, interval_reason
    cost = max(1, cost)
    reset_at = rate.reset_at + timedelta(seconds=RESET_SKEW_S)
    limit = rate.limit if rate.limit is not None else "?"
    usable = rate.remaining - BUDGET_RESERVE
    if usable < cost:
        return max(interval_at, reset_at), (
            f"rate budget spent: {rate.remaining} of {limit} requests left, {BUDGET_RESERVE} kept "
            f"in reserve; no request until the budget resets at {_at(reset_at)}"
        )
    share = max(1, share)
    spacing_s = (rate.reset_at - now).total_seconds() * cost * share / usable
    budget_at = now + timedelta(seconds=spacing_s)
    if budget_at <= interval_at:
        return interval_at, interval_reason
    shared = f", shared by {share} feeds" if share > 1 else ""
    return budget_at, (
        f"rate budget: {rate.remaining} of {limit} requests left until {_at(rate.reset_at)}"
        f"{shared}, {cost} request(s) per poll, {BUDGET_RESERVE} kept in reserve: one poll every "
        f"{spacing_s:.0f}s"
    )


def next_allowed(state: PollState, *, last_launch_at: datetime | None) -> datetime | None:
    candidates = [t for t in (state.next_poll_at,) if t is not None]
    if last_launch_at is not None:
        # A launched run may have polled and died before saving state; assume it did.
        candidates.append(
            last_launch_at + timedelta(seconds=state.poll_interval_s or DEFAULT_POLL_INTERVAL_S)
        )
    return max(candidates) if candidates else None


def decide(
    state: PollState,
    *,
    now: datetime,
    last_launch_at: datetime | None,
    in_flight: bool,
    in_flight_detail: str | None = None,
) -> Decision:
    allowed_at = next_allowed(state, last_launch_at=last_launch_at)
    if in_flight:
        detail = f" ({in_flight_detail})" if in_flight_detail else ""
        return Decision(False, f"a poll is already in flight{detail}", allowed_at)
    if allowed_at is not None and now < allowed_at - timedelta(seconds=LAUNCH_LEAD_S):
        if state.next_poll_at is not None and allowed_at == state.next_poll_at:
            why = state.reason or "GitHub's X-Poll-Interval"
        else:
            why = (
                f"a poll was launched at {_at(last_launch_at)} and may have polled before it "
                "stopped; waiting one poll interval after it"
                if last_launch_at is not None
                else "GitHub's X-Poll-Interval"
            )
        wait_s = (allowed_at - now).total_seconds()
        return Decision(
            False,
            f"next poll allowed at {_at(allowed_at)} (in {wait_s:.0f}s): {why}",
            allowed_at,
        )
    return Decision(True, "poll allowed", allowed_at)


def state_after_poll(
    previous: PollState,
    poll: PollResult,
    *,
    poll_id: str,
    requests: int | None = None,
    share: int = 1,
) -> PollState:
    """The state to save once a poll's rows are committed (`share`: see plan_next_poll)."""
    interval = poll.poll_interval_s or DEFAULT_POLL_INTERVAL_S
    first = poll.first
    rate = poll.rate_limit
    cost = requests if requests is not None else len(poll.pages)
    next_at, reason = plan_next_poll(
        started_at=poll.started_at,
        interval_s=interval,
        rate=rate,
        cost=cost,
        now=poll.pages[-1].requested_at,
        share=share,
    )
    return previous.with_(
        etag=poll.etag if first.status in (200, 304) and poll.etag else previous.etag,
        last_poll_id=poll_id,
        last_poll_started_at=poll.started_at,
        last_status=first.status,
        poll_interval_s=interval,
        next_poll_at=next_at,
        rate_limit_limit=rate.limit,
        rate_limit_remaining=rate.remaining,
        rate_limit_reset_at=rate.reset_at,
        reason=reason,
        last_poll_requests=cost,
        secondary_limit_hits=0,
        consecutive_failures=0,
        last_error=None,
    )


def state_after_refusal(
    previous: PollState, page: PageResult, *, poll_id: str, started_at: datetime, requests: int
) -> PollState:
    """GitHub answered 403/429: no request until it allows one. The ETag stays as it was."""
    now = page.requested_at
    rate = page.rate_limit
    status = page.status
    waits: list[tuple[datetime, str]] = []
    hits = previous.secondary_limit_hits
    if page.retry_after_s is not None:
        waits.append(
            (
                now + timedelta(seconds=page.retry_after_s),
                f"HTTP {status} with retry-after {page.retry_after_s}s",
            )
        )
    if rate.remaining == 0 and rate.reset_at is not None:
        reset_at = rate.reset_at + timedelta(seconds=RESET_SKEW_S)
        waits.append(
            (
                reset_at,
                f"HTTP {status}: rate limit of {rate.limit if rate.limit is not None else '?'} "
                f"requests spent (x-ratelimit-remaining 0); no request until the reset at "
                f"{_at(reset_at)}",
            )
        )
    if not waits:
        # A secondary rate limit: no header says how long, so back off exponentially from 60 s.
        hits += 1
        wait_s = min(SECONDARY_MAX_S, SECONDARY_MIN_S * 2 ** (hits - 1))
        waits.append(
            (
                now + timedelta(seconds=wait_s),
                f"HTTP {status} without retry-after or x-ratelimit-remaining 0 (secondary rate "
                f"limit, {hits} in a row): backing off {wait_s}s",
            )
        )
    until, reason = max(waits, key=lambda w: w[0])
    interval = previous.poll_interval_s or DEFAULT_POLL_INTERVAL_S
    until = max(until, started_at + timedelta(seconds=interval))
    return previous.with_(
        last_poll_id=poll_id,
        last_poll_started_at=started_at,
        last_status=status,
        next_poll_at=until,
        rate_limit_limit=rate.limit if rate.limit is not None else previous.rate_limit_limit,
        rate_limit_remaining=rate.remaining,
        rate_limit_reset_at=rate.reset_at,
        reason=reason,
        last_poll_requests=requests,
        secondary_limit_hits=hits,
        last_error=reason,
    )


def state_after_failure(
    previous: PollState,
    *,
    poll_id: str,
    started_at: datetime,
    page: PageResult | None,
    error: str,
    requests: int,
    now: datetime,
) -> PollState:
    """A poll failed after its retries: keep the ETag, try again later, more slowly each time."""
    failures = previous.consecutive_failures + 1
    interval = previous.poll_interval_s or DEFAULT_POLL_INTERVAL_S
    backoff_s = min(FAILURE_BACKOFF_MAX_S, interval * 2 ** (failures - 1))
    backoff_s = max(backoff_s, interval)
    rate = page.rate_limit if page is not None else RateLimit()
    next_at, plan_reason = plan_next_poll(
        started_at=started_at,
        interval_s=backoff_s,
        rate=rate,
        cost=requests,
        now=now,
        interval_reason=f"a {backoff_s}s pause",
    )
    return previous.with_(
        last_poll_id=poll_id,
        last_poll_started_at=started_at,
        last_status=page.status if page is not None else 0,
        next_poll_at=next_at,
        rate_limit_remaining=rate.remaining
        if rate.remaining is not None
        else previous.rate_limit_remaining,
        rate_limit_reset_at=rate.reset_at
        if rate.reset_at is not None
        else previous.rate_limit_reset_at,
        reason=f"last poll failed ({failures} in a row: {error}); next try after {plan_reason}",
        last_poll_requests=requests,
        consecutive_failures=failures,
        last_error=error,
    )
