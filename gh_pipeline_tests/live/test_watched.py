"""Watched repositories against the fake GitHub and a real DuckDB file: the GH_PIPELINE_REPOS list,
per-repository polling with its own ETag and X-Poll-Interval, the shared budget, 404 and 301,
events stored once by id, and coverage (complete since, gaps)."""

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from gh_pipeline import settings, warehouse
from gh_pipeline.live import coverage, ingest, poll_state, watched
from gh_pipeline.live.github_client import GitHubEventsClient
from gh_pipeline_tests.support.fake_github import FakeGitHub, Fault, repo_feed


def _no_sleep(seconds: float) -> None:
    pass


def _round(
    fake: FakeGitHub,
    conn: duckdb.DuckDBPyConnection,
    data_dir: Path,
    repos: list[str],
    run_id: str,
    *,
    token: str | None = None,
    sleep=_no_sleep,
    now=None,
) -> watched.RoundOutcome:
    kwargs = {"now": now} if now is not None else {}
    with GitHubEventsClient(
        api_url=fake.url, token=token, retry_base_s=0.001, sleep=_no_sleep
    ) as client:
        return watched.poll_round(
            client=client,
            conn=conn,
            data_dir=data_dir,
            run_id=run_id,
            repos=repos,
            sleep=sleep,
            **kwargs,
        )


def _allow_now(data_dir: Path, repos: list[str]) -> None:
    """Pretend every feed's interval has passed (tests do not wait out 60 s)."""
    state_dir = settings.state_dir(data_dir)
    for feed in watched.feeds(repos):
        state = poll_state.load_state(state_dir, feed.state_name)
        poll_state.save_state(state_dir, state.with_(next_poll_at=None), feed.state_name)


def _ids(conn: duckdb.DuckDBPyConnection, repo: str | None = None) -> list[str]:
    sql = "SELECT event_id FROM raw_events"
    params = {}
    if repo is not None:
        sql += " WHERE repo_name = $repo"
        params["repo"] = repo
    return sorted(r[0] for r in conn.execute(sql, params).fetchall())


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    with FakeGitHub([], poll_interval=60) as server:
        yield server


# -- naming the repositories ------------------------------------------------------------------
def test_the_list_takes_commas_and_whitespace_and_refuses_bad_entries_by_name() -> None:
    watch = settings.watched_repos(
        "duckdb/duckdb, pola-rs/polars\n\tnot-a-repo  a/b/c -bad/x ok/.."
    )
    assert watch.repos == ("duckdb/duckdb", "pola-rs/polars")
    assert len(watch.errors) == 4
    for entry, message in zip(
        ["not-a-repo", "a/b/c", "-bad/x", "ok/.."], watch.errors, strict=True
    ):
        assert f"'{entry}'" in message and settings.ENV_REPOS in message


def test_repeats_are_dropped_case_insensitively_and_unset_means_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert settings.watched_repos("a/b A/B a/b").repos == ("a/b",)
    monkeypatch.delenv(settings.ENV_REPOS, raising=False)
    assert settings.watched_repos() == settings.WatchList()
    monkeypatch.setenv(settings.ENV_REPOS, "x/y")
    assert settings.watched_repos().repos == ("x/y",)


# -- the fake's repository feeds --------------------------------------------------------------
def test_the_fake_serves_repository_feeds_like_github(fake: FakeGitHub) -> None:
    fake.add_repo("o/busy", repo_feed("o/busy", 350, serial=1), poll_interval=30)
    fake.add_repo("o/quiet", repo_feed("o/quiet", 5, serial=2), poll_interval=90)
    with GitHubEventsClient(api_url=fake.url, sleep=_no_sleep) as client:
        busy = client.poll(etag=None, path="/repos/o/busy/events")
        quiet = client.poll(etag=None, path="/repos/o/quiet/events")
        again = client.poll(etag=quiet.etag, path="/repos/o/quiet/events")
        glob = client.poll(etag=None)
    assert [len(p.events) for p in busy.pages] == [100, 100, 100]  # the 300 cap
    assert busy.first.poll_interval_s == 30 and not busy.feed_exhausted
    assert len(quiet.events) == 5 and quiet.feed_exhausted and quiet.first.poll_interval_s == 90
    assert quiet.etag != busy.etag and again.etag_matched
    assert glob.events == []  # the global feed is separate
    pages = [
        r.query.get("page", ["1"])[0] for r in fake.requests if r.path == "/repos/o/busy/events"
    ]
    assert pages == ["1", "2", "3"]  # followed the Link header


