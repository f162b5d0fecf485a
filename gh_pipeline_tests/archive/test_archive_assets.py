"""The GH Archive partitions through Dagster: materialise, re-run, dedup against live events,
rejected lines, 404s, the schedule, and the archive job refreshing the tables downstream.

Real HTTP against gh_pipeline_tests.support.archive_server, real DuckDB files under tmp_path, real Dagster.
"""

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from gh_pipeline import settings, warehouse
from gh_pipeline.defs.archive.assets import (
    GHARCHIVE_PARTITIONS,
    HOURS_PER_RUN,
    GHArchiveResource,
    gharchive_hourly,
)
from gh_pipeline.defs.archive.schedules import (
    ARCHIVE_JOB_NAME,
    ARCHIVE_SCHEDULE_NAME,
    LOOKBACK_HOURS,
    gharchive_newest_hour,
)
from gh_pipeline.defs.warehouse.keys import GHARCHIVE_HOURLY
from gh_pipeline.defs.warehouse.resources import PipelineStorage, Warehouse
from gh_pipeline.live import landing
from gh_pipeline.warehouse import raw
from gh_pipeline_tests.support.archive_server import (
    ArchiveServer,
    Served,
    fixture_events,
    fixture_lines,
    gz,
)

HOUR_6 = "2021-07-21-06:00"


@pytest.fixture
def archive() -> Any:
    with ArchiveServer() as server:
        for h in (6, 7, 8, 9):
            server.serve_fixture(f"2021-07-21-{h}.json.gz")
        yield server


def _resources(archive: ArchiveServer, data_dir: Path) -> dict[str, Any]:
    return {
        "gharchive": GHArchiveResource(base_url=archive.url),
        "warehouse": Warehouse(database=str(settings.warehouse_path(data_dir))),
        "storage": PipelineStorage(data_dir=str(data_dir)),
    }


def _materialize(
    archive: ArchiveServer, data_dir: Path, key: str, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [gharchive_hourly],
        partition_key=key,
        resources=_resources(archive, data_dir),
        instance=instance,
        raise_on_error=False,
    )


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _query(data_dir: Path, sql: str, params: dict[str, Any] | None = None) -> list[tuple]:
    conn = warehouse.connect(settings.warehouse_path(data_dir), read_only=True)
    try:
        return conn.execute(sql, params or {}).fetchall()
    finally:
        conn.close()


def _failure_text(result: dg.ExecuteInProcessResult) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "expected the step to fail"
    error = failures[0].step_failure_data.error
    return f"{error.message} {failures[0].step_failure_data.user_failure_data}"


def test_a_partition_loads_its_hour_and_a_rerun_adds_nothing(archive, data_dir: Path) -> None:
    events = fixture_events("2021-07-21-6.json.gz")
    distinct = {e["id"] for e in events}
    instance = dg.DagsterInstance.ephemeral()
    first = _materialize(archive, data_dir, HOUR_6, instance)
    assert first.success
    meta = _metadata(first)
    assert meta["events_in_file"] == len(events) == 200
    assert meta["new_events"] == meta["dagster/row_count"] == len(distinct)
    assert meta["rejected_lines"] == 0
    assert meta["load_method"] == "direct"  # a fresh hour goes from file to table in one pass
    assert meta["url"] == f"{archive.url}/2021-07-21-6.json.gz"
    assert meta["coverage_live_events"] == 0 and "coverage_live_in_archive_pct" not in meta
    rows = _query(data_dir, "SELECT event_id, source, poll_id FROM raw_events")
    assert {r[0] for r in rows} == distinct
    assert {(r[1], r[2]) for r in rows} == {("gharchive", "gharchive:2021-07-21-6")}

    again = _materialize(archive, data_dir, HOUR_6, instance)
    assert again.success
    meta = _metadata(again)
    assert (meta["new_events"], meta["already_stored"]) == (0, len(events))
    assert meta["load_method"] == "staged"
    assert meta["dagster/row_count"] == len(distinct)
    assert _query(data_dir, "SELECT count(*) FROM raw_events") == [(len(distinct),)]
    # The partition is recorded as materialised twice, once per run.
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=GHARCHIVE_HOURLY, asset_partitions=[HOUR_6]), limit=10
    ).records
    assert len(records) == 2
    # The download's temporary file is gone.
    assert not list((data_dir / "tmp" / "gharchive").glob("*"))


