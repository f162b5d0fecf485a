"""Rebuilding the warehouse from landing files: a warehouse filled by real polls of the fake
GitHub is rebuilt into a fresh file and compared table by table, row by row."""

import functools
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from gh_pipeline import settings, warehouse
from gh_pipeline.archive import bulk_load, fetch, hours
from gh_pipeline.defs.ops import maintenance
from gh_pipeline.live import ingest
from gh_pipeline.live.github_client import GitHubEventsClient
from gh_pipeline.model import metrics
from gh_pipeline.ops import recovery
from gh_pipeline.publish import snapshot
from gh_pipeline.warehouse import catalogue
from gh_pipeline_tests.support.archive_server import FIXTURES as ARCHIVE_FIXTURES
from gh_pipeline_tests.support.fake_github import FakeGitHub, load_recorded, recorded_2019_feed

REPO_ROOT = Path(__file__).resolve().parents[2]
DUCKDB_FEED = "repo-events-duckdb-2023-page01.json"
AS_OF = datetime(2023, 4, 7, 21, 0, tzinfo=UTC)

# Columns that say when or in which order a row was written, not what it holds.
WRITE_TIME_COLUMNS = {"ingested_at", "seq", "rejected_at", "updated_at"}
COMPARED_TABLES = (
    "raw_events",
    "rejected_events",
    *catalogue.FILTERED_TABLES,
    metrics.PR_INTERVALS,
    metrics.REPO_PR_COUNTS,
    metrics.EVENT_COUNTS,
)


def _no_sleep(seconds: float) -> None:
    pass


def _feed() -> list[dict[str, Any]]:
    events = recorded_2019_feed() + load_recorded(DUCKDB_FEED)
    return sorted(events, key=lambda e: e["created_at"], reverse=True)


def _poll(fake: FakeGitHub, conn: duckdb.DuckDBPyConnection, data_dir: Path, poll_id: str):
    with GitHubEventsClient(api_url=fake.url, retry_base_s=0.001, sleep=_no_sleep) as client:
        return ingest.poll_once(
            client=client, conn=conn, data_dir=data_dir, poll_id=poll_id, sleep=_no_sleep
        )


@pytest.fixture
def polled(data_dir: Path) -> Iterator[dict[str, Any]]:
    """A warehouse filled the way the pipeline fills it: four polls of a growing feed (one answered
    304), overlapping pages, one malformed event, the tick's incremental refreshes after each."""
    feed = _feed()  # 255 real events, newest first
    oldest, middle, newest = feed[135:], feed[55:135], feed[:55]
    bad = dict(newest[0], id="99000000042", created_at="yesterday-ish")
    conn = warehouse.connect(settings.warehouse_path(data_dir))
    received = []
    with FakeGitHub(oldest, poll_interval=60) as fake:
        received.append(_poll(fake, conn, data_dir, "poll-1").received)
        metrics.refresh_all(conn, as_of=AS_OF)
        fake.push(middle)
        received.append(_poll(fake, conn, data_dir, "poll-2").received)
        metrics.refresh_all(conn, as_of=AS_OF)
        fake.push([bad, *newest])
        received.append(_poll(fake, conn, data_dir, "poll-3").received)
        metrics.refresh_all(conn, as_of=AS_OF)
        not_modified = _poll(fake, conn, data_dir, "poll-4")
        metrics.refresh_all(conn, as_of=AS_OF)
    assert not_modified.etag_matched and not_modified.landing_file is None
    assert warehouse.scalar(conn, "SELECT count(*) FROM raw_events") == 255
    assert warehouse.scalar(conn, "SELECT count(*) FROM rejected_events") == 1
    conn.close()
    yield {"data_dir": data_dir, "received": received}


def _rows(conn: duckdb.DuckDBPyConnection, table: str) -> tuple[list[str], list[tuple]]:
    columns = [
        r[0]
        for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = $t"
            " ORDER BY ordinal_position",
            {"t": table},
        ).fetchall()
        if r[0] not in WRITE_TIME_COLUMNS
    ]
    listed = ", ".join(columns)
    return columns, conn.execute(f"SELECT {listed} FROM {table} ORDER BY ALL").fetchall()


