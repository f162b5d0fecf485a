"""Retention: raw JSON and landing files go after GH_PIPELINE_RAW_RETENTION_DAYS, typed data stays,
nothing not yet loaded is ever deleted."""

import gzip
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from gh_pipeline import settings, warehouse
from gh_pipeline.defs.ops import maintenance
from gh_pipeline.live import ingest, landing
from gh_pipeline.live.github_client import GitHubEventsClient
from gh_pipeline.model import metrics
from gh_pipeline.ops import retention
from gh_pipeline.warehouse import catalogue, raw, schema
from gh_pipeline_tests.support.fake_github import FakeGitHub, load_recorded, recorded_2019_feed

DUCKDB_FEED = "repo-events-duckdb-2023-page01.json"
AS_OF = datetime(2023, 4, 7, 21, 0, tzinfo=UTC)
TYPED = "event_id, event_type, created_at, actor_login, repo_id, repo_name, poll_id, source, seq"


def _no_sleep(seconds: float) -> None:
    pass


@pytest.fixture
def polled(data_dir: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """Two real polls of the fake GitHub (two landing files), filtered and metric tables built."""
    conn = warehouse.connect(settings.warehouse_path(data_dir))
    feed = sorted(
        recorded_2019_feed() + load_recorded(DUCKDB_FEED),
        key=lambda e: e["created_at"],
        reverse=True,
    )
    with FakeGitHub(feed[100:], poll_interval=60) as fake:
        for i, batch in enumerate([None, feed[:100]]):
            if batch:
                fake.push(batch)
            with GitHubEventsClient(api_url=fake.url, sleep=_no_sleep) as client:
                ingest.poll_once(
                    client=client, conn=conn, data_dir=data_dir, poll_id=f"p{i}", sleep=_no_sleep
                )
    metrics.refresh_all(conn, as_of=AS_OF)
    yield conn
    conn.close()


def _snapshot(conn: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    tables = [*catalogue.FILTERED_TABLES, metrics.PR_INTERVALS, metrics.REPO_PR_COUNTS]
    out = {t: conn.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in tables}
    out["raw_typed"] = conn.execute(f"SELECT {TYPED} FROM raw_events ORDER BY seq").fetchall()
    return out


def test_retention_days_default_zero_and_bad_values():
    assert settings.raw_retention_days("") == 1
    assert settings.raw_retention_days(" 7 ") == 7
    assert settings.raw_retention_days("0") is None
    for bad in ("thirty", "-1", "2.5"):
        with pytest.raises(ValueError, match="GH_PIPELINE_RAW_RETENTION_DAYS"):
            settings.raw_retention_days(bad)


def test_nothing_younger_than_the_retention_period_is_touched(polled, data_dir):
    before = _snapshot(polled)
    files = landing.list_landing_files(settings.landing_dir(data_dir))
    assert len(files) == 2
    report = retention.apply_retention(
        polled, data_dir, now=datetime.now(UTC) + timedelta(days=29), days=30
    )
    assert (report.rows_pruned, report.files_deleted) == (0, 0)
    assert warehouse.scalar(polled, "SELECT count(event) FROM raw_events") == 255
    assert landing.list_landing_files(settings.landing_dir(data_dir)) == files
    assert _snapshot(polled) == before


def test_old_raw_json_and_landing_files_go_typed_data_stays(polled, data_dir):
    before = _snapshot(polled)
    landing_root = settings.landing_dir(data_dir)
    files = landing.list_landing_files(landing_root)
    size = sum(f.stat().st_size for f in files)
    later = datetime.now(UTC) + timedelta(days=31)

    dry = retention.apply_retention(polled, data_dir, now=later, days=30, dry_run=True)
    assert (dry.rows_pruned, dry.files_deleted, dry.bytes_deleted) == (255, 2, size)
    assert warehouse.scalar(polled, "SELECT count(event) FROM raw_events") == 255
    assert landing.list_landing_files(landing_root) == files

    report = retention.apply_retention(polled, data_dir, now=later, days=30)
    assert (report.rows_pruned, report.files_deleted, report.bytes_deleted) == (255, 2, size)
    assert report.files_kept_unloaded == ()
    assert warehouse.scalar(polled, "SELECT count(*) FROM raw_events") == 255
    assert (
        warehouse.scalar(
            polled, "SELECT count(*) FROM raw_events WHERE event IS NOT NULL OR payload IS NOT NULL"
        )
        == 0
    )
    assert _snapshot(polled) == before  # every typed column, filtered and metric row kept
    assert landing.list_landing_files(landing_root) == []
    assert not any((landing_root / "api").iterdir())  # empty day folders removed too

    again = retention.apply_retention(polled, data_dir, now=later, days=30)
    assert (again.rows_pruned, again.files_deleted) == (0, 0)


def test_pruned_events_still_count_as_seen(polled, data_dir, tmp_path):
    """Exactly-once survives pruning: the typed event_id is what dedup looks at."""
    line = json.dumps(load_recorded(DUCKDB_FEED)[0])
    retention.apply_retention(polled, data_dir, now=datetime.now(UTC) + timedelta(days=31), days=30)
    path = tmp_path / "replay.ndjson"
    path.write_text(line + "\n", encoding="utf-8")
    stats = raw.load_ndjson(polled, path, poll_id="replay", source="api")
    assert (stats.new, stats.duplicates) == (0, 1)


def test_an_old_landing_file_that_was_never_loaded_is_kept(polled, data_dir):
    root = settings.landing_dir(data_dir)
    old_day = datetime.now(UTC) - timedelta(days=40)
    # A poll that crashed after writing its file and before committing its rows.
    orphan_event = dict(load_recorded(DUCKDB_FEED)[0], id="99000000777")
    orphan = landing.write_landing_file(
        landing.landing_path(root, source="api", poll_id="crashed", at=old_day), [orphan_event]
    )
    # And an old file whose events are all in the warehouse (plus a line the loader rejects).
    loaded_path = landing.landing_path(root, source="api", poll_id="loaded", at=old_day)
    loaded_path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(loaded_path, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps(load_recorded(DUCKDB_FEED)[1]) + "\n{not json\n")
    report = retention.apply_retention(polled, data_dir, days=30)
    assert report.files_kept_unloaded == (orphan,)
    assert report.files_deleted == 1
    assert orphan.exists() and not loaded_path.exists()
    assert "not all in the warehouse" in report.summary()


def test_a_warehouse_from_before_retention_is_migrated(data_dir, tmp_path):
    """raw_events.event used to be NOT NULL."""
    path = settings.warehouse_path(data_dir)
    conn = warehouse.connect(path)
    legacy = re.sub(r"(\n    event +JSON[^,]*),", r"\1 NOT NULL,", schema.RAW_SCHEMA_SQL)
    assert legacy != schema.RAW_SCHEMA_SQL
    conn.execute(legacy)
    events = tmp_path / "e.ndjson"
    events.write_text(
        "".join(json.dumps(e) + "\n" for e in load_recorded(DUCKDB_FEED)), encoding="utf-8"
    )
    raw.load_ndjson(conn, events, poll_id="old", source="api")
    report = retention.apply_retention(
        conn, data_dir, now=datetime.now(UTC) + timedelta(days=31), days=30
    )
    assert report.rows_pruned == 100
    assert warehouse.scalar(conn, "SELECT count(event) FROM raw_events") == 0
    conn.close()


def test_zero_days_keeps_everything(polled, data_dir):
    report = retention.apply_retention(
        polled, data_dir, now=datetime(2100, 1, 1, tzinfo=UTC), days=None
    )
    assert report.cutoff is None
    assert warehouse.scalar(polled, "SELECT count(event) FROM raw_events") == 255
    assert "disabled" in report.summary()


def _age(conn: duckdb.DuckDBPyConnection, data_dir: Path, days: int) -> None:
    """Make everything stored look `days` older: rows by ingested_at, files by their day folder."""
    conn.execute(
        "UPDATE raw_events SET ingested_at = ingested_at - to_days($d::INTEGER)", {"d": days}
    )
    api = settings.landing_dir(data_dir) / "api"
    for folder in list(api.iterdir()):
        older = datetime.fromisoformat(folder.name) - timedelta(days=days)
        folder.rename(api / older.strftime("%Y-%m-%d"))


def test_retention_job_runs_on_a_default_on_schedule(polled, data_dir, monkeypatch):
    _age(polled, data_dir, 40)
    polled.close()
    from gh_pipeline.definitions import defs

    definitions = defs()
    schedule = definitions.resolve_schedule_def(maintenance.RETENTION_SCHEDULE_NAME)
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == maintenance.RETENTION_JOB_NAME
    job = definitions.resolve_job_def(maintenance.RETENTION_JOB_NAME)

    monkeypatch.setenv(settings.ENV_RAW_RETENTION_DAYS, "soon")
    with dg.DagsterInstance.ephemeral() as instance:
        failed = job.execute_in_process(instance=instance, raise_on_error=False)
    assert not failed.success  # a bad setting fails loudly and prunes nothing
    with duckdb.connect(str(settings.warehouse_path(data_dir)), read_only=True) as conn:
        assert warehouse.scalar(conn, "SELECT count(event) FROM raw_events") == 255

    monkeypatch.setenv(settings.ENV_RAW_RETENTION_DAYS, "45")
    with dg.DagsterInstance.ephemeral() as instance:
        kept = job.execute_in_process(instance=instance)
    assert _observed(kept)["events_pruned"] == 0

    monkeypatch.delenv(settings.ENV_RAW_RETENTION_DAYS)  # the default: 1 day
    with dg.DagsterInstance.ephemeral() as instance:
        pruned = job.execute_in_process(instance=instance)
    meta = _observed(pruned)
    assert meta["retention_days"] == 1
    assert (meta["events_pruned"], meta["landing_files_deleted"]) == (255, 2)
    assert meta["landing_bytes_after"] == 0
    with duckdb.connect(str(settings.warehouse_path(data_dir)), read_only=True) as conn:
        assert warehouse.scalar(conn, "SELECT count(event) FROM raw_events") == 0
        assert warehouse.scalar(conn, "SELECT count(*) FROM pull_request_events") > 0


def _observed(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    assert result.success
    observation = next(
        e.asset_observation_data.asset_observation
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    )
    return {k: v.value for k, v in observation.metadata.items()}
