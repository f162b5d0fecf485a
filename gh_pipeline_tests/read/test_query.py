"""gh_pipeline.read.query against snapshots published by the real assets from real recorded events.

The warehouse is built the way the pipeline builds it: the real events go through
raw.load_ndjson, then the filtered and metric Dagster assets run (and publish the Parquet
snapshot). Expected values were worked out by hand from the fixture listing (comments say how).
"""

import copy
import json
import math
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gh_pipeline import settings as gh_settings
from gh_pipeline import warehouse
from gh_pipeline.publish import snapshot
from gh_pipeline.read import query
from gh_pipeline.warehouse.catalogue import TRACKED_EVENT_TYPES
from gh_pipeline_tests.support.built_warehouse import (
    DUCKDB_FIXTURE,
    build_warehouse,
    fixture_events,
)
from gh_pipeline_tests.support.fake_github import load_recorded

# A data directory whose path would break any SQL that spliced it in as text.
HOSTILE_DIR = 'it\'s; 100% "ü" {source} $path'


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text).tz_convert("UTC")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, datetime, datetime]:
    data_dir = tmp_path_factory.mktemp("query") / HOSTILE_DIR / "data"
    before = datetime.now(UTC)
    build_warehouse(data_dir, fixture_events())
    return data_dir, before, datetime.now(UTC)


@pytest.fixture(scope="module")
def wh(built: tuple[Path, datetime, datetime]) -> Path:
    return built[0]


# -- pr_intervals ----------------------------------------------------------------------------
def test_pr_intervals_one_repository_by_hand(wh: Path) -> None:
    df = query.pr_intervals("duckdb/duckdb", data_dir=wh)
    # Opened at 12:00:25, 16:27:48, 20:02:55 on 2023-04-07: gaps 4h27m23s = 16043 s and
    # 3h35m07s = 12907 s; mean = median = 14475; p90 = 12907 + 0.9 * (16043 - 12907) = 15729.4.
    assert df.to_dict("records") == [
        {
            "repo_name": "duckdb/duckdb",
            "pr_opened": 3,
            "first_opened_at": ts("2023-04-07T12:00:25Z"),
            "last_opened_at": ts("2023-04-07T20:02:55Z"),
            "avg_interval_s": 14475.0,
            "median_interval_s": 14475.0,
            "p90_interval_s": pytest.approx(15729.4),
        }
    ]


def test_pr_intervals_all_repositories(wh: Path) -> None:
    df = query.pr_intervals(data_dir=wh)
    # duckdb/duckdb plus the ten 2019 repositories with an "opened" PullRequestEvent.
    assert len(df) == 11
    assert list(df["repo_name"]) == sorted(df["repo_name"])
    lerna = df[df["repo_name"] == "daddyfatstacksBIG/lerna"].iloc[0]
    assert lerna["pr_opened"] == 1 and math.isnan(lerna["avg_interval_s"])
    assert df["avg_interval_s"].notna().sum() == 1
    assert query.pr_intervals("no/such-repo", data_dir=wh).empty


def test_pr_intervals_equals_event_intervals_of_opened_prs(wh: Path) -> None:
    table = query.pr_intervals(data_dir=wh)
    computed = query.event_intervals("PullRequestEvent", action="opened", data_dir=wh)
    pd.testing.assert_frame_equal(
        table.set_axis(list(computed.columns), axis=1), computed, check_exact=False
    )


# -- event_counts ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("as_of", "minutes", "expected"),
    [
        # (20:00, 21:00]: PR opened 20:02:55 and closed 20:52:00, issue opened 20:15:18, no star.
        ("2023-04-07T21:00:00Z", 60, {"IssuesEvent": 1, "PullRequestEvent": 2, "WatchEvent": 0}),
        # The upper bound is inclusive: the 05:14:40 star on the 8th is in, all 25 duckdb events.
        ("2023-04-08T05:14:40Z", 1440, {"IssuesEvent": 5, "PullRequestEvent": 12, "WatchEvent": 8}),
        ("2023-04-08T05:14:39Z", 1440, {"IssuesEvent": 5, "PullRequestEvent": 12, "WatchEvent": 7}),
        # The lower bound is exclusive: the 05:39:59 star on the 7th drops out.
        ("2023-04-08T05:39:59Z", 1440, {"IssuesEvent": 5, "PullRequestEvent": 12, "WatchEvent": 7}),
        # 2000 days reach back past 2019-10-21: every tracked event of both recordings.
        (
            "2023-04-09T00:00:00Z",
            2000 * 1440,
            {"IssuesEvent": 16, "PullRequestEvent": 29, "WatchEvent": 13},
        ),
        # A 7-minute window, not one of the precomputed ones: (07:09, 07:16] holds the PR closes
        # at 07:12:39, 07:14:47, 07:15:22 and 07:15:50, the 07:14:48 issue and the 07:13:59 star.
        ("2023-04-07T07:16:00Z", 7, {"IssuesEvent": 1, "PullRequestEvent": 4, "WatchEvent": 1}),
    ],
)
def test_event_counts_any_window_by_hand(
    wh: Path, as_of: str, minutes: int, expected: dict[str, int]
) -> None:
    df = query.event_counts(minutes, as_of=datetime.fromisoformat(as_of), data_dir=wh)
    assert dict(zip(df["event_type"], df["event_count"], strict=True)) == expected
    assert list(df["event_type"]) == sorted(TRACKED_EVENT_TYPES)
    assert set(df["window_minutes"]) == {minutes}
    assert set(df["as_of"]) == {ts(as_of)}


