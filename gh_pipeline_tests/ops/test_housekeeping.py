"""Housekeeping of Dagster's own history on a real persistent instance (SQLite files or a real
PostgreSQL, local compute logs): real poll runs against the fake GitHub, checked through Dagster's
APIs."""

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.instance.config import (
    dagster_instance_config,
    get_default_tick_retention_settings,
    get_tick_retention_settings,
)
from dagster._core.scheduler.instigation import TickStatus

from gh_pipeline import settings
from gh_pipeline.definitions import defs
from gh_pipeline.defs.live.jobs import POLL_JOB_NAME
from gh_pipeline.defs.ops.housekeeping import (
    HOUSEKEEPING_JOB_NAME,
    HOUSEKEEPING_SCHEDULE_NAME,
    housekeep,
)
from gh_pipeline.defs.ops.quality import QUALITY_JOB_NAME
from gh_pipeline_tests.support.fake_github import FakeGitHub, Fault, numbered_feed, trim_event

REPO = Path(__file__).resolve().parents[2]
ASSETS = (
    "raw_events",
    "watch_events",
    "pull_request_events",
    "issues_events",
    "pr_intervals",
    "event_counts",
    "repo_pr_counts",
)


@pytest.fixture(params=["sqlite", "postgres"])
def instance(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """A persistent instance on each storage the project supports: SQLite files (dagster.yaml's
    storage block, small run shards) or a real PostgreSQL database (deploy/postgres/dagster.yaml's storage block)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    if request.param == "sqlite":
        block = yaml.safe_load((REPO / "dagster.yaml").read_text(encoding="utf-8"))["storage"]
        block["custom"]["config"]["base_dir"] = str(home / "storage")
        storage = yaml.safe_dump({"storage": block})
    else:
        database = request.getfixturevalue("postgres").create_database()
        for key, value in database.env().items():
            request.getfixturevalue("monkeypatch").setenv(key, value)
        storage = (REPO / "deploy" / "postgres" / "dagster.yaml").read_text(encoding="utf-8")
        storage = storage[storage.index("storage:") : storage.index("local_artifact_storage:")]
    (home / "dagster.yaml").write_text(
        f"""\
{storage}
compute_logs:
  module: dagster._core.storage.local_compute_log_manager
  class: LocalComputeLogManager
  config:
    base_dir: {home / "logs"}
telemetry:
  enabled: false
""",
        encoding="utf-8",
    )
    with dg.DagsterInstance.from_config(str(home)) as inst:
        kind = type(inst.run_storage).__name__
        assert kind == ("SqliteRunStorage" if request.param == "sqlite" else "PostgresRunStorage")
        yield inst


def _latest(instance: dg.DagsterInstance) -> dict[str, tuple[int, str]]:
    out = {}
    for name in ASSETS:
        event = instance.get_latest_materialization_event(dg.AssetKey(name))
        assert event is not None, name
        out[name] = (event.timestamp, event.run_id)
    return out


def _run_files(instance: dg.DagsterInstance, home: Path, run_id: str) -> list[Path]:
    """What a run leaves on disk: its compute logs, and on SQLite its own event-log file."""
    files = [home / "logs" / run_id]
    if (home / "storage").exists():
        files.append(home / "storage" / "history" / "runs" / f"{run_id}.db")
    return files


def test_housekeeping_deletes_exactly_the_runs_past_the_window(
    data_dir: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(settings.ENV_CHART_REFRESH_MINUTES, raising=False)
    home = Path(instance.root_directory)
    with FakeGitHub([trim_event(e) for e in numbered_feed(120, serial=0)], poll_interval=1) as fake:
        monkeypatch.setenv("GITHUB_API_URL", fake.url)
        job = defs().resolve_job_def(POLL_JOB_NAME)

        def poll(serial: int, *, fail: bool = False) -> str:
            if fail:  # GitHub refuses the token: the poll run fails
                fake.schedule(Fault(status=401, body=b'{"message": "Bad credentials"}'))
            else:
                fake.push([trim_event(e) for e in numbered_feed(30, serial=serial)])
            result = job.execute_in_process(instance=instance, raise_on_error=False)
            assert result.success is not fail
            return result.run_id

        # p1 draws every chart (the metric assets' latest materialisation stays there), p2, p3
        # and p5 only poll; f4 fails.
        p1, p2, p3 = poll(1), poll(2), poll(3)
        f4 = poll(4, fail=True)
        p5 = poll(5)

    created = {
        r.dagster_run.run_id: r.create_timestamp
        for r in instance.get_run_records(dg.RunsFilter(run_ids=[p1, p2, p3, f4, p5]))
    }
    assert created[p3] < created[f4] < created[p5]
    latest_before = _latest(instance)
    assert latest_before["pr_intervals"][1] == p1 and latest_before["raw_events"][1] == p5
    for run_id in (p1, p2, p3, f4, p5):
        assert all(path.exists() for path in _run_files(instance, home, run_id)), run_id

    # Finished runs created before f4 are past the window; f4 is inside the failure window.
    success_cutoff = created[f4]
    failure_cutoff = created[p1] - timedelta(seconds=1)
    dry = housekeep(
        instance, success_cutoff=success_cutoff, failure_cutoff=failure_cutoff, dry_run=True
    )
    assert sorted(dry.deleted) == sorted([p2, p3]) and dry.kept_for_latest == [p1], (
        dry,
        created,
        p1,
        p2,
        p3,
    )
    assert {r.run_id for r in instance.get_runs()} == {p1, p2, p3, f4, p5}

    report = housekeep(instance, success_cutoff=success_cutoff, failure_cutoff=failure_cutoff)
    assert sorted(report.deleted) == sorted([p2, p3])
    assert report.kept_for_latest == [p1]
    assert report.bytes_freed > 0
    assert {r.run_id for r in instance.get_runs()} == {p1, f4, p5}
    for name in ASSETS:  # the deleted runs' materialisations are gone from the asset history
        history = instance.fetch_materializations(dg.AssetKey(name), limit=50).records
        assert not {r.run_id for r in history} & {p2, p3}, name
    for run_id in (p2, p3):
        assert not any(path.exists() for path in _run_files(instance, home, run_id)), run_id
    assert instance.get_records_for_run(p2).records == []
    for run_id in (p1, f4, p5):
        assert all(path.exists() for path in _run_files(instance, home, run_id)), run_id

    # Every asset's latest materialisation is the same event as before, with its chart.
    assert _latest(instance) == latest_before
    for name in ("pr_intervals", "event_counts", "repo_pr_counts"):
        event = instance.get_latest_materialization_event(dg.AssetKey(name))
        assert "data:image/png;base64," in event.asset_materialization.metadata["chart"].value

    # Once the failure window has passed too, f4 goes.
    later = housekeep(instance, success_cutoff=success_cutoff, failure_cutoff=created[p5])
    assert later.deleted == [f4] and later.deleted_failed == [f4]
    assert {r.run_id for r in instance.get_runs()} == {p1, p5}


def test_housekeeping_job_runs_hourly_by_default_and_reports_what_it_deleted(
    data_dir: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = defs()
    schedule = d.resolve_schedule_def(HOUSEKEEPING_SCHEDULE_NAME)
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == HOUSEKEEPING_JOB_NAME
    job = d.resolve_job_def(HOUSEKEEPING_JOB_NAME)
    # Nothing is old enough on a fresh instance: the job reports zero deletions.
    first = job.execute_in_process(instance=instance)
    assert first.success
    (output,) = [e for e in first.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT]
    metadata = output.step_output_data.metadata
    assert metadata["runs_deleted"].value == 0
    # With GH_PIPELINE_RUN_RETENTION_DAYS=0 nothing is ever deleted (kept forever).
    monkeypatch.setenv(settings.ENV_RUN_RETENTION_DAYS, "0")
    monkeypatch.setenv(settings.ENV_FAILED_RUN_RETENTION_DAYS, "0")
    assert job.execute_in_process(instance=instance).success
    assert len(instance.get_runs()) == 2


def test_run_retention_settings_reject_nonsense() -> None:
    assert settings.run_retention_days(value="") == settings.DEFAULT_RUN_RETENTION_DAYS
    assert settings.run_retention_days(failed=True, value="") == 14
    assert settings.run_retention_days(value="0") is None
    for bad in ("-1", "a week"):
        with pytest.raises(ValueError, match=settings.ENV_RUN_RETENTION_DAYS):
            settings.run_retention_days(value=bad)


def test_tick_retention_is_configured_in_dagster_yaml() -> None:
    config = yaml.safe_load((REPO / "dagster.yaml").read_text(encoding="utf-8"))
    retention = config["retention"]
    sensor = retention["sensor"]["purge_after_days"]
    schedule = retention["schedule"]["purge_after_days"]
    # The poll sensor ticks every 5 s (17,000 skipped ticks a day): those go after a day.
    assert sensor["skipped"] == 1 and schedule["skipped"] == 1
    for kept in (sensor, schedule):
        assert 0 < kept["success"] <= 30 and kept["failure"] >= kept["success"]
    # Dagster validates the file as instance config and reads the same settings back.
    validated, _ = dagster_instance_config(str(REPO))
    purge = get_tick_retention_settings(
        validated["retention"]["sensor"], get_default_tick_retention_settings(InstigatorType.SENSOR)
    )
    assert purge[TickStatus.SKIPPED] == 1
    assert purge[TickStatus.SUCCESS] == sensor["success"]


def test_housekeeping_deletes_the_check_executions_of_the_runs_it_deletes(
    data_dir: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Dagster's delete_run leaves a run's rows in asset_check_executions behind; the checks of
    # every 15-minute quality run would pile up in the asset index forever.
    with FakeGitHub([trim_event(e) for e in numbered_feed(60, serial=0)], poll_interval=1) as fake:
        monkeypatch.setenv("GITHUB_API_URL", fake.url)
        d = defs()
        assert d.resolve_job_def(POLL_JOB_NAME).execute_in_process(instance=instance).success
    quality = d.resolve_job_def(QUALITY_JOB_NAME)
    q1, q2, q3 = (quality.execute_in_process(instance=instance).run_id for _ in range(3))
    keys = list(d.resolve_asset_graph().asset_check_keys)

    def executions() -> set[str]:
        storage = instance.event_log_storage
        return {
            e.run_id for key in keys for e in storage.get_asset_check_execution_history(key, 50)
        }

    assert executions() == {q1, q2, q3}
    (created,) = instance.get_run_records(dg.RunsFilter(run_ids=[q3]))
    report = housekeep(
        instance, success_cutoff=created.create_timestamp, failure_cutoff=None, check_keys=keys
    )
    assert sorted(report.deleted) == sorted([q1, q2]) and q3 not in report.kept_for_latest
    assert executions() == {q3}
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    assert {e.run_id for e in latest.values()} == {q3}