# -- polling them -----------------------------------------------------------------------------
def test_first_poll_brings_the_backlog_then_polls_overlap_and_coverage_grows(
    fake: FakeGitHub, conn: duckdb.DuckDBPyConnection, data_dir: Path
) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0)
    backlog = repo_feed("o/r", 120, serial=1, newest=t0 - timedelta(minutes=5))
    fake.add_repo("o/r", backlog)
    first = _round(fake, conn, data_dir, ["o/r"], "run1")
    repo = ingest.Feed("o/r")
    assert first.outcomes[repo].new == 120 and not first.errors
    cov = coverage.coverage(conn, "o/r")
    assert cov is not None and cov.status == coverage.OK and cov.gaps == 0
    # The whole feed was seen (120 < 300): complete from its oldest event on.
    assert cov.complete_since == min(datetime.fromisoformat(e["created_at"]) for e in backlog)
    fake.push_repo("o/r", repo_feed("o/r", 40, serial=2, newest=t0))
    _allow_now(data_dir, ["o/r"])
    second = _round(fake, conn, data_dir, ["o/r"], "run2")
    assert second.outcomes[repo].new == 40 and second.outcomes[repo].pages == 1
    after = coverage.coverage(conn, "o/r")
    assert after is not None and after.complete_since == cov.complete_since and after.gaps == 0
    assert after.complete_until is not None and after.complete_until > cov.complete_until
    assert len(_ids(conn, "o/r")) == 160
    # Its own ETag: the next poll is a 304 while the global feed's ETag is a different one.
    _allow_now(data_dir, ["o/r"])
    third = _round(fake, conn, data_dir, ["o/r"], "run3")
    assert third.outcomes[repo].etag_matched
    state_dir = settings.state_dir(data_dir)
    assert (
        poll_state.load_state(state_dir, repo.state_name).etag
        != poll_state.load_state(state_dir).etag
    )
    feeds = conn.execute("SELECT DISTINCT feed FROM poll_log ORDER BY feed").fetchall()
    assert feeds == [("/events",), ("/repos/o/r/events",)]


def test_more_than_300_events_between_polls_is_a_recorded_gap(
    fake: FakeGitHub, conn: duckdb.DuckDBPyConnection, data_dir: Path
) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0)
    fake.add_repo("o/r", repo_feed("o/r", 50, serial=1, newest=t0 - timedelta(hours=2)))
    _round(fake, conn, data_dir, ["o/r"], "run1")
    burst = repo_feed("o/r", 400, serial=2, newest=t0, step_s=5)
    fake.push_repo("o/r", burst)
    _allow_now(data_dir, ["o/r"])
    outcome = _round(fake, conn, data_dir, ["o/r"], "run2").outcomes[ingest.Feed("o/r")]
    assert outcome.pages == 3 and outcome.new == 300
    cov = coverage.coverage(conn, "o/r")
    assert cov is not None and cov.gaps == 1
    oldest_got = datetime.fromisoformat(burst[299]["created_at"])
    # Complete again from the second after the oldest event this poll got (the cap may have cut
    # that second in two).
    assert cov.complete_since == oldest_got + timedelta(seconds=1)
    gaps = conn.execute(
        "SELECT repo_name, gap_start, gap_end, pages, events_received FROM watched_repo_gaps"
    ).fetchall()
    assert gaps == [("o/r", t0 - timedelta(hours=2), oldest_got, 3, 300)]
    # The global feed's own gap table is not touched by a repository's gap.
    assert conn.execute("SELECT count(*) FROM poll_gaps").fetchone() == (0,)


def test_events_both_feeds_saw_are_stored_once_and_global_ones_do_not_stop_repo_paging(
    fake: FakeGitHub, conn: duckdb.DuckDBPyConnection, data_dir: Path
) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0)
    fake.add_repo("o/r", repo_feed("o/r", 20, serial=1, newest=t0 - timedelta(hours=1)))
    _round(fake, conn, data_dir, ["o/r"], "run1")
    burst = repo_feed("o/r", 250, serial=2, newest=t0)
    fake.push_repo("o/r", burst)
    # The global feed samples a few of the same events, one of them on the repository's page 1.
    fake.push(burst[5:6] + burst[150:152])
    _allow_now(data_dir, ["o/r"])
    result = _round(fake, conn, data_dir, ["o/r"], "run2")
    glob, repo = result.outcomes[ingest.GLOBAL_FEED], result.outcomes[ingest.Feed("o/r")]
    assert glob.new == 3
    # Page 1 held an event the global feed had just stored; paging went on until page 3 reached
    # the 20 events of the repository's own first poll.
    assert repo.pages == 3 and repo.received == 270
    assert repo.new == 247 and repo.duplicates == 3 + 20
    assert (
        len(_ids(conn))
        == 270
        == conn.execute("SELECT count(DISTINCT event_id) FROM raw_events").fetchone()[0]
    )
    cov = coverage.coverage(conn, "o/r")
    assert cov is not None and cov.gaps == 0