def test_event_counts_default_as_of_is_now(wh: Path) -> None:
    before = datetime.now(UTC)
    df = query.event_counts(data_dir=wh)
    after = datetime.now(UTC)
    # The recordings are years old: the last hour before now holds nothing, zeros still listed.
    assert list(df["event_count"]) == [0, 0, 0]
    assert before <= df["as_of"].iloc[0].to_pydatetime() <= after
    assert set(df["window_minutes"]) == {60}


def test_event_counts_same_instant_in_any_timezone(wh: Path) -> None:
    utc = query.event_counts(60, as_of=datetime(2023, 4, 7, 21, tzinfo=UTC), data_dir=wh)
    cest = timezone(timedelta(hours=2))
    local = query.event_counts(60, as_of=datetime(2023, 4, 7, 23, tzinfo=cest), data_dir=wh)
    pd.testing.assert_frame_equal(utc, local)


# -- repo_pr_counts --------------------------------------------------------------------------
def test_repo_pr_counts_sorted_and_limited(wh: Path) -> None:
    # duckdb/duckdb: 12 PullRequestEvents, 3 opened; lerna (2019): opened + closed by pull[bot].
    assert query.repo_pr_counts(2, data_dir=wh).to_dict("records") == [
        {"repo_name": "duckdb/duckdb", "pr_events": 12, "pr_opened": 3},
        {"repo_name": "daddyfatstacksBIG/lerna", "pr_events": 2, "pr_opened": 1},
    ]
    full = query.repo_pr_counts(data_dir=wh)
    assert len(full) == 17  # duckdb/duckdb + 16 repositories in the 2019 recording
    assert full["pr_events"].sum() == 29
    assert list(full["pr_events"]) == sorted(full["pr_events"], reverse=True)
    assert query.repo_pr_counts(0, data_dir=wh).empty


# -- events ----------------------------------------------------------------------------------
def test_events_filters_by_type_and_repository(wh: Path) -> None:
    df = query.events("PullRequestEvent", repo="duckdb/duckdb", data_dir=wh)
    assert len(df) == 12
    first = df.iloc[0]
    assert (first["event_id"], first["action"], first["number"]) == ("28278354731", "closed", 6995)
    assert first["created_at"] == ts("2023-04-07T20:52:00Z")
    assert first["actor_login"] == "Mytherin" and first["repo_id"] == 138754790
    assert sorted(df.loc[df["action"] == "opened", "number"]) == [6998, 7000, 7001]
    stars = query.events("WatchEvent", data_dir=wh)
    assert len(stars) == 13 and stars["number"].isna().all()


def test_events_window_newest_first_and_limit(wh: Path) -> None:
    df = query.events(
        since=datetime(2023, 4, 7, 20, 2, 55, tzinfo=UTC),
        until=datetime(2023, 4, 7, 20, 52, 0, tzinfo=UTC),
        data_dir=wh,
    )
    # since is exclusive (the 20:02:55 PR open is out), until inclusive (the 20:52:00 close is in).
    assert list(df["event_id"]) == ["28278354731", "28277874238"]
    newest = query.events(limit=3, data_dir=wh)
    assert list(newest["event_id"]) == ["28281984012", "28280790595", "28279611465"]
    assert len(query.events(data_dir=wh)) == 58  # 25 duckdb + 33 tracked 2019 events


# -- event_intervals -------------------------------------------------------------------------
def test_event_intervals_stars_by_hand(wh: Path) -> None:
    df = query.event_intervals("WatchEvent", repo="duckdb/duckdb", data_dir=wh)
    # Stars 04-07 05:39:59, 05:44:13, 06:29:26, 07:13:59, 07:56:54, 12:08:39, 19:29:07 and
    # 04-08 05:14:40: gaps 254, 2713, 2673, 2575, 15105, 26428, 35133 s. Mean = span / 7 =
    # 84881 / 7; median 2713; p90 at rank 5.4: 26428 + 0.4 * (35133 - 26428) = 29910.
    row = df.iloc[0]
    assert len(df) == 1 and row["events"] == 8
    assert row["avg_interval_s"] == pytest.approx(84881 / 7)
    assert row["median_interval_s"] == 2713.0
    assert row["p90_interval_s"] == pytest.approx(29910.0)
    assert row["first_event_at"] == ts("2023-04-07T05:39:59Z")
    assert row["last_event_at"] == ts("2023-04-08T05:14:40Z")


def test_event_intervals_with_action(wh: Path) -> None:
    df = query.event_intervals("IssuesEvent", "opened", "duckdb/duckdb", data_dir=wh)
    # Opened 20:15:18, 21:27:55, 22:48:46: gaps 4357 s and 4851 s.
    assert df[["events", "avg_interval_s", "median_interval_s"]].to_dict("records") == [
        {"events": 3, "avg_interval_s": 4604.0, "median_interval_s": 4604.0}
    ]
    assert df["p90_interval_s"].iloc[0] == pytest.approx(4357 + 0.9 * 494)
    assert query.event_intervals("IssuesEvent", "reopened", data_dir=wh).empty


