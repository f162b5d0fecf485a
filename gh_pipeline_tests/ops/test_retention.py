"""Retention: raw JSON and landing files go after GH_PIPELINE_RAW_RETENTION_DAYS, typed data stays,
nothing not yet loaded is ever deleted; untracked live events are counted, then deleted, after
GH_PIPELINE_UNTRACKED_RETENTION_DAYS."""

import gzip
import json
import os
import re
from collections import Counter
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
from gh_pipeline_tests.support.fake_github import (
    FakeGitHub,
    archive_fixture_events,
    load_recorded,
    recorded_2019_feed,
)

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
        polled, data_dir, now=datetime.now(UTC) + timedelta(days=29), days=30, untracked_days=30
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

    dry = retention.apply_retention(
        polled, data_dir, now=later, days=30, untracked_days=None, dry_run=True
    )
    assert (dry.rows_pruned, dry.files_deleted, dry.bytes_deleted) == (255, 2, size)
    assert warehouse.scalar(polled, "SELECT count(event) FROM raw_events") == 255
    assert landing.list_landing_files(landing_root) == files

    report = retention.apply_retention(polled, data_dir, now=later, days=30, untracked_days=None)
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

    again = retention.apply_retention(polled, data_dir, now=later, days=30, untracked_days=None)
    assert (again.rows_pruned, again.files_deleted) == (0, 0)


def test_pruned_events_still_count_as_seen(polled, data_dir, tmp_path):
    """Exactly-once survives pruning: the typed event_id is what dedup looks at."""
    line = json.dumps(load_recorded(DUCKDB_FEED)[0])
    retention.apply_retention(
        polled, data_dir, now=datetime.now(UTC) + timedelta(days=31), days=30, untracked_days=None
    )
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
        conn, data_dir, now=datetime.now(UTC) + timedelta(days=31), days=30, untracked_days=None
    )
    assert report.rows_pruned == 100
    assert warehouse.scalar(conn, "SELECT count(event) FROM raw_events") == 0
    conn.close()


def test_zero_days_keeps_everything(polled, data_dir):
    report = retention.apply_retention(
        polled, data_dir, now=datetime(2100, 1, 1, tzinfo=UTC), days=None, untracked_days=None
    )
    assert report.cutoff is None
    assert warehouse.scalar(polled, "SELECT count(event) FROM raw_events") == 255
    assert warehouse.scalar(polled, "SELECT count(*) FROM untracked_event_counts") == 0
    assert "disabled" in report.summary()


# Typed out here rather than taken from the catalogue: the tests judge the code against what the
# product promises to track.
TRACKED = {"WatchEvent", "PullRequestEvent", "IssuesEvent"}


def _age(conn: duckdb.DuckDBPyConnection, data_dir: Path, days: int) -> None:
    """Make everything stored look `days` older: rows by ingested_at, files by their day folder
    and their modification time."""
    conn.execute(
        "UPDATE raw_events SET ingested_at = ingested_at - to_days($d::INTEGER)", {"d": days}
    )
    api = settings.landing_dir(data_dir) / "api"
    for folder in list(api.iterdir()):
        older = datetime.fromisoformat(folder.name) - timedelta(days=days)
        moved = folder.rename(api / older.strftime("%Y-%m-%d"))
        for path in moved.iterdir():
            mtime = path.stat().st_mtime - days * 86400
            os.utime(path, (mtime, mtime))


def _hour(created_at: str) -> datetime:
    return datetime.fromisoformat(created_at.replace("Z", "+00:00")).replace(
        minute=0, second=0, microsecond=0
    )


def _counts(conn: duckdb.DuckDBPyConnection) -> Counter:
    rows = conn.execute(
        "SELECT hour, event_type, source, events FROM untracked_event_counts"
    ).fetchall()
    return Counter({(h.astimezone(UTC), t, s): n for h, t, s, n in rows})