def _assert_same_tables(original: Path, rebuilt: Path) -> dict[str, int]:
    sizes = {}
    with (
        duckdb.connect(str(original), read_only=True) as a,
        duckdb.connect(str(rebuilt), read_only=True) as b,
    ):
        for table in COMPARED_TABLES:
            cols_a, rows_a = _rows(a, table)
            cols_b, rows_b = _rows(b, table)
            assert cols_a == cols_b, table
            assert rows_a == rows_b, f"{table} differs after the rebuild"
            sizes[table] = len(rows_a)
    return sizes


def test_rebuild_into_a_fresh_file_equals_the_original_row_for_row(polled, tmp_path):
    data_dir = polled["data_dir"]
    target = tmp_path / "rebuilt.duckdb"
    result = recovery.rebuild(data_dir, target=target, as_of=AS_OF)
    assert result.raw_events == 255
    assert result.rejected_lines == 1
    assert len(result.plan.files) == 3
    assert result.plan.lines == sum(polled["received"])

    sizes = _assert_same_tables(settings.warehouse_path(data_dir), target)
    # Every table really holds something, so the comparison compares something.
    assert all(n > 0 for n in sizes.values()), sizes
    with duckdb.connect(str(target), read_only=True) as conn:
        # Each event keeps the poll that first saw it, though later polls landed it again.
        assert conn.execute(
            "SELECT poll_id, count(*) FROM raw_events GROUP BY 1 ORDER BY 1"
        ).fetchall() == [("poll-1", 120), ("poll-2", 80), ("poll-3", 55)]
        # Request history is not in landing files: it is the one thing a rebuild cannot restore.
        assert warehouse.scalar(conn, "SELECT count(*) FROM poll_log") == 0


def test_rebuild_keeps_the_counts_of_rolled_up_untracked_events(polled, tmp_path):
    """Those counts are in no landing file: the rebuild takes them from the old warehouse."""
    data_dir = polled["data_dir"]
    counts = [
        (datetime(2019, 10, 20, 7, tzinfo=UTC), "PushEvent", "api", 412),
        (datetime(2019, 10, 20, 8, tzinfo=UTC), "CreateEvent", "api", 37),
    ]
    with duckdb.connect(str(settings.warehouse_path(data_dir))) as conn:
        conn.executemany("INSERT INTO untracked_event_counts VALUES (?, ?, ?, ?)", counts)
    target = tmp_path / "rebuilt.duckdb"
    recovery.rebuild(data_dir, target=target, as_of=AS_OF)
    with duckdb.connect(str(target), read_only=True) as conn:
        rows = conn.execute(
            "SELECT hour, event_type, source, events FROM untracked_event_counts ORDER BY hour"
        ).fetchall()
    assert [(h.astimezone(UTC), t, s, n) for h, t, s, n in rows] == counts


def test_rebuild_replaces_a_corrupted_warehouse_and_keeps_the_old_file(polled, tmp_path):
    data_dir = polled["data_dir"]
    live = settings.warehouse_path(data_dir)
    reference = tmp_path / "reference.duckdb"
    reference.write_bytes(live.read_bytes())
    # Damage the middle of the file: DuckDB can no longer read it.
    with live.open("r+b") as fh:
        fh.seek(4096)
        fh.write(os.urandom(live.stat().st_size - 8192))
    damaged = hashlib.sha256(live.read_bytes()).hexdigest()

    result = recovery.rebuild(data_dir, as_of=AS_OF)
    assert result.backup is not None
    assert hashlib.sha256(result.backup.read_bytes()).hexdigest() == damaged
    assert not live.with_name(live.name + recovery.REBUILD_SUFFIX).exists()
    _assert_same_tables(reference, live)
    # Readers see the rebuilt tables too (the parts the table's snapshot manifest lists).
    published = snapshot.current_snapshot(settings.snapshot_dir(data_dir), "pull_request_events")
    assert published is not None
    with duckdb.connect() as reader:
        counted = reader.execute(
            "SELECT count(*) FROM read_parquet($p)",
            {"p": [str(f) for f in published.files]},
        ).fetchall()[0][0]
    with duckdb.connect(str(live), read_only=True) as conn:
        assert counted == warehouse.scalar(conn, "SELECT count(*) FROM pull_request_events") > 0


def _run_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, settings.ENV_DATA_DIR: str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "gh_pipeline.ops.recovery", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_dry_run_reports_what_it_would_load_and_changes_nothing(polled):
    data_dir = polled["data_dir"]
    live = settings.warehouse_path(data_dir)
    before = hashlib.sha256(live.read_bytes()).hexdigest()
    done = _run_cli(data_dir, "--dry-run")
    assert done.returncode == 0, done.stderr
    lines = sum(polled["received"])
    assert f"would load 3 landing files, {lines} lines" in done.stdout
    today = datetime.now(UTC).date().isoformat()
    assert re.search(rf"api\s+{today}\s+3\s+{lines}\n", done.stdout), done.stdout
    assert hashlib.sha256(live.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in data_dir.iterdir() if p.name.startswith("warehouse")) == [
        "warehouse.duckdb"
    ]


