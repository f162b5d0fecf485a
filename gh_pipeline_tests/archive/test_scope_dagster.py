"""GH_PIPELINE_ARCHIVE_SCOPE through Dagster: a gharchive partition materialised with the watched
scope stores only the watched repositories' events and says so in its metadata; a bad setting
fails the run naming it; the schedule loads an hour again when its scope grew.

Real HTTP against gh_pipeline_tests.support.archive_server, real DuckDB files, real Dagster.
Expected sets come from the fixture hours read with the json module.
"""

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from gh_pipeline import settings, warehouse
from gh_pipeline.defs.archive.assets import GHArchiveResource, gharchive_hourly
from gh_pipeline.defs.archive.schedules import ARCHIVE_JOB_NAME, gharchive_newest_hour
from gh_pipeline.defs.warehouse.resources import PipelineStorage, Warehouse
from gh_pipeline_tests.support.archive_server import ArchiveServer, fixture_events

HOUR_9 = "2021-07-21-09:00"
# Named in another case than the file spells them (Helikopter-Bojowy/Exp-na-helikopterze,
# xz241/wp-uploads), as GitHub names are case-insensitive.
WATCHED = "helikopter-bojowy/exp-na-helikopterze XZ241/WP-Uploads"


@pytest.fixture
def archive() -> Any:
    with ArchiveServer() as server:
        for h in (6, 7, 8, 9):
            server.serve_fixture(f"2021-07-21-{h}.json.gz")
        yield server


def _watched(name: str, repos: str = WATCHED) -> bool:
    return name.lower() in {r.lower() for r in repos.split()}


def _materialize(
    archive: ArchiveServer,
    data_dir: Path,
    instance: dg.DagsterInstance,
    *,
    scope: str,
    repos: str = WATCHED,
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [gharchive_hourly],
        partition_key=HOUR_9,
        resources={
            "gharchive": GHArchiveResource(base_url=archive.url, scope=scope, repos=repos),
            "warehouse": Warehouse(database=str(settings.warehouse_path(data_dir))),
            "storage": PipelineStorage(data_dir=str(data_dir)),
        },
        instance=instance,
        raise_on_error=False,
    )


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("gharchive_hourly")
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _query(data_dir: Path, sql: str) -> list[tuple]:
    conn = warehouse.connect(settings.warehouse_path(data_dir), read_only=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_a_watched_partition_stores_only_the_watched_repositories_events(
    archive, data_dir: Path
) -> None:
    events = fixture_events("2021-07-21-9.json.gz")
    expected = {e["id"] for e in events if _watched(e["repo"]["name"])}
    assert len(expected) == 4 + 6
    result = _materialize(archive, data_dir, dg.DagsterInstance.ephemeral(), scope="watched")
    assert result.success
    rows = _query(data_dir, "SELECT event_id, source FROM raw_events")
    assert {r[0] for r in rows} == expected and len(rows) == len(expected)
    meta = _metadata(result)
    assert (meta["scope"], meta["hour_scope"]) == ("watched", "watched")
    assert meta["hour_scope_repos"] == "helikopter-bojowy/exp-na-helikopterze, xz241/wp-uploads"
    assert meta["lines_read"] == meta["events_in_file"] == len(events)
    assert meta["events_stored"] == meta["new_events"] == len(expected)
    assert meta["events_skipped_by_scope"] == len(events) - len(expected)
    assert meta["dagster/row_count"] == len(expected)
    assert meta["load_method"] == "direct"
    per_repo = Counter(e["repo"]["name"].lower() for e in events)
    assert meta["watched_repo_events"] == {r: per_repo[r.lower()] for r in WATCHED.split()}


def test_the_archive_job_reads_the_scope_from_the_environment(
    archive, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The code location as `dagster dev` loads it: GH_PIPELINE_ARCHIVE_SCOPE=watched in the
    environment, and the tables downstream hold only the watched repositories' events."""
    from gh_pipeline.definitions import defs

    monkeypatch.setenv("GHARCHIVE_URL", archive.url)
    monkeypatch.setenv(settings.ENV_ARCHIVE_SCOPE, "watched")
    monkeypatch.setenv(settings.ENV_REPOS, WATCHED)
    job = defs().resolve_job_def(ARCHIVE_JOB_NAME)
    result = job.execute_in_process(
        partition_key=HOUR_9, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert result.success
    events = fixture_events("2021-07-21-9.json.gz")
    expected = {e["id"] for e in events if _watched(e["repo"]["name"])}
    assert {r[0] for r in _query(data_dir, "SELECT event_id FROM raw_events")} == expected
    assert _metadata(result)["events_skipped_by_scope"] == len(events) - len(expected)
    watch = {e["id"] for e in events if _watched(e["repo"]["name"]) and e["type"] == "WatchEvent"}
    assert {r[0] for r in _query(data_dir, "SELECT event_id FROM watch_events")} == watch


@pytest.mark.parametrize(
    ("scope", "repos", "words"),
    [
        ("everything", WATCHED, ["GH_PIPELINE_ARCHIVE_SCOPE", "'everything'", "'watched'"]),
        ("watched", "", ["GH_PIPELINE_ARCHIVE_SCOPE=watched", "GH_PIPELINE_REPOS"]),
    ],
)
def test_a_bad_scope_fails_the_run_naming_the_setting(
    archive, data_dir: Path, scope: str, repos: str, words: list[str]
) -> None:
    result = _materialize(
        archive, data_dir, dg.DagsterInstance.ephemeral(), scope=scope, repos=repos
    )
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures
    text = str(failures[0].step_failure_data.user_failure_data)
    for word in words:
        assert word in text
    assert not (data_dir / "warehouse.duckdb").exists()  # refused before anything was read
    assert archive.requests == []


def _schedule(archive: ArchiveServer, instance: dg.DagsterInstance, scope: str, repos: str) -> Any:
    with dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=datetime(2021, 7, 21, 10, 5, tzinfo=UTC),
        resources={"gharchive": GHArchiveResource(base_url=archive.url, scope=scope, repos=repos)},
    ) as context:
        result = gharchive_newest_hour(context)
    return [] if isinstance(result, dg.SkipReason) else [r.partition_key for r in result]


def test_the_schedule_loads_an_hour_again_when_its_scope_grew(archive, data_dir: Path) -> None:
    with dg.instance_for_test() as instance:
        assert _materialize(archive, data_dir, instance, scope="watched").success
        # The same scope: done. A wider one (all, or another repository): loaded again.
        assert HOUR_9 not in _schedule(archive, instance, "watched", WATCHED)
        assert HOUR_9 not in _schedule(archive, instance, "watched", WATCHED.split()[0])
        assert HOUR_9 in _schedule(archive, instance, "all", WATCHED)
        assert HOUR_9 in _schedule(archive, instance, "watched", f"{WATCHED} elastic/beats")
        # Loaded with all: done for any scope.
        assert _materialize(archive, data_dir, instance, scope="all").success
        assert HOUR_9 not in _schedule(archive, instance, "all", "")
        assert HOUR_9 not in _schedule(archive, instance, "watched", f"{WATCHED} elastic/beats")
        events = fixture_events("2021-07-21-9.json.gz")
        stored = _query(data_dir, "SELECT count(*), count(DISTINCT event_id) FROM raw_events")
        assert stored == [(len({e["id"] for e in events}),) * 2]