def test_untracked_retention_days_default_zero_and_bad_values(monkeypatch):
    assert settings.untracked_retention_days("") == 1
    assert settings.untracked_retention_days(" 3 ") == 3
    assert settings.untracked_retention_days("0") is None
    for bad in ("a day", "-2", "1.5"):
        with pytest.raises(ValueError, match="GH_PIPELINE_UNTRACKED_RETENTION_DAYS") as err:
            settings.untracked_retention_days(bad)
        assert repr(bad) in str(err.value)
    monkeypatch.setenv(settings.ENV_UNTRACKED_RETENTION_DAYS, "7")
    assert settings.untracked_retention_days() == 7
    monkeypatch.setenv(settings.ENV_UNTRACKED_RETENTION_DAYS, "weekly")
    with pytest.raises(ValueError, match="GH_PIPELINE_UNTRACKED_RETENTION_DAYS"):
        settings.untracked_retention_days()


def _load(
    conn: duckdb.DuckDBPyConnection,
    tmp_path: Path,
    events: list[dict[str, Any]],
    *,
    poll_id: str,
    source: str,
    ingested_at: datetime,
) -> None:
    """Load events as a poll (or archive hour) of `source` did, stored at `ingested_at`. The file
    is not a landing file: its poll's landing file is gone, as after raw retention."""
    path = tmp_path / f"{poll_id}.ndjson"
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    raw.load_ndjson(conn, path, poll_id=poll_id, source=source)
    conn.execute(
        "UPDATE raw_events SET ingested_at = $t WHERE poll_id = $p",
        {"t": ingested_at, "p": poll_id},
    )


def test_old_untracked_live_events_are_counted_then_deleted(data_dir, tmp_path):
    """The counts equal what was deleted, and what must stay stays: tracked types, GH Archive rows,
    watched repositories' rows (named in GH_PIPELINE_REPOS in another case, in watched_repos, or
    released by a repository feed), rows inside the window. A second run adds nothing twice; a
    later batch in the same hours adds to the same counts."""
    conn = warehouse.connect(settings.warehouse_path(data_dir))
    # Buckets in UTC whatever the session's zone (India is 30 minutes off the hour).
    conn.execute("SET TimeZone = 'Asia/Kolkata'")
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=2), now - timedelta(hours=3)
    feed = recorded_2019_feed()  # 155 real /events events, newest first
    first, second, fresh = feed[:60], feed[60:120], feed[120:]
    archive = [e for e in archive_fixture_events() if e["id"] not in {x["id"] for x in feed}][:300]

    untracked_old = [e for e in first + second if e["type"] not in TRACKED]
    repos = Counter(e["repo"]["name"] for e in untracked_old)
    # Three repositories the 2019 feed has untracked events of, watched three different ways.
    by_env, by_table, by_feed = (name for name, _ in repos.most_common(3))
    conn.execute(
        "INSERT INTO watched_repos (repo_name, status) VALUES ($r, 'unwatched')",
        {"r": by_table.upper()},
    )
    feed_released = next(e for e in untracked_old if e["repo"]["name"] == by_feed)
    conn.execute(
        "INSERT INTO watched_repo_events VALUES ($r, $id, 'some-poll')",
        {"r": by_feed, "id": feed_released["id"]},
    )
    watched = [by_env.swapcase()]

    _load(conn, tmp_path, first, poll_id="poll-a", source="api", ingested_at=old)
    _load(conn, tmp_path, archive, poll_id="gharchive:x", source="gharchive", ingested_at=old)
    _load(conn, tmp_path, fresh, poll_id="poll-c", source="api", ingested_at=recent)

    def doomed(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            e
            for e in events
            if e["type"] not in TRACKED
            and e["repo"]["name"].lower() not in {by_env.lower(), by_table.lower()}
            and e["id"] != feed_released["id"]
        ]

    expected_first = Counter((_hour(e["created_at"]), e["type"], "api") for e in doomed(first))
    assert sum(expected_first.values()) > 20  # the fixture really exercises the rollup
    all_ids = {e["id"] for e in first + archive + fresh}

    dry = retention.apply_retention(conn, data_dir, now=now, watched=watched, dry_run=True)
    assert dry.untracked_deleted == sum(expected_first.values())
    assert dict(dry.untracked_by_type) == dict(Counter(e["type"] for e in doomed(first)))
    assert "would roll up and delete" in dry.summary()
    assert _counts(conn) == Counter()
    assert {r[0] for r in conn.execute("SELECT event_id FROM raw_events").fetchall()} == all_ids

    report = retention.apply_retention(conn, data_dir, now=now, watched=watched)
    assert report.untracked_deleted == sum(expected_first.values())
    assert report.untracked_hours == len(expected_first)
    assert _counts(conn) == expected_first
    kept = {r[0] for r in conn.execute("SELECT event_id FROM raw_events").fetchall()}
    assert kept == all_ids - {e["id"] for e in doomed(first)}

    again = retention.apply_retention(conn, data_dir, now=now, watched=watched)
    assert again.untracked_deleted == 0
    assert _counts(conn) == expected_first

    # A later poll of events from the same hours: its counts are added to the same cells.
    _load(conn, tmp_path, second, poll_id="poll-b", source="api", ingested_at=old)
    expected_second = Counter((_hour(e["created_at"]), e["type"], "api") for e in doomed(second))
    assert set(expected_first) & set(expected_second)  # the upsert is really exercised
    retention.apply_retention(conn, data_dir, now=now, watched=watched)
    assert _counts(conn) == expected_first + expected_second
    kept = {r[0] for r in conn.execute("SELECT event_id FROM raw_events").fetchall()}
    assert kept == (all_ids | {e["id"] for e in second}) - {e["id"] for e in doomed(first + second)}
    # Every event is accounted for: a row in raw_events or a count.
    stored = warehouse.scalar(conn, "SELECT count(*) FROM raw_events")
    counted = warehouse.scalar(conn, "SELECT sum(events) FROM untracked_event_counts")
    assert stored + counted == len(all_ids) + len(second)

    assert (
        retention.apply_retention(conn, data_dir, now=now, untracked_days=None).untracked_deleted
        == 0
    )
    conn.close()