def test_each_repository_waits_its_own_poll_interval(
    fake: FakeGitHub, conn: duckdb.DuckDBPyConnection, data_dir: Path
) -> None:
    fake.poll_interval = 1
    fake.add_repo("o/fast", repo_feed("o/fast", 3, serial=1), poll_interval=1)
    fake.add_repo("o/slow", repo_feed("o/slow", 3, serial=2), poll_interval=2)
    deadline = time.monotonic() + 5.0
    n = 0
    while time.monotonic() < deadline:
        n += 1
        _round(fake, conn, data_dir, ["o/fast", "o/slow"], f"run{n}", sleep=time.sleep)
    for path, interval in (("/repos/o/fast/events", 1), ("/repos/o/slow/events", 2)):
        times = [r.at for r in fake.requests if r.path == path and "page" not in r.query]
        assert len(times) >= 5 / interval - 1
        spacing = [b - a for a, b in itertools.pairwise(times)]
        # The request goes out a moment after the allowed time, never before it.
        assert min(spacing) >= interval - 0.02, (path, spacing)


def test_304s_with_a_token_spend_no_budget_and_leave_the_interval_in_charge(
    fake: FakeGitHub, conn: duckdb.DuckDBPyConnection, data_dir: Path
) -> None:
    repos = [f"o/r{i}" for i in range(5)]
    for i, repo in enumerate(repos):
        fake.add_repo(repo, repo_feed(repo, 10, serial=i + 1))
    _round(fake, conn, data_dir, repos, "run1", token="t0ken")
    spent = fake.rate_limit - fake.remaining
    assert spent == 6  # one 200 per feed: the global feed and five repositories
    _allow_now(data_dir, repos)
    second = _round(fake, conn, data_dir, repos, "run2", token="t0ken")
    assert all(o.etag_matched for o in second.outcomes.values()) and len(second.outcomes) == 6
    assert fake.rate_limit - fake.remaining == spent  # free
    for feed, outcome in second.outcomes.items():
        state = poll_state.load_state(settings.state_dir(data_dir), feed.state_name)
        assert state.next_poll_at == state.last_poll_started_at + timedelta(seconds=60)
        assert outcome.rate_limit_remaining == fake.rate_limit - spent


def test_unauthenticated_304s_are_charged(
    fake: FakeGitHub, conn: duckdb.DuckDBPyConnection, data_dir: Path
) -> None:
    fake.add_repo("o/r", repo_feed("o/r", 10, serial=1))
    _round(fake, conn, data_dir, ["o/r"], "run1")
    before = fake.remaining
    _allow_now(data_dir, ["o/r"])
    _round(fake, conn, data_dir, ["o/r"], "run2")
    assert before - fake.remaining == 2


def test_a_small_budget_is_shared_least_recently_polled_first_and_never_runs_dry(
    conn: duckdb.DuckDBPyConnection, data_dir: Path
) -> None:
    repos = [f"o/r{i}" for i in range(6)]
    feeds = watched.feeds(repos)
    state_dir = settings.state_dir(data_dir)
    with FakeGitHub([], poll_interval=60, rate_limit=9) as fake:
        for i, repo in enumerate(repos):
            fake.add_repo(repo, repo_feed(repo, 5, serial=i + 1))
        first = _round(fake, conn, data_dir, repos, "run1")
        # 9 requests, 3 kept in reserve: six polls, the seventh feed waits for its turn.
        assert list(first.outcomes) == feeds[:6] and first.deferred == (feeds[6],)
        assert fake.remaining == 3
        # Each feed plans its next poll with a 1/7 share of what is left until the reset.
        assert "shared by 7 feeds" in (
            poll_state.load_state(state_dir, feeds[1].state_name).reason or ""
        )
        # The hour turns: a fresh window with room for three polls above the reserve.
        for feed in feeds:
            state = poll_state.load_state(state_dir, feed.state_name)
            past = datetime.now(UTC) - timedelta(seconds=1)
            poll_state.save_state(
                state_dir,
                state.with_(
                    next_poll_at=None,
                    rate_limit_reset_at=past if state.rate_limit_reset_at else None,
                ),
                feed.state_name,
            )
        fake.remaining = 6
        second = _round(fake, conn, data_dir, repos, "run2")
    # The one never polled goes first, then those polled longest ago.
    assert list(second.outcomes) == [feeds[6], feeds[0], feeds[1]]
    assert second.deferred == tuple(feeds[2:6])
    assert fake.remaining == 3


