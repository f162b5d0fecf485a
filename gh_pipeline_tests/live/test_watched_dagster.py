"""Watched repositories in Dagster: the poll asset's per-repository table in the run metadata and
the sensor's skip reason listing each repository's state, against the fake GitHub."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from gh_pipeline import settings
from gh_pipeline.defs.live.assets import raw_events
from gh_pipeline.defs.live.resources import GitHubApiResource
from gh_pipeline.defs.live.sensors import github_events_sensor
from gh_pipeline.defs.warehouse.resources import PipelineStorage, Warehouse
from gh_pipeline.live import poll_state, watched
from gh_pipeline_tests.support.fake_github import FakeGitHub, repo_feed

REPOS = "o/good not-a-repo o/gone"


def _materialize(fake: FakeGitHub, data_dir: Path, instance: dg.DagsterInstance) -> dict[str, Any]:
    resources = {
        "github": GitHubApiResource(api_url=fake.url, repos=REPOS),
        "storage": PipelineStorage(data_dir=str(data_dir)),
        "warehouse": Warehouse(database=str(settings.warehouse_path(data_dir))),
    }
    result = dg.materialize([raw_events], resources=resources, instance=instance)
    (materialization,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in materialization.materialization.metadata.items()}


def _table(markdown: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split(" | ") for line in markdown.splitlines()[2:]]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


def test_run_metadata_lists_every_watched_repository_and_its_state(data_dir: Path) -> None:
    with FakeGitHub([], poll_interval=60) as fake, dg.DagsterInstance.ephemeral() as instance:
        fake.add_repo("o/good", repo_feed("o/good", 20, serial=1))
        fake.add_repo("o/gone", repo_feed("o/gone", 5, serial=2))
        first = _materialize(fake, data_dir, instance)
        table = _table(first["watched_repositories"])
        assert set(table) == {"o/good", "o/gone"}
        assert table["o/good"][0] == "complete" and table["o/good"][4] == "0"
        assert first["repositories_polled"] == 2 and first["repositories_failed"] == "none"
        assert first["http_status"] == 200  # the global feed's own poll, as without repositories
        fake.delete_repo("o/gone")
        state_dir = settings.state_dir(data_dir)
        for feed in watched.feeds(["o/good", "o/gone"]):
            state = poll_state.load_state(state_dir, feed.state_name)
            poll_state.save_state(state_dir, state.with_(next_poll_at=None), feed.state_name)
        second = _materialize(fake, data_dir, instance)
    table = _table(second["watched_repositories"])
    assert table["o/gone"][0] == "unavailable" and "HTTP 404" in table["o/gone"][5]
    assert table["o/good"][0] == "complete"
    assert "o/gone" in second["repositories_failed"]


def test_the_sensor_names_each_repository_refused_entries_and_the_missing_token(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.ENV_REPOS, "o/a o/b o/c a-bad-entry")
    state_dir = settings.state_dir(data_dir)
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
    for feed in watched.feeds(["o/a", "o/b", "o/c"]):
        poll_state.save_state(
            state_dir,
            poll_state.PollState(
                next_poll_at=later,
                last_poll_started_at=later - timedelta(minutes=6),
                reason="X-Poll-Interval 60s",
                complete_since=later - timedelta(days=1),
            ),
            feed.state_name,
        )
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_sensor_context(
            instance=instance, resources={"storage": PipelineStorage(data_dir=str(data_dir))}
        )
        result = github_events_sensor(context)
        assert isinstance(result, dg.SkipReason)
        message = result.skip_message or ""
        assert message.startswith(f"next poll allowed at {later.isoformat()}")
        assert "'a-bad-entry' is not owner/name" in message
        assert "Set GITHUB_TOKEN" in message
        for repo in ("o/a", "o/b", "o/c"):
            assert f"{repo}: complete; last poll" in message
        # Due: one repository's time has come, the run is launched.
        feed = watched.feeds(["o/b"])[1]
        state = poll_state.load_state(state_dir, feed.state_name)
        poll_state.save_state(state_dir, state.with_(next_poll_at=None), feed.state_name)
        assert isinstance(github_events_sensor(context), dg.RunRequest)