# -- active_repos ----------------------------------------------------------------------------
def test_active_repos(wh: Path) -> None:
    df = query.active_repos("PullRequestEvent", 2, data_dir=wh)
    assert df[["repo_name", "events"]].to_dict("records") == [
        {"repo_name": "duckdb/duckdb", "events": 12},
        {"repo_name": "daddyfatstacksBIG/lerna", "events": 2},
    ]
    assert list(query.active_repos("PullRequestEvent", 3, data_dir=wh)["repo_name"]) == [
        "duckdb/duckdb"
    ]
    assert len(query.active_repos("PullRequestEvent", 0, data_dir=wh)) == 17
    assert len(query.active_repos("PullRequestEvent", 1, limit=5, data_dir=wh)) == 5
    issues = query.active_repos("IssuesEvent", 2, data_dir=wh)
    assert issues[["repo_name", "events"]].to_dict("records") == [
        {"repo_name": "duckdb/duckdb", "events": 5}
    ]
    assert issues["first_event_at"].iloc[0] == ts("2023-04-07T07:14:48Z")


# -- top_repos -------------------------------------------------------------------------------
def test_top_repos_last_week(wh: Path) -> None:
    df = query.top_repos(as_of=datetime(2023, 4, 8, 6, tzinfo=UTC), data_dir=wh)
    # Only duckdb/duckdb falls in the 7 days: 25 tracked events by 16 different actors
    # (Mytherin 9, mtoy-googly-moogly 2, fourteen others once each).
    assert df.to_dict("records") == [
        {
            "repo_name": "duckdb/duckdb",
            "events": 25,
            "unique_actors": 16,
            "first_event_at": ts("2023-04-07T05:39:59Z"),
            "last_event_at": ts("2023-04-08T05:14:40Z"),
        }
    ]
    # One day ending one second before the last star: that star and its actor drop out.
    day = query.top_repos(days=1, as_of=datetime(2023, 4, 8, 5, 14, 39, tzinfo=UTC), data_dir=wh)
    assert day[["events", "unique_actors"]].to_dict("records") == [
        {"events": 24, "unique_actors": 15}
    ]
    assert query.top_repos(data_dir=wh).empty  # nothing in the week before now


def test_top_repos_all_history(wh: Path) -> None:
    df = query.top_repos(days=None, limit=3, data_dir=wh)
    # lerna: PR opened + closed by pull[bot]; CubeCobra: a PR and an issue closed by dekkerglen.
    assert df[["repo_name", "events", "unique_actors"]].to_dict("records") == [
        {"repo_name": "duckdb/duckdb", "events": 25, "unique_actors": 16},
        {"repo_name": "daddyfatstacksBIG/lerna", "events": 2, "unique_actors": 1},
        {"repo_name": "dekkerglen/CubeCobra", "events": 2, "unique_actors": 1},
    ]


# -- user_sessions ---------------------------------------------------------------------------
APRIL_8 = datetime(2023, 4, 8, 6, tzinfo=UTC)


def _sessions(df: pd.DataFrame) -> list[tuple[str, str, str, float, int, int]]:
    return [
        (
            r.actor_login,
            r.session_start.isoformat(),
            r.session_end.isoformat(),
            r.duration_s,
            r.events,
            r.repos,
        )
        for r in df.itertuples()
    ]


def test_user_sessions_thirty_minute_gap(wh: Path) -> None:
    df = query.user_sessions(as_of=APRIL_8, limit=None, data_dir=wh)
    # Mytherin: 07:14:47, 07:14:48, 07:15:22, 07:15:50 | 14:20:26 | 15:10:40, 15:12:15 |
    # 16:20:34 | 20:52:00 -> 5 sessions; mtoy-googly-moogly's two events are 2h49m apart -> 2;
    # the 14 other actors have one event each -> 21 sessions holding all 25 events.
    assert len(df) == 21 and df["events"].sum() == 25
    assert _sessions(df.head(2)) == [
        ("Mytherin", "2023-04-07T07:14:47+00:00", "2023-04-07T07:15:50+00:00", 63.0, 4, 1),
        ("Mytherin", "2023-04-07T15:10:40+00:00", "2023-04-07T15:12:15+00:00", 95.0, 2, 1),
    ]
    assert (df.loc[df["actor_login"] == "Mytherin", "events"].tolist()) == [4, 2, 1, 1, 1]


