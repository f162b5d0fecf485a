"""The instance storage dagster.yaml names (SmallShardSqliteStorage): run shards in small pages,
and Dagster reads and writes events through it as through its own SQLite storage, on real
instances in both directions (shards made before it, and Dagster's storage reading its shards)."""

import contextlib
import gc
import sqlite3
from pathlib import Path

import dagster as dg
import pytest

from gh_pipeline.definitions import defs
from gh_pipeline.defs.live.jobs import POLL_JOB_NAME
from gh_pipeline.defs.ops.instance_storage import SHARD_PAGE_SIZE, SmallShardSqliteEventLogStorage
from gh_pipeline_tests.support.fake_github import FakeGitHub, numbered_feed, trim_event
from gh_pipeline_tests.support.schema_checks import instance_home, measure


def _page_size(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA page_size").fetchone()[0]


def _shard(tmp_path: Path, run_id: str) -> Path:
    return tmp_path / "storage" / "history" / "runs" / f"{run_id}.db"


@dg.asset
def counted() -> dg.MaterializeResult:
    """A one-row asset."""
    return dg.MaterializeResult(metadata={"dagster/row_count": 1})


def _materialise(home: Path) -> str:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = dg.materialize([counted], instance=instance)
        assert result.success
        return result.run_id


def _read(home: Path, run_id: str) -> tuple[list[str], str]:
    """The run's event types and the run holding counted's latest materialisation."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_records_for_run(run_id).records
        latest = instance.get_latest_materialization_event(dg.AssetKey("counted"))
        assert latest is not None
        return [r.event_log_entry.dagster_event_type for r in records], latest.run_id


def test_poll_run_shard_has_small_pages_and_is_smaller_than_with_dagsters_storage(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = {}
    with FakeGitHub([trim_event(e) for e in numbered_feed(150, serial=0)], poll_interval=1) as fake:
        monkeypatch.setenv("GITHUB_API_URL", fake.url)
        job = defs().resolve_job_def(POLL_JOB_NAME)  # the GitHub resource reads the URL here
        # Dagster's storage first, then ours on the same files; the second and third polls are
        # alike (no chart due, 40 new events each), the first draws every chart.
        for serial, ours in ((1, False), (2, False), (3, True)):
            fake.push([trim_event(e) for e in numbered_feed(40, serial=serial)])
            home = instance_home(tmp_path, f"home{serial}", ours=ours)
            with dg.DagsterInstance.from_config(str(home)) as instance:
                if ours:
                    assert isinstance(instance.event_log_storage, SmallShardSqliteEventLogStorage)
                result = job.execute_in_process(instance=instance)
                assert result.success
                stored = instance.get_records_for_run(result.run_id).records
                assert any(
                    r.event_log_entry.dagster_event_type
                    == dg.DagsterEventType.ASSET_MATERIALIZATION
                    for r in stored
                )
                latest = instance.get_latest_materialization_event(dg.AssetKey("raw_events"))
                assert latest is not None and latest.run_id == result.run_id
            sizes[serial] = _shard(tmp_path, result.run_id).stat().st_size
            expected = SHARD_PAGE_SIZE if ours else 4096
            assert _page_size(_shard(tmp_path, result.run_id)) == expected
    index = tmp_path / "storage" / "history" / "runs" / "index.db"
    assert _page_size(index) == 4096  # the shared index keeps SQLite's default
    # The same run's shard: Dagster's storage vs small pages (measured 81 kB vs ~230 kB).
    assert sizes[3] < sizes[2] * 0.6, sizes


def test_dagster_and_this_storage_read_each_others_shards(tmp_path: Path) -> None:
    plain, ours = (
        instance_home(tmp_path, "plain", ours=False),
        instance_home(tmp_path, "ours", ours=True),
    )
    before = _materialise(plain)  # a shard made before the switch, 4 kB pages
    after = _materialise(ours)
    assert _page_size(_shard(tmp_path, before)) == 4096
    assert _page_size(_shard(tmp_path, after)) == SHARD_PAGE_SIZE
    for home in (plain, ours):  # switching back to `storage: sqlite:` keeps working too
        for run_id in (before, after):
            kinds, latest = _read(home, run_id)
            assert dg.DagsterEventType.ASSET_MATERIALIZATION in kinds
            assert dg.DagsterEventType.RUN_SUCCESS in kinds
            assert latest == after


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _revision(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def test_a_new_run_shard_holds_only_the_run_tables_and_is_current_for_dagster(
    tmp_path: Path,
) -> None:
    plain, ours = (
        instance_home(tmp_path, "plain", ours=False),
        instance_home(tmp_path, "ours", ours=True),
    )
    full, small = _materialise(plain), _materialise(ours)
    assert _tables(_shard(tmp_path, small)) == {"event_logs", "asset_event_tags", "alembic_version"}
    assert "asset_keys" in _tables(_shard(tmp_path, full))  # Dagster's own: every table
    # The same alembic stamp as a full shard: Dagster sees nothing to create or migrate.
    assert _revision(_shard(tmp_path, small)) == _revision(_shard(tmp_path, full))
    # What Dagster does with a run's shard besides reading it: migrate it (`dagster instance
    # migrate`) and delete the run (housekeeping: it clears asset_event_tags in the shard too).
    for home in (ours, plain):
        with dg.DagsterInstance.from_config(str(home)) as instance:
            instance.upgrade()
    with dg.DagsterInstance.from_config(str(ours)) as instance:
        instance.delete_run(small)
        assert instance.get_records_for_run(small).records == []
        kinds = [
            r.event_log_entry.dagster_event_type for r in instance.get_records_for_run(full).records
        ]
        assert dg.DagsterEventType.ASSET_MATERIALIZATION in kinds


def _exit_stacks() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, contextlib.ExitStack))


def test_building_instances_and_run_shards_keeps_nothing_open(tmp_path: Path) -> None:
    """The code server builds an instance from dagster.yaml on every sensor tick, and every
    process opens each new run's shard: alembic's schema check behind both must not leave an
    ExitStack registered with atexit each time (the daemon's and code server's RSS growth)."""
    home = instance_home(tmp_path, "home", ours=True)
    _materialise(home)  # the first resolution of Dagster's alembic scripts may keep one
    before = _exit_stacks()
    for _ in range(10):
        with dg.DagsterInstance.from_config(str(home)) as instance:
            run = instance.add_run(dg.DagsterRun(job_name=POLL_JOB_NAME))
            # A new run shard: created, stamped and checked through alembic.
            instance.report_run_failed(run, "a shard is made")
    assert _exit_stacks() - before <= 1


def test_migration_scripts_are_compiled_once_per_process(tmp_path: Path) -> None:
    """Dagster's schema check and stamp build a new alembic ScriptDirectory each time, which
    compiles all 89 migration scripts again: ~265 compiles for every new run shard and ~176 for
    every instance the code server builds (each sensor tick), the churn behind the daemon's
    stepwise RSS growth. Once warm, a new shard compiles at most alembic's env.py (the stamp
    command runs it) and a new instance nothing."""
    counts = measure(instance_home(tmp_path, "home", ours=True), shards=10, instances=5)
    assert counts["compiles_shards"] <= 10, counts
    assert counts["compiles_instances"] == 0, counts