def test_partitions_add_up_and_live_events_are_not_stored_twice(archive, data_dir: Path) -> None:
    hour_7 = fixture_events("2021-07-21-7.json.gz")
    live = hour_7[:25]  # the live feed saw these 25 before the archive hour was loaded
    conn = warehouse.connect(settings.warehouse_path(data_dir))
    warehouse.ensure_schema(conn)
    raw.load_ndjson(
        conn,
        landing.write_landing_file(data_dir / "live.ndjson.gz", live),
        poll_id="poll-1",
        source="api",
    )
    conn.close()
    instance = dg.DagsterInstance.ephemeral()
    expected: set[str] = {e["id"] for e in live}
    for h in (6, 7, 8, 9):
        result = _materialize(archive, data_dir, f"2021-07-21-{h:02d}:00", instance)
        assert result.success
        expected |= {e["id"] for e in fixture_events(f"2021-07-21-{h}.json.gz")}
        if h == 7:
            meta = _metadata(result)
            distinct_7 = {e["id"] for e in hour_7}
            assert meta["already_stored"] == 25
            assert meta["load_method"] == "staged"
            assert meta["new_events"] == meta["dagster/row_count"] == len(distinct_7) - 25
            in_hour = {e["id"] for e in hour_7 if e["created_at"].startswith("2021-07-21T07:")}
            assert meta["coverage_live_events"] == meta["coverage_in_both"] == 25
            assert meta["coverage_live_only"] == 0
            assert meta["coverage_archive_events"] == len(in_hour)
            assert meta["coverage_archive_only"] == len(in_hour) - 25
            assert meta["coverage_live_in_archive_pct"] == 100.0
            assert meta["coverage_archive_in_live_pct"] == round(100 * 25 / len(in_hour), 2)
    rows = _query(data_dir, "SELECT source, count(*) FROM raw_events GROUP BY 1")
    assert dict(rows) == {"api": 25, "gharchive": len(expected) - 25}
    assert _query(data_dir, "SELECT count(DISTINCT event_id) FROM raw_events") == [(len(expected),)]


def test_a_corrupt_line_is_rejected_and_the_rest_of_the_hour_loads(archive, data_dir) -> None:
    lines = fixture_lines("2021-07-21-8.json.gz")
    broken = [*lines[:50], '{"id": "1", "type": "PushEvent", "repo": {', *lines[50:]]
    archive.files["2021-07-21-8.json.gz"] = Served(
        gzip.compress(("\n".join(broken) + "\n").encode("utf-8"))
    )
    result = _materialize(archive, data_dir, "2021-07-21-08:00", dg.DagsterInstance.ephemeral())
    assert result.success
    meta = _metadata(result)
    assert (meta["events_in_file"], meta["rejected_lines"]) == (len(lines) + 1, 1)
    assert meta["new_events"] == len({json.loads(line)["id"] for line in lines})
    rejected = _query(
        data_dir, "SELECT line_number, reason, raw_text, poll_id FROM rejected_events"
    )
    assert rejected == [
        (51, "line is not valid JSON", broken[50], "gharchive:2021-07-21-8"),
    ]