def test_rows_of_a_kept_landing_file_stay_until_the_file_goes(polled, data_dir):
    """Raw retention 7 days, untracked 1: the rows wait for their landing files, so the files
    never look unloaded; once the files go, the rows are counted and deleted."""
    feed = recorded_2019_feed() + load_recorded(DUCKDB_FEED)
    untracked = [e for e in feed if e["type"] not in TRACKED]
    expected = Counter((_hour(e["created_at"]), e["type"], "api") for e in untracked)
    root = settings.landing_dir(data_dir)
    files = landing.list_landing_files(root)
    _age(polled, data_dir, 3)

    kept = retention.apply_retention(polled, data_dir, days=7, untracked_days=1)
    assert (kept.files_deleted, kept.untracked_deleted) == (0, 0)
    assert warehouse.scalar(polled, "SELECT count(*) FROM raw_events") == 255

    _age(polled, data_dir, 5)  # 8 days old now
    report = retention.apply_retention(polled, data_dir, days=7, untracked_days=1)
    assert report.files_deleted == len(files) == 2
    assert report.files_kept_unloaded == ()
    assert report.untracked_deleted == len(untracked)
    assert _counts(polled) == expected
    assert warehouse.scalar(polled, "SELECT count(*) FROM raw_events") == 255 - len(untracked)
    assert landing.list_landing_files(root) == []


