"""Watched repositories (GH_PIPELINE_REPOS): which feeds are due, in what order, and one round of
polls (no Dagster import).

Every feed, the global `/events` and each watched repository's `/repos/{owner}/{repo}/events`, has
its own poll state file (ETag, X-Poll-Interval, next allowed poll) and is polled by the same
`ingest.poll_once`. They share one rate budget: each plans its next poll with a 1/N share of what
is left until the reset (polling.plan_next_poll), and a round polls the due feeds least recently
polled first, stopping when only the reserve is left, so when the budget cannot serve every
repository at its interval they take turns and none runs dry.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from gh_pipeline import settings
from gh_pipeline.live import coverage, ingest, poll_state, polling
from gh_pipeline.live.github_client import GitHubEventsClient
from gh_pipeline.live.poll_state import PollState

# Unauthenticated, 60 requests an hour: the global feed and two repositories at one request per
# poll already need one poll every ~3 minutes each; more than that cannot be kept complete.
UNAUTHENTICATED_MAX_REPOS = 2
UNAUTHENTICATED_LIMIT = 60

_NEVER = datetime.min.replace(tzinfo=UTC)


def feeds(repos: Sequence[str]) -> list[ingest.Feed]:
    return [ingest.GLOBAL_FEED, *(ingest.Feed(repo) for repo in repos)]


def load_states(state_dir: Path, repos: Sequence[str]) -> dict[ingest.Feed, PollState]:
    return {f: poll_state.load_state(state_dir, f.state_name) for f in feeds(repos)}


def least_recently_polled(states: dict[ingest.Feed, PollState]) -> list[ingest.Feed]:
    """Never polled first, then by the start of their last poll; the global feed first on ties."""
    order = list(states)
    return sorted(order, key=lambda f: (states[f].last_poll_started_at or _NEVER, order.index(f)))


def due_feeds(
    states: dict[ingest.Feed, PollState], *, now: datetime, lead_s: float
) -> list[ingest.Feed]:
    """Feeds allowed to poll by `now + lead_s`, least recently polled first."""
    limit = now + timedelta(seconds=lead_s)
    return [
        f
        for f in least_recently_polled(states)
        if states[f].next_poll_at is None or states[f].next_poll_at <= limit
    ]


def freshest_budget(states: dict[ingest.Feed, PollState]) -> PollState | None:
    """The state whose last response is the newest: its rate-limit headers describe the budget
    every feed shares."""
    known = [s for s in states.values() if s.rate_limit_remaining is not None]
    return max(known, key=lambda s: s.last_poll_started_at or _NEVER) if known else None


def budget_warnings(
    *, repos: Sequence[str], errors: Sequence[str], authenticated: bool | None
) -> list[str]:
    """What the user must be told: refused entries, and a token when the budget is too small."""
    out = list(errors)
    if authenticated is False and len(repos) > UNAUTHENTICATED_MAX_REPOS:
        out.append(
            f"{len(repos)} watched repositories without GITHUB_TOKEN: {UNAUTHENTICATED_LIMIT} "
            f"requests an hour cannot keep more than {UNAUTHENTICATED_MAX_REPOS} complete; they "
            "take turns and may show gaps. Set GITHUB_TOKEN (5,000 requests an hour)."
        )
    return out


def _at(t: datetime | None) -> str:
    return t.isoformat(timespec="seconds") if t is not None else "-"


def repo_rows(states: dict[ingest.Feed, PollState], *, now: datetime) -> list[dict[str, Any]]:
    """One row per watched repository from its state file (what the sensor may read)."""
    rows = []
    for feed, state in states.items():
        if feed.repo is None:
            continue
        if state.unavailable:
            status = "unavailable"
        elif state.renamed_to:
            status = f"renamed to {state.renamed_to}"
        elif state.last_poll_started_at is None:
            status = "waiting for its first poll"
        elif state.complete_since is not None:
            status = "complete"
        else:
            status = "polled"
        wait = (
            f" (in {(state.next_poll_at - now).total_seconds():.0f}s)"
            if state.next_poll_at is not None and state.next_poll_at > now
            else ""
        )
        rows.append(
            {
                "repository": feed.repo,
                "status": status,
                "last_poll": _at(state.last_poll_started_at),
                "next_poll": (_at(state.next_poll_at) + wait) if state.next_poll_at else "now",
                "complete_since": _at(state.complete_since),
                "gaps": state.gaps,
                "last_error": state.last_error or "",
            }
        )
    return rows


def rows_text(rows: Sequence[dict[str, Any]]) -> str:
    """One line per repository, for sensor skip reasons and logs."""
    return "\n".join(
        f"{r['repository']}: {r['status']}; last poll {r['last_poll']}, next {r['next_poll']},"
        f" complete since {r['complete_since']}, {r['gaps']} gap(s)"
        + (f"; last error: {r['last_error']}" if r["last_error"] else "")
        for r in rows
    )


def rows_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The same as a Markdown table, for run and asset metadata in the Dagster UI."""
    header = "| repository | status | last poll | next poll | complete since | gaps | last error |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [
            r["repository"],
            r["status"],
            r["last_poll"],
            r["next_poll"],
            r["complete_since"],
            str(r["gaps"]),
            r["last_error"],
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