def test_user_sessions_gap_is_inclusive_and_configurable(wh: Path) -> None:
    # 14:20:26 -> 15:10:40 is 50m14s: joined at 55 minutes, not at 50.
    at_55 = query.user_sessions(55, as_of=APRIL_8, limit=2, data_dir=wh)
    assert _sessions(at_55)[1] == (
        "Mytherin",
        "2023-04-07T14:20:26+00:00",
        "2023-04-07T15:12:15+00:00",
        3109.0,
        3,
        1,
    )
    at_50 = query.user_sessions(50, as_of=APRIL_8, limit=2, data_dir=wh)
    assert _sessions(at_50)[1][4] == 2
    # 15:12:15 -> 16:20:34 is 68m19s: at 70 minutes 14:20:26 .. 16:20:34 is one 4-event run,
    # longer than the 07:14 run, so it sorts first.
    at_70 = query.user_sessions(70, as_of=APRIL_8, limit=2, data_dir=wh)
    assert [(s[1], s[3], s[4]) for s in _sessions(at_70)] == [
        ("2023-04-07T14:20:26+00:00", 7208.0, 4),
        ("2023-04-07T07:14:47+00:00", 63.0, 4),
    ]
    # A gap of 0 joins only simultaneous events: each of Mytherin's 9 events is its own session.
    at_0 = query.user_sessions(0, as_of=APRIL_8, limit=None, data_dir=wh)
    assert (at_0["actor_login"] == "Mytherin").sum() == 9


def test_user_sessions_across_repositories(wh: Path) -> None:
    df = query.user_sessions(days=None, limit=None, data_dir=wh)
    # direwolf-github opened PRs in two repositories at 21:54:49 and 21:54:51 (2019).
    direwolf = df[df["actor_login"] == "direwolf-github"]
    assert direwolf[["duration_s", "events", "repos"]].to_dict("records") == [
        {"duration_s": 2.0, "events": 2, "repos": 2}
    ]
    assert df["events"].sum() == 58


# -- last_updated ----------------------------------------------------------------------------
def test_last_updated_lists_every_published_table(built: tuple[Path, datetime, datetime]) -> None:
    wh, before, after = built
    df = query.last_updated(data_dir=wh)
    assert df[["table_name", "row_count"]].to_dict("records") == [
        {"table_name": "watch_events", "row_count": 13},
        {"table_name": "pull_request_events", "row_count": 29},
        {"table_name": "issues_events", "row_count": 16},
        {"table_name": "pr_intervals", "row_count": 11},
        {"table_name": "event_counts", "row_count": 15},  # 5 windows x 3 types
        {"table_name": "repo_pr_counts", "row_count": 17},
    ]
    assert all(before <= t.to_pydatetime() <= after for t in df["published_at"])


def _tiny_pr_intervals(conn: duckdb.DuckDBPyConnection, *repos: str) -> None:
    conn.execute(
        "CREATE OR REPLACE TABLE pr_intervals AS SELECT unnest($repos::VARCHAR[]) AS repo_name,"
        " 1::BIGINT AS pr_opened, now() AS first_opened_at, now() AS last_opened_at,"
        " NULL::DOUBLE AS avg_interval_s, NULL::DOUBLE AS median_interval_s,"
        " NULL::DOUBLE AS p90_interval_s",
        {"repos": list(repos)},
    )


T0 = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def test_last_updated_reads_the_time_stored_in_the_file(tmp_path: Path) -> None:
    snap = gh_settings.snapshot_dir(tmp_path)
    conn = duckdb.connect(":memory:")
    _tiny_pr_intervals(conn, "a/b")
    snapshot.publish_table(conn, snap, "pr_intervals", published_at=T0)
    first = query.last_updated(data_dir=tmp_path)
    assert first.to_dict("records") == [
        {"table_name": "pr_intervals", "published_at": pd.Timestamp(T0), "row_count": 1}
    ]
    _tiny_pr_intervals(conn, "a/b", "c/d")
    snapshot.publish_table(conn, snap, "pr_intervals", published_at=T0 + timedelta(minutes=1))
    second = query.last_updated(data_dir=tmp_path)
    assert second["published_at"].iloc[0] == pd.Timestamp(T0 + timedelta(minutes=1))
    assert second["row_count"].iloc[0] == 2
    # The stable name, the versions, and no temporary files left behind.
    assert sorted(p.name for p in snap.iterdir()) == ["pr_intervals.parquet", "versions"]


def test_a_read_keeps_the_version_it_resolved_while_the_table_is_republished(
    tmp_path: Path,
) -> None:
    # DuckDB opens a Parquet file more than once per query; a reader must therefore read a file
    # whose content never changes, whatever the publisher does meanwhile.
    snap = gh_settings.snapshot_dir(tmp_path)
    conn = duckdb.connect(":memory:")
    _tiny_pr_intervals(conn, "old/one")
    snapshot.publish_table(conn, snap, "pr_intervals", published_at=T0)
    published = query._resolved(snap, "pr_intervals")
    assert published is not None
    (resolved,) = published.files
    before = resolved.read_bytes()
    _tiny_pr_intervals(conn, "new/one", "new/two")
    snapshot.publish_table(conn, snap, "pr_intervals", published_at=T0 + timedelta(seconds=1))
    assert resolved.read_bytes() == before
    with query._reader(query._snapshot_dir(tmp_path), [resolved]) as reader:
        rows = reader.execute("SELECT repo_name FROM read_parquet($p)", {"p": str(resolved)})
        assert rows.fetchall() == [("old/one",)]
    assert list(query.pr_intervals(data_dir=tmp_path)["repo_name"]) == ["new/one", "new/two"]