def test_rebuild_refuses_while_another_process_holds_the_warehouse(polled):
    data_dir = polled["data_dir"]
    live = settings.warehouse_path(data_dir)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('open', flush=True);"
            " time.sleep(60)",
            str(live),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        before = live.stat().st_mtime_ns
        with pytest.raises(recovery.WarehouseBusy, match="open in another process"):
            recovery.rebuild(data_dir)
        done = _run_cli(data_dir)
        assert done.returncode == 2
        assert "not rebuilt" in done.stdout
        assert live.stat().st_mtime_ns == before
    finally:
        holder.kill()
        holder.wait()


def test_rebuild_job_in_dagster_dry_run_by_default_then_for_real(polled, tmp_path):
    data_dir = polled["data_dir"]
    live = settings.warehouse_path(data_dir)
    reference = tmp_path / "reference.duckdb"
    reference.write_bytes(live.read_bytes())
    from gh_pipeline.definitions import defs

    job = defs().resolve_job_def(maintenance.REBUILD_JOB_NAME)
    with dg.DagsterInstance.ephemeral() as instance:
        dry = job.execute_in_process(instance=instance)
        assert dry.success
        assert not list(data_dir.glob("warehouse.duckdb.before-rebuild-*"))
        real = job.execute_in_process(
            instance=instance,
            run_config={"ops": {"rebuild_warehouse_from_landing": {"config": {"dry_run": False}}}},
        )
        assert real.success
        observed = [
            e.asset_observation_data.asset_observation
            for e in real.all_events
            if e.event_type_value == "ASSET_OBSERVATION"
        ]
    assert observed[0].metadata["dagster/row_count"].value == 255
    assert len(list(data_dir.glob("warehouse.duckdb.before-rebuild-*"))) == 1
    with duckdb.connect(str(live), read_only=True) as conn:
        # The job recomputes event_counts at its own as_of; everything else must match.
        as_of = warehouse.scalar(conn, "SELECT max(as_of) FROM event_counts")
    assert as_of > AS_OF
    with duckdb.connect(str(reference)) as ref:
        metrics.rebuild_metrics(ref, as_of=as_of)
    _assert_same_tables(reference, live)


def test_landing_files_replay_in_poll_order_whatever_their_names(tmp_path):
    """Poll ids are run ids (random): the replay order comes from the events, not the names."""
    from gh_pipeline.live import landing

    feed = _feed()
    root = settings.landing_dir(tmp_path)
    day = datetime(2024, 5, 1, tzinfo=UTC)
    landing.write_landing_file(
        landing.landing_path(root, source="api", poll_id="aaa-second", at=day), feed[:150]
    )
    earlier = landing.write_landing_file(
        landing.landing_path(root, source="api", poll_id="zzz-first", at=day), feed[100:]
    )
    # File times agree with the names, not with the polls: the events must decide.
    os.utime(earlier, ns=(time.time_ns(), time.time_ns()))
    files = recovery.scan_landing(root)
    assert [f.poll_id for f in files] == ["zzz-first", "aaa-second"]
    assert [f.lines for f in files] == [155, 150]


