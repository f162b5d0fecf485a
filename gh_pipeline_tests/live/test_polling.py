"""Pure polling decisions with controlled time: budget pacing, refusals, backoff, the sensor rule."""

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gh_pipeline.live import poll_state, polling
from gh_pipeline.live.github_client import FeedPoll
from gh_pipeline.live.models import PageResult, RateLimit
from gh_pipeline.live.poll_state import PollState

T0 = datetime(2025, 11, 3, 12, 0, 0, tzinfo=UTC)


def _s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def _page(
    status: int = 200,
    *,
    at: datetime = T0,
    page: int = 1,
    remaining: int | None = None,
    limit: int | None = 60,
    reset_in_s: float | None = 3600,
    retry_after_s: int | None = None,
    etag: str | None = None,
    interval: int | None = 60,
) -> PageResult:
    return PageResult(
        page=page,
        status=status,
        requested_at=at,
        etag=etag,
        poll_interval_s=interval,
        rate_limit=RateLimit(
            limit=limit,
            remaining=remaining,
            used=None,
            reset_at=at + _s(reset_in_s) if reset_in_s is not None else None,
        ),
        retry_after_s=retry_after_s,
    )


# -- the rate budget ------------------------------------------------------------------------


def test_authenticated_budget_leaves_the_poll_interval_in_charge() -> None:
    rate = RateLimit(limit=5000, remaining=4997, reset_at=T0 + _s(3600))
    at, reason = polling.plan_next_poll(started_at=T0, interval_s=60, rate=rate, cost=3, now=T0)
    assert at == T0 + _s(60)
    assert reason == "X-Poll-Interval 60s"


def test_unauthenticated_three_page_polls_are_spaced_to_last_the_hour() -> None:
    # 57 left after a 3-page poll, 3 kept in reserve: 54 / 3 = 18 polls over 3600 s -> 200 s.
    rate = RateLimit(limit=60, remaining=57, reset_at=T0 + _s(3600))
    at, reason = polling.plan_next_poll(started_at=T0, interval_s=60, rate=rate, cost=3, now=T0)
    assert at == T0 + _s(200)
    assert "57 of 60 requests left" in reason and "one poll every 200s" in reason


def test_unauthenticated_one_page_polls_run_slightly_slower_than_the_interval() -> None:
    # 59 left, 56 usable, one request per poll: 3600 / 56 = 64.3 s, a little over X-Poll-Interval.
    rate = RateLimit(limit=60, remaining=59, reset_at=T0 + _s(3600))
    at, _ = polling.plan_next_poll(started_at=T0, interval_s=60, rate=rate, cost=1, now=T0)
    assert at == T0 + _s(3600 / 56)


def test_budget_below_the_reserve_waits_for_the_reset() -> None:
    rate = RateLimit(limit=60, remaining=3, reset_at=T0 + _s(900))
    at, reason = polling.plan_next_poll(started_at=T0, interval_s=60, rate=rate, cost=1, now=T0)
    assert at == T0 + _s(900 + polling.RESET_SKEW_S)
    assert "no request until the budget resets at 2025-11-03T12:15:01+00:00" in reason


def test_a_past_reset_means_a_fresh_budget() -> None:
    rate = RateLimit(limit=60, remaining=0, reset_at=T0 - _s(5))
    at, _ = polling.plan_next_poll(started_at=T0, interval_s=60, rate=rate, cost=3, now=T0)
    assert at == T0 + _s(60)


def _simulate_hour(costs: list[int], *, limit: int = 60) -> list[tuple[datetime, int]]:
    """Poll as the plan allows for one rate-limit window; returns (time, remaining after)."""
    reset = T0 + _s(3600)
    remaining = limit
    now = T0
    polls = []
    i = 0
    while now < reset:
        cost = costs[i % len(costs)]
        i += 1
        remaining -= cost
        assert remaining >= 0, f"budget ran dry at poll {i}"
        polls.append((now, remaining))
        rate = RateLimit(limit=limit, remaining=remaining, reset_at=reset)
        now, _ = polling.plan_next_poll(
            started_at=now, interval_s=60, rate=rate, cost=cost, now=now
        )
    return polls