def test_one_engine_serves_calls_until_a_publication_adds_files(tmp_path: Path) -> None:
    snap = gh_settings.snapshot_dir(tmp_path)
    conn = duckdb.connect(":memory:")
    _tiny_pr_intervals(conn, "a/one")
    snapshot.publish_table(conn, snap, "pr_intervals", published_at=T0)
    key = (os.getpid(), str(query._snapshot_dir(tmp_path)))
    assert list(query.pr_intervals(data_dir=tmp_path)["repo_name"]) == ["a/one"]
    engine = query._SANDBOXES[key]
    assert list(query.pr_intervals("a/one", data_dir=tmp_path)["repo_name"]) == ["a/one"]
    assert query._SANDBOXES[key] is engine
    _tiny_pr_intervals(conn, "b/one", "b/two")
    snapshot.publish_table(conn, snap, "pr_intervals", published_at=T0 + timedelta(seconds=1))
    # The new version is not on the old engine's allow-list: the call opens the next engine.
    assert list(query.pr_intervals(data_dir=tmp_path)["repo_name"]) == ["b/one", "b/two"]
    assert query._SANDBOXES[key] is not engine


def test_threads_share_the_engine_while_versions_are_published(tmp_path: Path) -> None:
    snap = gh_settings.snapshot_dir(tmp_path)
    conn = duckdb.connect(":memory:")
    versions = [sorted(f"v{n}/r{i}" for i in range(n + 1)) for n in range(12)]
    _tiny_pr_intervals(conn, *versions[0])
    snapshot.publish_table(conn, snap, "pr_intervals", published_at=T0)
    seen: list[list[str]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(list(query.pr_intervals(data_dir=tmp_path)["repo_name"]))
            except BaseException as exc:  # every failure counts
                errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for n, repos in enumerate(versions[1:], start=1):
            _tiny_pr_intervals(conn, *repos)
            snapshot.publish_table(conn, snap, "pr_intervals", published_at=T0 + timedelta(n))
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    # Every answer is one whole published version, and the readers saw the last one.
    torn = [names for names in seen if names not in versions]
    assert len(seen) > 20 and torn == []
    assert list(query.pr_intervals(data_dir=tmp_path)["repo_name"]) == versions[-1]


def test_a_forked_child_opens_its_own_engine(tmp_path: Path) -> None:
    # Notebooks fork (multiprocessing): the child must not use the parent's DuckDB, whose
    # threads it does not have, and must not find the engines' lock held.
    snap = gh_settings.snapshot_dir(tmp_path)
    conn = duckdb.connect(":memory:")
    _tiny_pr_intervals(conn, "a/one", "a/two")
    snapshot.publish_table(conn, snap, "pr_intervals", published_at=T0)
    assert len(query.pr_intervals(data_dir=tmp_path)) == 2
    parent_key = (os.getpid(), str(query._snapshot_dir(tmp_path)))
    parent_engine = query._SANDBOXES[parent_key]
    read, write = os.pipe()
    held, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with query._SANDBOXES_LOCK:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    held.wait()
    pid = os.fork()  # while another thread holds the lock; the child has no such thread
    if pid == 0:  # the child: report and leave without running the parent's cleanup
        try:
            names = list(query.pr_intervals(data_dir=tmp_path)["repo_name"])
            own = query._SANDBOXES[(os.getpid(), parent_key[1])] is not parent_engine
            os.write(write, json.dumps({"names": names, "own": own}).encode())
        finally:
            os._exit(0)
    release.set()
    holder.join()
    os.close(write)
    ready, _, _ = select.select([read], [], [], 60)
    if not ready:  # the child hangs: end it so the test fails instead of hanging too
        os.kill(pid, signal.SIGKILL)
    with os.fdopen(read, "rb") as pipe:
        report = json.loads(pipe.read() or b"null") if ready else None
    os.waitpid(pid, 0)
    assert report == {"names": ["a/one", "a/two"], "own": True}


def test_superseded_versions_are_pruned_after_the_grace_period(tmp_path: Path) -> None:
    snap = gh_settings.snapshot_dir(tmp_path)
    conn = duckdb.connect(":memory:")
    _tiny_pr_intervals(conn, "a/b")
    versions = [
        snapshot.publish_table(conn, snap, "pr_intervals", published_at=T0 + timedelta(minutes=m))
        for m in (0, 1, 5)
    ]
    # v0 was superseded at +1 min, more than 2 minutes before +5: gone. v1 was superseded at +5,
    # just now: a reader may still be reading it, so it stays.
    assert [v.exists() for v in versions] == [False, True, True]
    latest = snapshot.publish_table(
        conn, snap, "pr_intervals", published_at=T0 + timedelta(minutes=10)
    )
    assert [v.exists() for v in (*versions, latest)] == [False, False, True, True]
    assert snapshot.current_version(snap, "pr_intervals") == latest


def test_a_reader_whose_version_was_pruned_resolves_again(
    wh: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reader that stalled for longer than the grace period finds its version gone; it retries
    # with the current one instead of failing.
    real = snapshot.current_version
    calls = []

    def stale_first(snapshot_dir: Path, table: str) -> Path | None:
        calls.append(table)
        return tmp_path / "pruned.parquet" if len(calls) == 1 else real(snapshot_dir, table)

    monkeypatch.setattr(snapshot, "current_version", stale_first)
    assert len(query.pr_intervals(data_dir=wh)) == 11
    # The first resolution was the pruned file; the call resolved pr_intervals again and read that.
    assert calls[0] == "pr_intervals" and calls.count("pr_intervals") >= 2


def test_a_plain_snapshot_file_from_an_older_pipeline_is_still_read(
    wh: Path, tmp_path: Path
) -> None:
    old = gh_settings.snapshot_dir(tmp_path / "old")
    old.mkdir(parents=True)
    current = snapshot.current_version(gh_settings.snapshot_dir(wh), "repo_pr_counts")
    assert current is not None
    (old / "repo_pr_counts.parquet").write_bytes(current.read_bytes())
    assert len(query.repo_pr_counts(data_dir=tmp_path / "old")) == 17
    assert query.last_updated(data_dir=tmp_path / "old")["row_count"].tolist() == [17]


# -- data directory, no data yet, dtypes -----------------------------------------------------
ALL_CALLS: dict[str, Callable[..., pd.DataFrame]] = {
    "pr_intervals": lambda d: query.pr_intervals(data_dir=d),
    "event_counts": lambda d: query.event_counts(
        60, as_of=datetime(2023, 4, 7, 21, tzinfo=UTC), data_dir=d
    ),
    "repo_pr_counts": lambda d: query.repo_pr_counts(data_dir=d),
    "events": lambda d: query.events(data_dir=d),
    "event_intervals": lambda d: query.event_intervals("WatchEvent", data_dir=d),
    "active_repos": lambda d: query.active_repos("IssuesEvent", 1, data_dir=d),
    "top_repos": lambda d: query.top_repos(days=None, data_dir=d),
    "user_sessions": lambda d: query.user_sessions(days=None, data_dir=d),
    "last_updated": lambda d: query.last_updated(data_dir=d),
}


@pytest.mark.parametrize("name", list(ALL_CALLS))
def test_no_data_yet_gives_empty_frame_with_same_columns_and_dtypes(
    wh: Path, tmp_path: Path, name: str
) -> None:
    call = ALL_CALLS[name]
    full = call(wh)
    empty = call(tmp_path / "never-polled")
    assert not full.empty and empty.empty
    assert list(empty.columns) == list(full.columns)
    assert empty.dtypes.to_dict() == full.dtypes.to_dict()
    assert not (tmp_path / "never-polled").exists()  # reading created nothing


def test_data_dir_comes_from_the_environment(
    wh: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert query.pr_intervals().empty  # the conftest's empty data directory
    monkeypatch.setenv("GH_PIPELINE_DATA_DIR", str(wh))
    assert len(query.pr_intervals()) == 11
    monkeypatch.delenv("GH_PIPELINE_DATA_DIR")
    monkeypatch.chdir(wh.parent)  # ./data is the default
    assert len(query.repo_pr_counts()) == 17


# -- read-only ---------------------------------------------------------------------------------
def test_reading_changes_nothing_and_works_while_the_warehouse_is_locked(wh: Path) -> None:
    def state() -> dict[str, tuple[int, int]]:
        return {
            str(p.relative_to(wh)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(wh.rglob("*"))
            if p.is_file()
        }

    before = state()
    # A writer holds the warehouse open (as a running materialisation does); a read-only open
    # of the file would fail now, the snapshot readers don't care.
    writer = duckdb.connect(str(gh_settings.warehouse_path(wh)))
    try:
        writer.execute("BEGIN TRANSACTION")
        writer.execute("DELETE FROM raw_events")
        for call in ALL_CALLS.values():
            assert not call(wh).empty
        writer.execute("ROLLBACK")
    finally:
        writer.close()
    assert state() == before


def test_reader_connection_cannot_write_or_attach(wh: Path, tmp_path: Path) -> None:
    directory = query._snapshot_dir(wh)
    published = query._resolved(directory, "pr_intervals")
    assert published is not None
    (path,) = published.files
    before = path.read_bytes()
    with query._reader(directory, [path]) as conn:
        assert (
            warehouse.scalar(conn, "SELECT count(*) FROM read_parquet($p)", {"p": str(path)}) == 11
        )
        attempts = [
            ("COPY (SELECT 1) TO $p (FORMAT parquet)", {"p": str(path)}),
            ("COPY (SELECT 1) TO $p (FORMAT csv)", {"p": str(path)}),
            ("COPY (SELECT 1) TO $p (FORMAT csv)", {"p": str(directory / "x.csv")}),
            ("COPY (SELECT 1) TO $p (FORMAT csv)", {"p": str(tmp_path / "x.csv")}),
            ("ATTACH $p", {"p": str(gh_settings.warehouse_path(wh))}),
            ("SELECT * FROM read_parquet($p)", {"p": str(gh_settings.warehouse_path(wh))}),
            ("SET enable_external_access = true", {}),
        ]
        for sql, params in attempts:
            with pytest.raises(duckdb.Error):
                conn.execute(sql, params).fetchall()
    assert not (tmp_path / "x.csv").exists() and not (directory / "x.csv").exists()
    assert path.read_bytes() == before


# -- bad input -------------------------------------------------------------------------------
NAIVE = datetime(2023, 4, 7, 21)
BAD_INPUT: list[tuple[str, Callable[[], Any], str]] = [
    ("unknown type", lambda: query.events("PushEvent"), "event_type"),
    ("lower-case type", lambda: query.event_intervals("watchevent"), "event_type"),
    ("type not str", lambda: query.active_repos(1, 1), "event_type"),
    ("missing type", lambda: query.event_intervals(None), "event_type"),
    ("zero offset", lambda: query.event_counts(0), "offset_minutes"),
    ("negative offset", lambda: query.event_counts(-5), "offset_minutes"),
    ("float offset", lambda: query.event_counts(1.5), "offset_minutes"),
    ("bool offset", lambda: query.event_counts(True), "offset_minutes"),
    ("str offset", lambda: query.event_counts("60"), "offset_minutes"),
    ("huge offset", lambda: query.event_counts(10**12), "offset_minutes"),
    ("naive as_of", lambda: query.event_counts(as_of=NAIVE), "as_of"),
    ("str as_of", lambda: query.event_counts(as_of="2023-04-07T21:00:00Z"), "as_of"),
    ("NaT as_of", lambda: query.top_repos(as_of=pd.NaT), "as_of"),
    ("negative limit", lambda: query.repo_pr_counts(-1), "limit"),
    ("bool limit", lambda: query.events(limit=False), "limit"),
    ("float limit", lambda: query.top_repos(limit=2.0), "limit"),
    ("repo not str", lambda: query.pr_intervals(42), "repo"),
    ("repo bytes", lambda: query.events(repo=b"duckdb/duckdb"), "repo"),
    ("action not str", lambda: query.event_intervals("IssuesEvent", action=1), "action"),
    ("naive since", lambda: query.events(since=NAIVE), "since"),
    ("naive until", lambda: query.events(until=NAIVE), "until"),
    (
        "since after until",
        lambda: query.events(
            since=datetime(2024, 1, 1, tzinfo=UTC), until=datetime(2023, 1, 1, tzinfo=UTC)
        ),
        "since",
    ),
    ("negative min_events", lambda: query.active_repos("WatchEvent", -1), "min_events"),
    ("bool min_events", lambda: query.active_repos("WatchEvent", True), "min_events"),
    ("zero days", lambda: query.top_repos(days=0), "days"),
    ("negative days", lambda: query.user_sessions(days=-7), "days"),
    ("negative gap", lambda: query.user_sessions(gap_minutes=-1), "gap_minutes"),
    ("float gap", lambda: query.user_sessions(gap_minutes=0.5), "gap_minutes"),
    ("data_dir not a path", lambda: query.last_updated(data_dir=3), "data_dir"),
]


@pytest.mark.parametrize(
    ("call", "argument"), [b[1:] for b in BAD_INPUT], ids=[b[0] for b in BAD_INPUT]
)
def test_bad_input_names_the_argument(call: Callable[[], Any], argument: str) -> None:
    with pytest.raises(ValueError, match=rf"\b{argument}\b"):
        call()


def test_numpy_integers_are_accepted(wh: Path) -> None:
    import numpy as np

    assert len(query.repo_pr_counts(np.int64(2), data_dir=wh)) == 2
    assert len(query.event_counts(np.int32(60), data_dir=wh)) == 3


# -- hostile repository names ----------------------------------------------------------------
HOSTILE_REPOS = [
    "o'brien/it's",
    'say "hi"/x',
    "x/y'; DROP TABLE pr_intervals; --",
    "100%_off/%",
    "%",
    "ünïcödé/日本語-リポジトリ",
    "emoji/🦆\u200b",
    "{source}/$repo",
    "back\\slash/tab\tname",
]


@pytest.fixture(scope="module")
def hostile_wh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each hostile name gets copies of duckdb/duckdb's three real "opened" PullRequestEvents."""
    opened = [
        e
        for e in load_recorded(DUCKDB_FIXTURE)
        if e["type"] == "PullRequestEvent" and e["payload"]["action"] == "opened"
    ]
    events = []
    for i, name in enumerate(HOSTILE_REPOS):
        for event in opened:
            copy_ = copy.deepcopy(event)
            copy_["id"] = f"{event['id']}{i:02d}"
            copy_["repo"]["name"] = name
            events.append(copy_)
    data_dir = tmp_path_factory.mktemp("hostile") / "data"
    build_warehouse(data_dir, events)
    return data_dir


@pytest.mark.parametrize("name", HOSTILE_REPOS)
def test_hostile_repository_names_match_exactly(hostile_wh: Path, name: str) -> None:
    df = query.pr_intervals(name, data_dir=hostile_wh)
    assert df[["repo_name", "pr_opened", "avg_interval_s"]].to_dict("records") == [
        {"repo_name": name, "pr_opened": 3, "avg_interval_s": 14475.0}
    ]
    assert list(query.events(repo=name, data_dir=hostile_wh)["repo_name"]) == [name] * 3
    intervals = query.event_intervals("PullRequestEvent", "opened", name, data_dir=hostile_wh)
    assert intervals["avg_interval_s"].tolist() == [14475.0]


def test_hostile_names_survive_every_listing(hostile_wh: Path) -> None:
    assert sorted(query.repo_pr_counts(data_dir=hostile_wh)["repo_name"]) == sorted(HOSTILE_REPOS)
    assert sorted(
        query.top_repos(days=None, limit=None, data_dir=hostile_wh)["repo_name"]
    ) == sorted(HOSTILE_REPOS)
    assert len(query.active_repos("PullRequestEvent", 3, data_dir=hostile_wh)) == len(HOSTILE_REPOS)
    # Wildcards are plain characters: "%" and "_" match only themselves.
    assert query.pr_intervals("100_off/_", data_dir=hostile_wh).empty
    assert query.events(repo="%%", data_dir=hostile_wh).empty


# -- hypothesis ------------------------------------------------------------------------------
_TRACKED = [e for e in fixture_events() if e["type"] in TRACKED_EVENT_TYPES]
_CREATED = [
    (e["type"], datetime.fromisoformat(e["created_at"].replace("Z", "+00:00")), e["repo"]["name"])
    for e in _TRACKED
]
_HYPO = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
_aware = st.datetimes(
    min_value=datetime(2019, 10, 21), max_value=datetime(2023, 4, 10), timezones=st.just(UTC)
) | st.datetimes(
    min_value=datetime(2023, 4, 6),
    max_value=datetime(2023, 4, 9),
    timezones=st.builds(
        timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
    ),
)


@_HYPO
@given(as_of=_aware, minutes=st.integers(min_value=1, max_value=4 * 366 * 1440))
def test_event_counts_match_a_count_over_the_recorded_events(
    wh: Path, as_of: datetime, minutes: int
) -> None:
    # Oracle: count the fixture JSON directly, independent of DuckDB and the pipeline.
    start = as_of - timedelta(minutes=minutes)
    expected = {t: 0 for t in TRACKED_EVENT_TYPES}
    for event_type, created, _ in _CREATED:
        if start < created <= as_of:
            expected[event_type] += 1
    df = query.event_counts(minutes, as_of=as_of, data_dir=wh)
    assert dict(zip(df["event_type"], df["event_count"], strict=True)) == expected


@_HYPO
@given(
    since=st.none() | _aware,
    until=st.none() | _aware,
    repo=st.none() | st.sampled_from(["duckdb/duckdb", "daddyfatstacksBIG/lerna", "nobody/here"]),
)
def test_events_window_matches_the_recorded_events(
    wh: Path, since: datetime | None, until: datetime | None, repo: str | None
) -> None:
    if since is not None and until is not None and since > until:
        with pytest.raises(ValueError, match="since"):
            query.events(since=since, until=until, data_dir=wh)
        return
    expected = sum(
        1
        for _, created, name in _CREATED
        if (since is None or created > since)
        and (until is None or created <= until)
        and (repo is None or name == repo)
    )
    df = query.events(repo=repo, since=since, until=until, data_dir=wh)
    assert len(df) == expected
    assert df["created_at"].is_monotonic_decreasing


@_HYPO
@given(repo=st.text(max_size=40))
def test_any_repository_text_is_a_plain_value(hostile_wh: Path, repo: str) -> None:
    df = query.pr_intervals(repo, data_dir=hostile_wh)
    assert list(df["repo_name"]) == ([repo] if repo in HOSTILE_REPOS else [])
    assert list(query.events(repo=repo, data_dir=hostile_wh)["repo_name"]) == (
        [repo] * 3 if repo in HOSTILE_REPOS else []
    )


_junk = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=5)
    | st.binary(max_size=5)
    | st.datetimes()
    | st.datetimes(
        timezones=st.builds(
            timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
        )
    )
    | st.lists(st.integers(), max_size=2)
)


@_HYPO
@given(
    which=st.sampled_from(
        [
            ("event_counts", "offset_minutes"),
            ("event_counts", "as_of"),
            ("repo_pr_counts", "limit"),
            ("events", "event_type"),
            ("events", "since"),
            ("events", "limit"),
            ("event_intervals", "action"),
            ("active_repos", "min_events"),
            ("top_repos", "days"),
            ("top_repos", "as_of"),
            ("user_sessions", "gap_minutes"),
        ]
    ),
    value=_junk,
)
def test_any_argument_value_gives_a_frame_or_a_value_error_naming_it(
    wh: Path, which: tuple[str, str], value: Any
) -> None:
    function, argument = which
    required = {
        "event_intervals": {"event_type": "IssuesEvent"},
        "active_repos": {"event_type": "WatchEvent", "min_events": 1},
    }
    kwargs = {**required.get(function, {}), argument: value, "data_dir": wh}
    try:
        df = getattr(query, function)(**kwargs)
    except ValueError as exc:
        assert argument in str(exc)
    else:
        assert isinstance(df, pd.DataFrame)


def test_the_oracle_sees_every_tracked_event() -> None:
    # Guards the hypothesis oracles against a silently empty event list.
    assert len(_CREATED) == 58