def test_landing_files_go_by_the_hour_and_an_unloaded_one_stays(polled, data_dir):
    """Hourly pruning: a loaded file from an hour that ended before the cutoff goes, one from the
    cutoff's own hour stays. Untracked rows wait while a file that may repeat them is on disk (the
    second poll's file repeats events of the first), so that file is still seen as loaded when its
    hour comes; then the rows are counted and deleted. An old file of a crashed poll stays through
    all of it."""
    untracked = [
        e for e in recorded_2019_feed() + load_recorded(DUCKDB_FEED) if e["type"] not in TRACKED
    ]
    root = settings.landing_dir(data_dir)
    p0, p1 = landing.list_landing_files(root)
    now = datetime(2030, 5, 6, 12, 30, tzinfo=UTC)
    cutoff = now - timedelta(days=1)  # 2030-05-05 12:30

    def place(path: Path, written: datetime) -> Path:
        """The poll's file and rows as if it had run at `written`."""
        folder = root / "api" / written.strftime("%Y-%m-%d")
        folder.mkdir(parents=True, exist_ok=True)
        moved = path.rename(folder / path.name)
        os.utime(moved, (written.timestamp(), written.timestamp()))
        polled.execute(
            "UPDATE raw_events SET ingested_at = $t WHERE poll_id = $p",
            {"t": written, "p": landing.poll_id_of(path)},
        )
        return moved

    ended = place(p0, datetime(2030, 5, 5, 11, 59, tzinfo=UTC))  # its hour ended at 12:00
    current = place(p1, datetime(2030, 5, 5, 12, 5, tzinfo=UTC))  # its hour ends at 13:00
    repeated = warehouse.scalar(polled, "SELECT count(*) FROM raw_events WHERE poll_id = 'p0'")
    with gzip.open(current, "rt", encoding="utf-8") as fh:
        in_current = {json.loads(line)["id"] for line in fh}
    assert len(in_current) > 255 - repeated  # p1's file repeats events first stored by p0
    orphan_event = dict(load_recorded(DUCKDB_FEED)[0], id="99000000777", type="PushEvent")
    orphan = landing.write_landing_file(
        landing.landing_path(root, source="api", poll_id="crashed", at=cutoff), [orphan_event]
    )
    os.utime(orphan, (cutoff.timestamp() - 7200, cutoff.timestamp() - 7200))

    report = retention.apply_retention(polled, data_dir, now=now)
    assert not ended.exists()
    assert current.exists() and orphan.exists()
    assert report.files_kept_unloaded == (orphan,)
    assert report.untracked_deleted == 0  # p1's file may repeat them
    assert warehouse.scalar(polled, "SELECT count(*) FROM raw_events") == 255

    later = retention.apply_retention(polled, data_dir, now=now + timedelta(hours=1))
    assert not current.exists() and orphan.exists()
    assert later.files_kept_unloaded == (orphan,)  # the rollup did not make it look loaded
    assert later.untracked_deleted == len(untracked)
    assert _counts(polled) == Counter((_hour(e["created_at"]), e["type"], "api") for e in untracked)
    last = retention.apply_retention(polled, data_dir, now=now + timedelta(hours=2))
    assert (last.files_kept_unloaded, last.untracked_deleted) == ((orphan,), 0)