def test_the_unauthenticated_budget_lasts_until_the_reset_and_never_runs_dry() -> None:
    # The naive schedule, 3 pages every 60 s, spends the 60 requests in 20 minutes.
    assert 60 // 3 * 60 == 1200
    for costs in ([3], [1], [3, 1, 1], [1, 1, 3, 2], [2]):
        polls = _simulate_hour(costs)
        last_at, _ = polls[-1]
        # Never dry: even a 3-page poll started on the last allowed budget leaves requests over.
        assert min(remaining for _, remaining in polls) >= 1, costs
        # Spread over the whole window, not front-loaded: the last poll is in its final stretch.
        assert last_at >= T0 + _s(3000), (costs, last_at)
        gaps = [(b - a).total_seconds() for (a, _), (b, _) in itertools.pairwise(polls)]
        assert min(gaps) >= 60, costs


def test_three_page_polls_get_about_eighteen_polls_an_hour() -> None:
    polls = _simulate_hour([3])
    assert 17 <= len(polls) <= 19


# -- state after a poll ----------------------------------------------------------------------


def _poll(*pages: PageResult, requests: int | None = None) -> FeedPoll:
    return FeedPoll(
        started_at=pages[0].requested_at,
        pages=tuple(pages),
        reached_known=False,
        requests=requests or len(pages),
    )


def test_state_after_a_poll_saves_etag_plan_and_clears_backoff() -> None:
    previous = PollState(etag='W/"old"', secondary_limit_hits=3, consecutive_failures=2)
    poll = _poll(
        _page(etag='W/"new"', remaining=59),
        _page(page=2, remaining=58),
        _page(page=3, remaining=57),
    )
    state = polling.state_after_poll(previous, poll, poll_id="run-1", requests=3)
    assert state.etag == 'W/"new"'
    assert state.next_poll_at == T0 + _s(200)
    assert state.rate_limit_remaining == 57 and state.last_poll_requests == 3
    assert state.secondary_limit_hits == 0 and state.consecutive_failures == 0


def test_a_304_keeps_the_etag_and_counts_as_a_request() -> None:
    previous = PollState(etag='W/"same"')
    poll = _poll(_page(304, etag='W/"same"', remaining=50))
    state = polling.state_after_poll(previous, poll, poll_id="run-2")
    assert state.etag == 'W/"same"' and state.last_poll_requests == 1
    # 47 usable, one request per poll: 3600/47 s, more than the 60 s interval.
    assert state.next_poll_at == T0 + _s(3600 / 47)


# -- refusals --------------------------------------------------------------------------------


def test_primary_rate_limit_means_no_request_until_reset() -> None:
    page = _page(403, remaining=0, reset_in_s=1800)
    state = polling.state_after_refusal(
        PollState(etag="e"), page, poll_id="r", started_at=T0, requests=1
    )
    assert state.next_poll_at == T0 + _s(1800 + polling.RESET_SKEW_S)
    assert state.etag == "e"
    assert "x-ratelimit-remaining 0" in (state.reason or "")


def test_retry_after_is_obeyed() -> None:
    page = _page(429, remaining=40, retry_after_s=300)
    state = polling.state_after_refusal(PollState(), page, poll_id="r", started_at=T0, requests=1)
    assert state.next_poll_at == T0 + _s(300)
    assert state.reason == "HTTP 429 with retry-after 300s"
    assert state.secondary_limit_hits == 0


def test_retry_after_and_exhausted_budget_wait_for_the_later_of_both() -> None:
    page = _page(403, remaining=0, reset_in_s=100, retry_after_s=500)
    state = polling.state_after_refusal(PollState(), page, poll_id="r", started_at=T0, requests=1)
    assert state.next_poll_at == T0 + _s(500)


