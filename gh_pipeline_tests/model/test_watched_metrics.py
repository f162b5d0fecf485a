"""Metrics that say what they rest on: a watched repository's pr_intervals and repo_pr_counts equal
the values computed from every event its feed released, and are labelled complete; the same
repository seen only through the global feed (a sample of the same events) gives a different
figure, labelled a sample. Real Dagster runs of the poll job against the fake GitHub, real
DuckDB files, read back through the query module."""

import itertools
import math
import random
import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import pytest

from gh_pipeline import settings
from gh_pipeline.live import poll_state, watched
from gh_pipeline.live.github_client import GitHubEventsClient
from gh_pipeline.model import metrics
from gh_pipeline.read import query
from gh_pipeline_tests.support.fake_github import FakeGitHub, numbered_feed, repo_feed

REPO = "o/watched"
OTHER = "x/other"


def _with_prs(events: list[dict[str, Any]], rng: random.Random, newest: datetime) -> None:
    """Every other event becomes an opened pull request (today's trimmed payload); times step
    back irregularly so the intervals differ."""
    at = newest
    for i, event in enumerate(events):
        if i % 2 == 0:
            number = int(event["id"][-5:])
            event["type"] = "PullRequestEvent"
            event["payload"] = {
                "action": "opened",
                "number": number,
                "pull_request": {"id": number, "number": number, "url": f"u/{number}"},
            }
        event["created_at"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        at -= timedelta(seconds=rng.randint(5, 300))


def _python_intervals(events: list[dict[str, Any]]) -> tuple[int, float, float, float]:
    opened = sorted(
        datetime.fromisoformat(e["created_at"])
        for e in events
        if e["type"] == "PullRequestEvent" and e["payload"].get("action") == "opened"
    )
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(opened)]
    ordered = sorted(gaps)
    pos = 0.9 * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    p90 = ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
    return len(opened), statistics.fmean(gaps), statistics.median(gaps), p90


def _run_poll_job(data_dir: Path, monkeypatch: pytest.MonkeyPatch, repos: str) -> None:
    """One real run of the poll job (raw_events and everything downstream of it)."""
    with monkeypatch.context() as mp:
        mp.setenv(settings.ENV_DATA_DIR, str(data_dir))
        if repos:
            mp.setenv(settings.ENV_REPOS, repos)
        else:
            mp.delenv(settings.ENV_REPOS, raising=False)
        from gh_pipeline.definitions import defs

        job = defs().resolve_job_def("poll_github_events")
        result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    # The next round now, not after X-Poll-Interval: the test does not wait out 60 s.
    state_dir = settings.state_dir(data_dir)
    for feed in watched.feeds([REPO] if repos else []):
        state = poll_state.load_state(state_dir, feed.state_name)
        poll_state.save_state(state_dir, state.with_(next_poll_at=None), feed.state_name)