@dataclass(frozen=True)
class RoundOutcome:
    """What one round did: a poll outcome or an error per feed polled, and the feeds left for
    the next round because only the budget's reserve was left."""

    outcomes: dict[ingest.Feed, ingest.PollOutcome] = field(default_factory=dict)
    errors: dict[ingest.Feed, str] = field(default_factory=dict)
    deferred: tuple[ingest.Feed, ...] = ()
    global_error: ingest.PollFailed | None = None


def poll_round(
    *,
    client: GitHubEventsClient,
    conn: duckdb.DuckDBPyConnection,
    data_dir: Path,
    run_id: str,
    repos: Sequence[str],
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], None] | None = None,
    max_wait_s: float = ingest.MAX_WAIT_S,
) -> RoundOutcome:
    """Poll every feed that is due (the global feed and the watched repositories), least
    recently polled first. One repository's failure (a 404, a fault, a refusal) does not stop
    the others; a refusal stops the round, since the budget is shared. Raises PollNotAllowed
    when no feed may poll within `max_wait_s`."""
    coverage.sync_watch_list(conn, repos)
    state_dir = settings.state_dir(data_dir)
    states = load_states(state_dir, repos)
    share = len(states)
    due = due_feeds(states, now=now(), lead_s=polling.LAUNCH_LEAD_S)
    if not due:
        # Launched early (by hand, say): wait for the first feed allowed, as a global poll would.
        first = min(states, key=lambda f: states[f].next_poll_at or _NEVER)
        due = [first]
    outcomes: dict[ingest.Feed, ingest.PollOutcome] = {}
    errors: dict[ingest.Feed, str] = {}
    global_error: ingest.PollFailed | None = None
    deferred: list[ingest.Feed] = []
    kwargs: dict[str, Any] = {"now": now, "max_wait_s": max_wait_s}
    if sleep is not None:
        kwargs["sleep"] = sleep
    remaining = states_remaining(states)
    for number, feed in enumerate(due):
        if remaining is not None and remaining - polling.BUDGET_RESERVE < 1:
            deferred.extend(due[number:])
            break
        try:
            outcome = ingest.poll_once(
                client=client,
                conn=conn,
                data_dir=data_dir,
                poll_id=feed.poll_id(run_id),
                feed=feed,
                share=share,
                **kwargs,
            )
        except ingest.PollNotAllowed:
            if len(due) == 1:
                raise
            continue
        except ingest.PollFailed as exc:
            errors[feed] = str(exc)
            if feed.repo is None:
                global_error = exc
            if isinstance(exc, ingest.PollRefused):
                deferred.extend(due[number + 1 :])
                break
            continue
        outcomes[feed] = outcome
        if outcome.rate_limit_remaining is not None:
            remaining = outcome.rate_limit_remaining
    return RoundOutcome(outcomes, errors, tuple(deferred), global_error)


def states_remaining(states: dict[ingest.Feed, PollState]) -> int | None:
    """Requests left in the shared budget, as the newest response said (None when unknown or
    when its window has reset since)."""
    fresh = freshest_budget(states)
    if fresh is None or fresh.rate_limit_reset_at is None:
        return None
    if fresh.rate_limit_reset_at <= datetime.now(UTC):
        return None
    return fresh.rate_limit_remaining