def test_secondary_limit_backs_off_from_60s_exponentially_across_restarts(tmp_path: Path) -> None:
    waits = []
    now = T0
    for _ in range(8):
        # Each refusal is handled by a fresh process: the state goes through the file.
        state = poll_state.load_state(tmp_path)
        page = _page(403, at=now, remaining=42)
        state = polling.state_after_refusal(state, page, poll_id="r", started_at=now, requests=1)
        poll_state.save_state(tmp_path, state)
        assert state.next_poll_at is not None
        waits.append((state.next_poll_at - now).total_seconds())
        now = state.next_poll_at
    assert waits == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert "secondary rate limit, 8 in a row" in (poll_state.load_state(tmp_path).reason or "")
    # A good poll ends the backoff.
    ok = polling.state_after_poll(
        poll_state.load_state(tmp_path), _poll(_page(at=now, remaining=41)), poll_id="ok"
    )
    assert ok.secondary_limit_hits == 0


def test_a_refusal_never_allows_a_poll_sooner_than_the_interval() -> None:
    page = _page(429, retry_after_s=1, remaining=30)
    state = polling.state_after_refusal(
        PollState(poll_interval_s=60), page, poll_id="r", started_at=T0, requests=1
    )
    assert state.next_poll_at == T0 + _s(60)


# -- failures --------------------------------------------------------------------------------


def test_failed_polls_keep_the_etag_and_slow_down() -> None:
    state = PollState(etag="keep", poll_interval_s=60)
    waits = []
    for _ in range(5):
        state = polling.state_after_failure(
            state,
            poll_id="f",
            started_at=T0,
            page=_page(502, remaining=4000, limit=5000),
            error="GET /events page 1 failed after 4 attempts; last: HTTP 502",
            requests=4,
            now=T0,
        )
        assert state.next_poll_at is not None
        waits.append((state.next_poll_at - T0).total_seconds())
    assert state.etag == "keep"
    assert waits == [60, 120, 240, 300, 300]
    assert state.consecutive_failures == 5
    assert (state.reason or "").startswith("last poll failed (5 in a row: GET /events page 1")


# -- the sensor's rule ------------------------------------------------------------------------


def test_decide_polls_when_nothing_is_known() -> None:
    decision = polling.decide(PollState(), now=T0, last_launch_at=None, in_flight=False)
    assert decision.poll


def test_decide_skips_with_when_and_why() -> None:
    state = PollState(next_poll_at=T0 + _s(200), reason="rate budget: 57 of 60 requests left")
    decision = polling.decide(state, now=T0, last_launch_at=None, in_flight=False)
    assert not decision.poll
    assert decision.reason == (
        "next poll allowed at 2025-11-03T12:03:20+00:00 (in 200s): "
        "rate budget: 57 of 60 requests left"
    )


def test_decide_launches_shortly_before_the_allowed_moment() -> None:
    state = PollState(next_poll_at=T0 + _s(60))
    just_before = T0 + _s(60 - polling.LAUNCH_LEAD_S - 1)
    at_lead = T0 + _s(60 - polling.LAUNCH_LEAD_S)
    assert not polling.decide(state, now=just_before, last_launch_at=None, in_flight=False).poll
    assert polling.decide(state, now=at_lead, last_launch_at=None, in_flight=False).poll


def test_decide_never_overlaps_polls() -> None:
    decision = polling.decide(
        PollState(), now=T0, last_launch_at=None, in_flight=True, in_flight_detail="run abc"
    )
    assert not decision.poll and decision.reason == "a poll is already in flight (run abc)"


def test_decide_assumes_a_launched_run_polled_even_if_it_saved_nothing() -> None:
    # The last launch died before saving state (kill -9): wait one interval after its launch.
    decision = polling.decide(
        PollState(next_poll_at=T0 - _s(30)), now=T0, last_launch_at=T0 - _s(20), in_flight=False
    )
    assert not decision.poll
    assert decision.next_poll_at == T0 + _s(40)
    assert "a poll was launched at 2025-11-03T11:59:40+00:00" in decision.reason