def test_a_truncated_hour_fails_clearly_and_loads_nothing(archive, data_dir: Path) -> None:
    body = (archive.files["2021-07-21-9.json.gz"]).body
    archive.files["2021-07-21-9.json.gz"] = Served(body[: len(body) // 2])
    result = _materialize(archive, data_dir, "2021-07-21-09:00", dg.DagsterInstance.ephemeral())
    assert not result.success
    assert "truncated gzip" in _failure_text(result)
    assert result.get_asset_materialization_events() == []
    assert not (data_dir / "warehouse.duckdb").exists()  # refused before the warehouse opened
    assert not list((data_dir / "tmp" / "gharchive").glob("*"))


def test_an_hour_not_published_yet_is_skipped_quietly(archive, data_dir: Path) -> None:
    newest = GHARCHIVE_PARTITIONS.get_last_partition_key()
    assert newest is not None
    result = _materialize(archive, data_dir, newest, dg.DagsterInstance.ephemeral())
    assert result.success  # no failure ...
    assert result.get_asset_materialization_events() == []  # ... and no materialisation
    name = datetime.strptime(newest, "%Y-%m-%d-%H:%M")
    assert ("GET", f"{name:%Y-%m-%d}-{name.hour}.json.gz") in archive.requests
    assert not (data_dir / "warehouse.duckdb").exists()  # the warehouse was never opened


def test_an_old_hour_missing_from_the_archive_fails_with_its_reason(archive, data_dir) -> None:
    result = _materialize(archive, data_dir, "2021-07-21-10:00", dg.DagsterInstance.ephemeral())
    assert not result.success
    text = _failure_text(result)
    assert "404" in text and "missing" in text


def _schedule(archive: ArchiveServer, instance: dg.DagsterInstance, at: datetime) -> Any:
    # Entered and closed here: the context opens its own instance from the reference, and Dagster
    # keeps the current one in a context variable that must not outlive the test.
    with dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=at,
        resources={"gharchive": GHArchiveResource(base_url=archive.url)},
    ) as context:
        return gharchive_newest_hour(context)


def test_the_schedule_requests_published_hours_and_skips_404s_quietly(
    archive, data_dir: Path
) -> None:
    # A real temporary instance (schedule contexts need an instance reference), opened inside
    # the test: Dagster keeps the current instance in a context variable.
    with dg.instance_for_test() as instance:
        # 10:05: the newest complete hour is 09:00; 04:00 and 05:00 are not on the server (404).
        at = datetime(2021, 7, 21, 10, 5, tzinfo=UTC)
        requests = _schedule(archive, instance, at)
        assert [r.partition_key for r in requests] == [
            f"2021-07-21-{h:02d}:00" for h in (9, 8, 7, 6)
        ]
        assert LOOKBACK_HOURS == 6
        heads = [name for method, name in archive.requests if method == "HEAD"]
        assert heads == [f"2021-07-21-{h}.json.gz" for h in (9, 8, 7, 6, 5, 4)]

        # Once an hour is loaded the schedule leaves it alone.
        assert _materialize(archive, data_dir, "2021-07-21-09:00", instance).success
        requests = _schedule(archive, instance, at)
        assert [r.partition_key for r in requests] == [f"2021-07-21-{h:02d}:00" for h in (8, 7, 6)]

        # 12:05: 11:00 and 10:00 are not published yet; the 404s are a quiet skip, not an error.
        for h in (6, 7, 8):
            assert _materialize(archive, data_dir, f"2021-07-21-{h:02d}:00", instance).success
        skip = _schedule(archive, instance, datetime(2021, 7, 21, 12, 5, tzinfo=UTC))
        assert isinstance(skip, dg.SkipReason)
        assert "2021-07-21-11.json.gz not published yet (HTTP 404)" in (skip.skip_message or "")


def test_the_schedule_skips_when_gh_archive_is_unreachable(data_dir: Path) -> None:
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime(2021, 7, 21, 10, 5, tzinfo=UTC),
            resources={"gharchive": GHArchiveResource(base_url="http://127.0.0.1:9")},
        ) as context,
    ):
        skip = gharchive_newest_hour(context)
    assert isinstance(skip, dg.SkipReason)
    assert "not reachable" in (skip.skip_message or "")