def test_a_watched_repository_gets_the_exact_figure_and_the_global_feed_a_labelled_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    rng = random.Random(13)
    watched_dir, global_dir = tmp_path / "watched", tmp_path / "global-only"
    now = datetime.now(UTC).replace(microsecond=0)
    with FakeGitHub([], poll_interval=60) as fake:
        monkeypatch.setenv(settings.ENV_API_URL, fake.url)
        fake.add_repo(REPO)
        newest = now - timedelta(days=2)
        for serial, size in enumerate((120, 90), start=1):
            batch = repo_feed(REPO, size, serial=serial)
            _with_prs(batch, rng, newest)
            newest += timedelta(hours=12)
            fake.push_repo(REPO, batch)
            # The global feed shows every fourth of them, among other repositories' events.
            noise = numbered_feed(40, serial=100 + serial, newest=newest)
            _with_prs(noise, rng, newest)
            fake.push(sorted(batch[::4] + noise, key=lambda e: e["created_at"], reverse=True))
            _run_poll_job(watched_dir, monkeypatch, REPO)
            _run_poll_job(global_dir, monkeypatch, "")
        released = list(fake.repos[REPO.lower()].events)

    count, mean, median, p90 = _python_intervals(released)
    (row,) = query.pr_intervals(REPO, with_completeness=True, data_dir=watched_dir).to_dict(
        "records"
    )
    assert row["completeness"] == "complete"
    assert row["pr_opened"] == count > 90
    assert row["avg_interval_s"] == pytest.approx(mean, rel=1e-9)
    assert row["median_interval_s"] == pytest.approx(median, rel=1e-9)
    assert row["p90_interval_s"] == pytest.approx(p90, rel=1e-9)
    oldest = min(datetime.fromisoformat(e["created_at"]) for e in released)
    assert row["complete_since"] == oldest
    (counts,) = [
        r
        for r in query.repo_pr_counts(with_completeness=True, data_dir=watched_dir).to_dict(
            "records"
        )
        if r["repo_name"] == REPO
    ]
    assert counts["completeness"] == "complete"
    assert counts["pr_events"] == sum(1 for e in released if e["type"] == "PullRequestEvent")
    # Other repositories in the same warehouse are samples of the global feed.
    others = query.pr_intervals(with_completeness=True, data_dir=watched_dir)
    assert set(others[others["repo_name"] != REPO]["completeness"]) == {"sample"}

    (sample,) = query.pr_intervals(REPO, with_completeness=True, data_dir=global_dir).to_dict(
        "records"
    )
    assert sample["completeness"] == "sample"
    assert pd.isna(sample["complete_since"])
    assert sample["pr_opened"] < count
    assert sample["avg_interval_s"] != pytest.approx(mean, rel=1e-3)
    # Without the keyword the columns are the ones the query module always returned.
    assert list(query.pr_intervals(REPO, data_dir=global_dir).columns) == list(
        query.PR_INTERVALS_COLUMNS
    )


def test_with_covered_repositories_the_incremental_path_equals_the_full_rebuild(
    conn: duckdb.DuckDBPyConnection, data_dir: Path
) -> None:
    rng = random.Random(7)
    now = datetime.now(UTC).replace(microsecond=0)
    with FakeGitHub([], poll_interval=60) as fake:
        fake.add_repo(REPO)
        with GitHubEventsClient(api_url=fake.url) as client:
            for serial in range(1, 4):
                batch = repo_feed(REPO, 60, serial=serial)
                _with_prs(batch, rng, now - timedelta(hours=12 * (4 - serial)))
                fake.push_repo(REPO, batch)
                sample = numbered_feed(30, serial=50 + serial, newest=now)
                _with_prs(sample, rng, now - timedelta(hours=12 * (4 - serial)))
                # Events of the watched repository the global feed stored before the watch
                # began: a complete row must leave them out.
                early = repo_feed(REPO, 6, serial=90 + serial)
                _with_prs(early, rng, now - timedelta(days=20 - serial))
                fake.push(sample + early)
                watched.poll_round(
                    client=client,
                    conn=conn,
                    data_dir=data_dir,
                    run_id=f"r{serial}",
                    repos=[REPO] if serial > 1 else [],
                )
                metrics.refresh_all(conn, as_of=now)
                for feed in watched.feeds([REPO]):
                    state_dir = settings.state_dir(data_dir)
                    state = poll_state.load_state(state_dir, feed.state_name)
                    poll_state.save_state(
                        state_dir, state.with_(next_poll_at=None), feed.state_name
                    )

    def table(name: str) -> list[tuple]:
        return conn.execute(f"SELECT * FROM {name} ORDER BY repo_name").fetchall()

    incremental = {t: table(t) for t in (metrics.PR_INTERVALS, metrics.REPO_PR_COUNTS)}
    metrics.rebuild_metrics(conn, as_of=now)
    assert {t: table(t) for t in incremental} == incremental
    row = conn.execute(
        "SELECT pr_opened, completeness, complete_since FROM pr_intervals WHERE repo_name = $r",
        {"r": REPO},
    ).fetchone()
    stored_opened = conn.execute(
        "SELECT count(*) FROM pull_request_events WHERE repo_name = $r AND action = 'opened'",
        {"r": REPO},
    ).fetchone()
    assert row is not None and stored_opened is not None
    assert row[1] == "complete"
    # The early sampled events are stored, but the complete row rests only on its period.
    assert row[0] < stored_opened[0]
