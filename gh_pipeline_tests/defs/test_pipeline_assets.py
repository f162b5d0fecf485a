"""The poll job through Dagster against the fake GitHub: run metadata and table contents."""

from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from gh_pipeline.definitions import defs
from gh_pipeline_tests.support.fake_github import (
    FakeGitHub,
    load_recorded,
    recorded_2019_feed,
    trim_event,
)


def _poll(instance: dg.DagsterInstance) -> dict[str, dict[str, Any]]:
    job = defs().resolve_job_def("poll_github_events")
    result = job.execute_in_process(instance=instance)
    assert result.success
    return {
        ev.asset_key.to_user_string(): {
            k: v.value for k, v in ev.event_specific_data.materialization.metadata.items()
        }
        for ev in result.get_asset_materialization_events()
    }


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, data_dir: Path):
    with FakeGitHub(recorded_2019_feed(), poll_interval=1) as server:
        monkeypatch.setenv("GITHUB_API_URL", server.url)
        yield server


def test_polls_flow_into_all_tables_with_run_metadata(fake: FakeGitHub, data_dir: Path) -> None:
    feed = recorded_2019_feed()
    with dg.instance_for_test() as instance:
        first = _poll(instance)
        raw = first["raw_events"]
        # 155 distinct events: page 1 (100) is all new, so page 2 (55) is fetched; no page 3.
        assert (raw["http_status"], raw["pages"], raw["new_events"]) == (200, 2, len(feed))
        assert raw["etag_matched"] is False and raw["dagster/row_count"] == len(feed)
        assert set(first) == {
            "raw_events",
            "watch_events",
            "pull_request_events",
            "issues_events",
            "pr_intervals",
            "event_counts",
            "repo_pr_counts",
        }
        types = Counter(e["type"] for e in feed)
        assert first["watch_events"]["dagster/row_count"] == types["WatchEvent"]
        assert first["pull_request_events"]["dagster/row_count"] == types["PullRequestEvent"]
        assert first["issues_events"]["dagster/row_count"] == types["IssuesEvent"]
        assert first["event_counts"]["dagster/row_count"] == 15

        second = _poll(instance)["raw_events"]
        assert (second["http_status"], second["etag_matched"], second["new_events"]) == (
            304,
            True,
            0,
        )
        assert fake.requests[-1].headers["if-none-match"].startswith('W/"')

        # Today's trimmed PullRequestEvents (no pull_request.created_at) arrive on top of the feed.
        duckdb_repo = [trim_event(e) for e in load_recorded("repo-events-duckdb-2023-page01.json")]
        trimmed_prs = [e for e in duckdb_repo if e["type"] == "PullRequestEvent"]
        assert trimmed_prs and all(
            "created_at" not in e["payload"]["pull_request"] for e in trimmed_prs
        )
        fake.push(duckdb_repo)
        third = _poll(instance)
        raw3 = third["raw_events"]
        assert (raw3["http_status"], raw3["new_events"]) == (200, len(duckdb_repo))
        assert raw3["reached_known_events"] is True and raw3["pages"] == 2

    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as conn:
        assert conn.execute(
            "SELECT pr_opened, avg_interval_s, median_interval_s FROM pr_intervals "
            "WHERE repo_name = 'duckdb/duckdb'"
        ).fetchall() == [(3, 14475.0, 14475.0)]
        numbers = conn.execute(
            "SELECT number FROM pull_request_events WHERE repo_name = 'duckdb/duckdb' "
            "AND action = 'opened' ORDER BY created_at"
        ).fetchall()
        assert numbers == [(6998,), (7000,), (7001,)]
        polls = conn.execute(
            "SELECT status, count(*) FROM poll_log GROUP BY status ORDER BY status"
        ).fetchall()
        assert polls == [(200, 4), (304, 1)]
    landed = sorted((data_dir / "landing" / "api").glob("*/*.ndjson.gz"))
    assert len(landed) == 2  # the 304 poll wrote no landing file