def test_retention_job_runs_on_a_default_on_schedule(polled, data_dir, monkeypatch):
    untracked = [
        e for e in recorded_2019_feed() + load_recorded(DUCKDB_FEED) if e["type"] not in TRACKED
    ]
    _age(polled, data_dir, 40)
    polled.close()
    from gh_pipeline.definitions import defs

    definitions = defs()
    schedule = definitions.resolve_schedule_def(maintenance.RETENTION_SCHEDULE_NAME)
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == maintenance.RETENTION_JOB_NAME
    assert schedule.cron_schedule == "17 * * * *"  # hourly
    job = definitions.resolve_job_def(maintenance.RETENTION_JOB_NAME)

    for name, bad in (
        (settings.ENV_RAW_RETENTION_DAYS, "soon"),
        (settings.ENV_UNTRACKED_RETENTION_DAYS, "-1"),
    ):
        monkeypatch.setenv(name, bad)
        with dg.DagsterInstance.ephemeral() as instance:
            failed = job.execute_in_process(instance=instance, raise_on_error=False)
        assert not failed.success  # a bad setting fails loudly and prunes nothing
        assert name in str(failed.failure_data_for_node("apply_raw_retention").error)
        monkeypatch.delenv(name)
        with duckdb.connect(str(settings.warehouse_path(data_dir)), read_only=True) as conn:
            assert warehouse.scalar(conn, "SELECT count(event) FROM raw_events") == 255
            assert warehouse.scalar(conn, "SELECT count(*) FROM raw_events") == 255

    monkeypatch.setenv(settings.ENV_RAW_RETENTION_DAYS, "45")
    with dg.DagsterInstance.ephemeral() as instance:
        kept = job.execute_in_process(instance=instance)
    meta = _observed(kept)
    # The landing files are younger than 45 days, so their rows stay too.
    assert (meta["events_pruned"], meta["untracked_events_deleted"]) == (0, 0)
    assert meta["dagster/row_count"] == 255

    monkeypatch.delenv(settings.ENV_RAW_RETENTION_DAYS)  # the defaults: 1 day each
    with dg.DagsterInstance.ephemeral() as instance:
        dry = job.execute_in_process(
            instance=instance,
            run_config={"ops": {"apply_raw_retention": {"config": {"dry_run": True}}}},
        )
    meta = _observed(dry)
    assert meta["untracked_events_rolled_up"] == len(untracked)
    assert meta["untracked_events_deleted"] == 0
    with dg.DagsterInstance.ephemeral() as instance:
        pruned = job.execute_in_process(instance=instance)
    meta = _observed(pruned)
    assert (meta["retention_days"], meta["untracked_retention_days"]) == (1, 1)
    assert (meta["events_pruned"], meta["landing_files_deleted"]) == (255, 2)
    assert meta["untracked_events_deleted"] == len(untracked)
    assert meta["untracked_rolled_up_by_type"] == dict(Counter(e["type"] for e in untracked))
    assert meta["dagster/row_count"] == 255 - len(untracked)
    assert meta["landing_bytes_after"] == 0
    with duckdb.connect(str(settings.warehouse_path(data_dir)), read_only=True) as conn:
        assert warehouse.scalar(conn, "SELECT count(event) FROM raw_events") == 0
        assert warehouse.scalar(conn, "SELECT count(*) FROM pull_request_events") > 0
        assert warehouse.scalar(conn, "SELECT sum(events) FROM untracked_event_counts") == len(
            untracked
        )


def _observed(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    assert result.success
    observation = next(
        e.asset_observation_data.asset_observation
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    )
    return {k: v.value for k, v in observation.metadata.items()}


def test_the_command_refuses_a_bad_setting_naming_it(data_dir, monkeypatch, capsys):
    monkeypatch.setenv(settings.ENV_UNTRACKED_RETENTION_DAYS, "a week")
    with pytest.raises(SystemExit) as exit_info:
        retention.main(["--dry-run"])
    assert exit_info.value.code == 2
    assert "GH_PIPELINE_UNTRACKED_RETENTION_DAYS" in capsys.readouterr().err


def test_the_command_dry_run_reports_the_rollup_and_changes_nothing(data_dir, tmp_path, capsys):
    feed = recorded_2019_feed()
    conn = warehouse.connect(settings.warehouse_path(data_dir))
    old = datetime.now(UTC) - timedelta(days=3)
    _load(conn, tmp_path, feed, poll_id="old-poll", source="api", ingested_at=old)
    conn.close()
    untracked = sum(1 for e in feed if e["type"] not in TRACKED)
    assert retention.main(["--dry-run"]) == 0
    assert f"would roll up and delete {untracked} untracked live events" in capsys.readouterr().out
    with duckdb.connect(str(settings.warehouse_path(data_dir)), read_only=True) as conn:
        assert warehouse.scalar(conn, "SELECT count(*) FROM raw_events") == len(feed)
        assert warehouse.scalar(conn, "SELECT count(*) FROM untracked_event_counts") == 0