def test_the_archive_job_refreshes_the_tables_downstream(
    archive, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole code location as `dagster dev` loads it, configured by GHARCHIVE_URL: one
    scheduled-style run loads the hour and the filtered tables include its events."""
    from gh_pipeline.definitions import defs

    monkeypatch.setenv("GHARCHIVE_URL", archive.url)
    definitions = defs()
    schedule = definitions.resolve_schedule_def(ARCHIVE_SCHEDULE_NAME)
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    graph = definitions.resolve_asset_graph()
    for table in ("watch_events", "pull_request_events", "issues_events"):
        assert GHARCHIVE_HOURLY in graph.get(dg.AssetKey(table)).parent_keys
    job = definitions.resolve_job_def(ARCHIVE_JOB_NAME)
    result = job.execute_in_process(
        partition_key=HOUR_6, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert result.success
    done = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {"gharchive_hourly", "watch_events", "pull_request_events", "pr_intervals"} <= done
    events = {e["id"]: e for e in fixture_events("2021-07-21-6.json.gz")}
    for table, event_type in (
        ("watch_events", "WatchEvent"),
        ("pull_request_events", "PullRequestEvent"),
        ("issues_events", "IssuesEvent"),
    ):
        expected = {i for i, e in events.items() if e["type"] == event_type}
        rows = _query(data_dir, f"SELECT event_id, source FROM {table}")
        assert {r[0] for r in rows} == expected, table
        assert {r[1] for r in rows} <= {"gharchive"}


def _materialize_range(
    archive: ArchiveServer, data_dir: Path, first: str, last: str, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    """One run over a range of hours, as a backfill run of HOURS_PER_RUN hours is launched."""
    return dg.materialize(
        [gharchive_hourly],
        resources=_resources(archive, data_dir),
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
        },
        raise_on_error=False,
    )


def _per_hour_metadata(instance: dg.DagsterInstance) -> dict[str, dict[str, Any]]:
    """The latest materialization metadata of every hour, as the instance recorded it."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=GHARCHIVE_HOURLY), limit=1000
    ).records  # newest first
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        latest.setdefault(str(record.partition_key), {k: v.value for k, v in metadata.items()})
    return latest


def _materialized(instance: dg.DagsterInstance) -> set[str]:
    return set(instance.get_materialized_partitions(GHARCHIVE_HOURLY))


def test_backfills_run_many_hours_per_run() -> None:
    policy = gharchive_hourly.backfill_policy
    assert policy is not None and policy.max_partitions_per_run == HOURS_PER_RUN > 1


def test_a_failed_hour_in_a_multi_hour_run_costs_only_that_hour(archive, data_dir: Path) -> None:
    body = archive.files["2021-07-21-8.json.gz"].body
    archive.files["2021-07-21-8.json.gz"] = Served(body[: len(body) // 2])  # truncated upload
    lines = fixture_lines("2021-07-21-7.json.gz")
    archive.files["2021-07-21-7.json.gz"] = Served(gz([*lines[:10], "{broken", *lines[10:]]))
    instance = dg.DagsterInstance.ephemeral()
    result = _materialize_range(archive, data_dir, "2021-07-21-06:00", "2021-07-21-09:00", instance)
    # The run fails and says which hour and why; every other hour is stored and recorded as its
    # own partition, with its own metadata.
    assert not result.success
    failure = _failure_text(result)
    assert "1 of 4 hours were not loaded" in failure and "2021-07-21-08:00" in failure
    assert "truncated gzip" in failure
    assert _materialized(instance) == {"2021-07-21-06:00", "2021-07-21-07:00", "2021-07-21-09:00"}
    per_hour = _per_hour_metadata(instance)
    assert per_hour["2021-07-21-07:00"]["rejected_lines"] == 1  # the bad line costs only itself
    assert per_hour["2021-07-21-07:00"]["new_events"] == len({json.loads(x)["id"] for x in lines})
    assert per_hour["2021-07-21-06:00"]["era"] == "complete"
    stored = dict(_query(data_dir, "SELECT poll_id, count(*) FROM raw_events GROUP BY poll_id"))
    expected = {
        f"gharchive:2021-07-21-{h}": len(
            {e["id"] for e in fixture_events(f"2021-07-21-{h}.json.gz")}
        )
        for h in (6, 7, 9)
    }
    assert stored == expected
    # GH Archive fixes the file; retrying the failed hour loads it, and the range again adds nothing.
    archive.serve_fixture("2021-07-21-8.json.gz")
    assert _materialize(archive, data_dir, "2021-07-21-08:00", instance).success
    again = _materialize_range(archive, data_dir, "2021-07-21-06:00", "2021-07-21-09:00", instance)
    assert again.success
    assert {
        e.materialization.metadata["new_events"].value
        for e in again.get_asset_materialization_events()
    } == {0}
    total = sum(
        len({e["id"] for e in fixture_events(f"2021-07-21-{h}.json.gz")}) for h in (6, 7, 8, 9)
    )
    assert _query(data_dir, "SELECT count(*) FROM raw_events") == [(total,)]
    hours = _query(data_dir, "SELECT hour_start, era, new_events FROM archive_hours ORDER BY 1")
    assert [(h.hour, era, new) for h, era, new in hours] == [
        (h, "complete", 0) for h in (6, 7, 8, 9)
    ]