def test_a_bad_a_deleted_and_a_renamed_repository_do_not_disturb_the_rest(
    fake: FakeGitHub, conn: duckdb.DuckDBPyConnection, data_dir: Path
) -> None:
    watch = settings.watched_repos("o/good not-a-repo o/gone o/old")
    assert watch.repos == ("o/good", "o/gone", "o/old") and len(watch.errors) == 1
    fake.add_repo("o/good", repo_feed("o/good", 30, serial=1))
    fake.add_repo("o/gone", repo_feed("o/gone", 10, serial=2))
    fake.add_repo("o/old", repo_feed("o/old", 10, serial=3))
    _round(fake, conn, data_dir, list(watch.repos), "run1")
    fake.delete_repo("o/gone")
    fake.rename_repo("o/old", "o/new")
    fake.push_repo("o/good", repo_feed("o/good", 5, serial=4))
    fake.push_repo("o/new", repo_feed("o/new", 7, serial=5))
    _allow_now(data_dir, list(watch.repos))
    result = _round(fake, conn, data_dir, list(watch.repos), "run2")
    good, gone, old = (ingest.Feed(r) for r in watch.repos)
    assert result.outcomes[good].new == 5
    assert gone not in result.outcomes and "HTTP 404" in result.errors[gone]
    assert result.global_error is None
    gone_state = poll_state.load_state(settings.state_dir(data_dir), gone.state_name)
    assert gone_state.unavailable and gone_state.next_poll_at is not None
    assert gone_state.next_poll_at >= datetime.now(UTC) + timedelta(minutes=59)
    cov_gone = coverage.coverage(conn, "o/gone")
    assert cov_gone is not None and cov_gone.status == coverage.UNAVAILABLE
    assert cov_gone.complete_since is not None  # what was complete stays complete
    # The renamed one: the 301 was followed once, its events stored, the new name recorded.
    assert result.outcomes[old].renamed_to == "o/new" and result.outcomes[old].new == 7
    old_state = poll_state.load_state(settings.state_dir(data_dir), old.state_name)
    assert old_state.renamed_to == "o/new" and old_state.feed_url is not None
    cov_old = coverage.coverage(conn, "o/old")
    assert cov_old is not None and cov_old.status == coverage.RENAMED
    assert "o/new" in (cov_old.detail or "")
    cov_new = coverage.coverage(conn, "o/new")
    assert cov_new is not None and cov_new.status == coverage.OK
    # Later polls go straight to the new address: no more 301s.
    _allow_now(data_dir, list(watch.repos))
    before = sum(1 for r in fake.requests if r.status == 301)
    third = _round(fake, conn, data_dir, list(watch.repos), "run3")
    assert sum(1 for r in fake.requests if r.status == 301) == before
    assert third.outcomes[old].etag_matched
    # Events stored under the name they carried: ten before the rename, seven after.
    assert len(_ids(conn, "o/good")) == 35
    assert (len(_ids(conn, "o/old")), len(_ids(conn, "o/new"))) == (10, 7)


def test_removing_a_repository_keeps_what_was_stored_and_marks_it_unwatched(
    fake: FakeGitHub, conn: duckdb.DuckDBPyConnection, data_dir: Path
) -> None:
    fake.add_repo("o/a", repo_feed("o/a", 10, serial=1))
    fake.add_repo("o/b", repo_feed("o/b", 10, serial=2))
    _round(fake, conn, data_dir, ["o/a", "o/b"], "run1")
    _allow_now(data_dir, ["o/a", "o/b"])
    _round(fake, conn, data_dir, ["o/a"], "run2")
    b = coverage.coverage(conn, "o/b")
    assert b is not None and b.status == coverage.UNWATCHED and b.complete_since is not None
    assert len(_ids(conn, "o/b")) == 10
    _round(fake, conn, data_dir, ["o/a", "o/b"], "run3")
    again = coverage.coverage(conn, "o/b")
    assert again is not None and again.status == coverage.OK


