"""When may we poll? Pure decisions for the sensor and the poll asset (no Dagster import)."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from gh_pipeline.models import DEFAULT_POLL_INTERVAL_S, PollResult
from gh_pipeline.poll_state import PollState

# The sensor launches a run this long before the poll is allowed; the run waits out the rest,
# so the request goes out within a second or two of the allowed moment despite process start-up.
LAUNCH_LEAD_S = 10


@dataclass(frozen=True)
class Decision:
    poll: bool
    reason: str
    next_poll_at: datetime | None


def next_allowed(state: PollState, *, last_launch_at: datetime | None) -> datetime | None:
    candidates = [t for t in (state.next_poll_at,) if t is not None]
    if last_launch_at is not None:
        # A launched run may have polled and died before saving state; assume it did.
        candidates.append(last_launch_at + timedelta(seconds=DEFAULT_POLL_INTERVAL_S))
    return max(candidates) if candidates else None


def decide(
    state: PollState, *, now: datetime, last_launch_at: datetime | None, in_flight: bool
) -> Decision:
    allowed_at = next_allowed(state, last_launch_at=last_launch_at)
    if in_flight:
        return Decision(False, "a poll is already in flight", allowed_at)
    if allowed_at is not None and now < allowed_at - timedelta(seconds=LAUNCH_LEAD_S):
        why = state.reason or "GitHub's X-Poll-Interval"
        return Decision(False, f"next poll allowed at {allowed_at.isoformat()} ({why})", allowed_at)
    return Decision(True, "poll allowed", allowed_at)


def state_after_poll(previous: PollState, poll: PollResult, *, poll_id: str) -> PollState:
    """The state to save once a poll's rows are committed."""
    interval = poll.poll_interval_s or DEFAULT_POLL_INTERVAL_S
    first = poll.first
    rate = poll.rate_limit
    return previous.with_(
        etag=poll.etag if first.status in (200, 304) and poll.etag else previous.etag,
        last_poll_id=poll_id,
        last_poll_started_at=poll.started_at,
        last_status=first.status,
        poll_interval_s=interval,
        next_poll_at=poll.started_at + timedelta(seconds=interval),
        rate_limit_limit=rate.limit,
        rate_limit_remaining=rate.remaining,
        rate_limit_reset_at=rate.reset_at,
        reason=f"X-Poll-Interval {interval}s",
    )