@pytest.fixture
def archive_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """GH Archive on 127.0.0.1: the real sample hours in fixtures/gharchive, served over HTTP."""
    directory = ARCHIVE_FIXTURES
    handler = functools.partial(QuietFiles, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv(settings.ENV_GHARCHIVE_URL, url)
    yield url
    server.shutdown()
    server.server_close()


class QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _load_hour(conn: duckdb.DuckDBPyConnection, url: str, data_dir: Path, hour: int) -> None:
    archive_hour = hours.ArchiveHour(datetime(2021, 7, 21, hour, tzinfo=UTC))
    with fetch.make_client() as client:
        download = fetch.download_hour(client, archive_hour, url, fetch.download_dir(data_dir))
    try:
        bulk_load.load_hour_file(conn, download.path, archive_hour)
    finally:
        download.path.unlink()


def test_rebuild_downloads_the_archive_hours_again_in_their_original_order(
    data_dir, archive_server, tmp_path
):
    conn = warehouse.connect(settings.warehouse_path(data_dir))
    _load_hour(conn, archive_server, data_dir, 7)
    with gzip.open(ARCHIVE_FIXTURES / "2021-07-21-7.json.gz", "rt") as fh:
        seven = [json.loads(line) for line in fh][:20]
    # The live feed then serves 20 events the archive hour already brought: they stay 'gharchive'.
    # One page (80 events), so the poll takes it whole although it holds known events.
    feed = sorted(seven + recorded_2019_feed()[:60], key=lambda e: e["created_at"], reverse=True)
    with FakeGitHub(feed, poll_interval=60) as fake:
        _poll(fake, conn, data_dir, "poll-1")
    _load_hour(conn, archive_server, data_dir, 8)
    metrics.refresh_all(conn, as_of=AS_OF)
    sources = dict(conn.execute("SELECT source, count(*) FROM raw_events GROUP BY 1").fetchall())
    conn.close()
    assert sources == {"gharchive": 400, "api": 60}

    plan = recovery.plan_rebuild(data_dir)
    assert plan.original_order
    assert [h.name for h in plan.archive_hours] == ["2021-07-21-7", "2021-07-21-8"]
    assert [i.poll_id for i in plan.items] == [
        "gharchive:2021-07-21-7",
        "poll-1",
        "gharchive:2021-07-21-8",
    ]
    assert f"would download and load 2 GH Archive hours from {archive_server}" in plan.summary()

    target = tmp_path / "rebuilt.duckdb"
    result = recovery.rebuild(data_dir, target=target, as_of=AS_OF)
    assert result.raw_events == 460
    _assert_same_tables(settings.warehouse_path(data_dir), target)
    # The downloads were temporary, as in the archive asset.
    assert not list(fetch.download_dir(data_dir).glob("*"))


def test_without_a_readable_warehouse_archive_hours_must_be_named(data_dir, archive_server):
    conn = warehouse.connect(settings.warehouse_path(data_dir))
    _load_hour(conn, archive_server, data_dir, 6)
    conn.close()
    settings.warehouse_path(data_dir).write_bytes(b"not a database")
    plan = recovery.plan_rebuild(data_dir)
    assert plan.warehouse_state.startswith("does not open")
    assert plan.archive_hours == ()
    assert any("cannot say which GH Archive hours" in n for n in plan.notes)

    named = hours.ArchiveHour(datetime(2021, 7, 21, 6, tzinfo=UTC))
    result = recovery.rebuild(data_dir, archive_hours=[named], as_of=AS_OF)
    assert result.raw_events == 200
    assert result.backup is not None and result.backup.read_bytes() == b"not a database"


def test_a_rebuild_reloads_archive_hours_in_the_configured_scope(
    data_dir, archive_server, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    # A history kept for two repositories only (GH_PIPELINE_ARCHIVE_SCOPE=watched) is rebuilt as
    # that, not as every event of the hour.
    repos = "georges7haddad/bubblyeverafter VPNSUPERAPP/fast"
    monkeypatch.setenv(settings.ENV_ARCHIVE_SCOPE, "watched")
    monkeypatch.setenv(settings.ENV_REPOS, repos)
    hour = hours.ArchiveHour(datetime(2021, 7, 21, 6, tzinfo=UTC))
    conn = warehouse.connect(settings.warehouse_path(data_dir))
    with fetch.make_client() as client:
        download = fetch.download_hour(client, hour, archive_server, fetch.download_dir(data_dir))
    bulk_load.load_hour_file(conn, download.path, hour, scope=settings.archive_scope())
    download.path.unlink()
    conn.close()
    with gzip.open(ARCHIVE_FIXTURES / "2021-07-21-6.json.gz", "rt") as fh:
        events = [json.loads(line) for line in fh if line.strip()]
    wanted = {r.lower() for r in repos.split()}
    expected = {e["id"] for e in events if e["repo"]["name"].lower() in wanted}
    assert len(expected) == 10

    target = tmp_path / "rebuilt.duckdb"
    result = recovery.rebuild(data_dir, target=target, archive_hours=[hour], as_of=AS_OF)
    assert result.raw_events == len(expected)
    rebuilt = duckdb.connect(str(target), read_only=True)
    try:
        ids = {r[0] for r in rebuilt.execute("SELECT event_id FROM raw_events").fetchall()}
    finally:
        rebuilt.close()
    assert ids == expected