# -- crash safety -----------------------------------------------------------------------------
_CRASH_CHILD = """
import sys
from pathlib import Path

from gh_pipeline import settings, warehouse
from gh_pipeline.live import poll_state, watched
from gh_pipeline.live.github_client import GitHubEventsClient
from gh_pipeline_tests.support.crash_hooks import die, kill_poll_at

api_url, data_dir, run_id, kill_at = sys.argv[1:]
save = poll_state.save_state


def save_or_die(state_dir, state, name=poll_state.STATE_FILE):
    if name != poll_state.STATE_FILE:  # the repository's state, not the global feed's
        die()
    save(state_dir, state, name)


kill_poll_at(kill_at, save_state=save_or_die)

conn = warehouse.connect(settings.warehouse_path(data_dir))
with GitHubEventsClient(api_url=api_url) as client:
    watched.poll_round(
        client=client, conn=conn, data_dir=Path(data_dir), run_id=run_id, repos=["o/r"],
        sleep=lambda s: None,
    )
print("completed without being killed", flush=True)
"""


@pytest.mark.parametrize(
    "kill_at", ["mid_request", "after_landing", "inside_transaction", "before_state_save"]
)
def test_kill_9_during_a_repository_poll_loses_nothing_and_stores_nothing_twice(
    fake: FakeGitHub, data_dir: Path, tmp_path: Path, kill_at: str
) -> None:
    repo_root = Path(__file__).resolve().parents[2]
    t0 = datetime.now(UTC).replace(microsecond=0)
    fake.add_repo("o/r", repo_feed("o/r", 100, serial=1, newest=t0 - timedelta(hours=1)))
    conn = warehouse.connect(settings.warehouse_path(data_dir))
    _round(fake, conn, data_dir, ["o/r"], "run1")
    before = coverage.coverage(conn, "o/r")
    conn.close()  # DuckDB allows one writing process: the child takes the file now
    state_dir = settings.state_dir(data_dir)
    repo_state = ingest.Feed("o/r").state_name
    # Only the repository is due in the crashing round.
    _allow_now(data_dir, ["o/r"])
    glob = poll_state.load_state(state_dir)
    poll_state.save_state(state_dir, glob.with_(next_poll_at=t0 + timedelta(hours=1)))
    state_before = poll_state.load_state(state_dir, repo_state)
    fake.push_repo("o/r", repo_feed("o/r", 150, serial=2, newest=t0))
    if kill_at == "mid_request":
        fake.schedule(Fault(status=200, page=2, delay_s=30))
    requests_before = len(fake.requests)
    script = tmp_path / "crash_repo_poll.py"
    script.write_text(_CRASH_CHILD, encoding="utf-8")
    env = {**os.environ, settings.ENV_DATA_DIR: str(data_dir), "PYTHONPATH": str(repo_root)}
    env.pop(settings.ENV_TOKEN, None)
    child = subprocess.Popen(
        [sys.executable, str(script), fake.url, str(data_dir), "run2-crashed", kill_at],
        cwd=repo_root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        if kill_at == "mid_request":
            deadline = time.monotonic() + 120
            while not any(r.query.get("page") == ["2"] for r in fake.requests[requests_before:]):
                assert time.monotonic() < deadline, "the child never asked for page 2"
                time.sleep(0.02)
            child.send_signal(signal.SIGKILL)
        output = child.communicate(timeout=120)[0].decode("utf-8", "replace")
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL, output
    child_requests = fake.requests[requests_before:]
    assert [r.path for r in child_requests] == ["/repos/o/r/events"] * 2

    conn = warehouse.connect(settings.warehouse_path(data_dir))
    committed = kill_at == "before_state_save"
    # The state never got ahead of the data: nothing committed, or everything but the state.
    assert poll_state.load_state(state_dir, repo_state) == state_before
    assert len(_ids(conn, "o/r")) == (250 if committed else 100)
    seen = conn.execute("SELECT count(*) FROM watched_repo_events").fetchone()
    assert seen == ((250,) if committed else (100,))
    # The restart: everything the feed serves is stored exactly once, and coverage has no gap.
    _allow_now(data_dir, ["o/r"])
    again = _round(fake, conn, data_dir, ["o/r"], "run3").outcomes[ingest.Feed("o/r")]
    assert again.new == (0 if committed else 150)
    ids = _ids(conn, "o/r")
    assert len(ids) == len(set(ids)) == 250
    assert set(ids) == {e["id"] for e in fake.repos["o/r"].events}
    after = coverage.coverage(conn, "o/r")
    assert before is not None and after is not None
    assert after.gaps == 0 and after.complete_since == before.complete_since
    assert after.events_seen == 250
    conn.close()
