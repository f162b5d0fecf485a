"""Soak benchmark: the real pipeline unattended, and what it costs in Dagster's storage.

    uv run python -m gh_pipeline_tests.benchmarks.soak                 # 300 polls, 10,000 runs
    uv run python -m gh_pipeline_tests.benchmarks.soak --polls 60 --ui-runs 2000
    uv run python -m gh_pipeline_tests.benchmarks.soak --ui-only       # UI timing on the last soak
    uv run python -m gh_pipeline_tests.benchmarks.soak --postgres --polls 30 --ui-runs 0
    uv run python -m gh_pipeline_tests.benchmarks.soak --ui-runs 0 --minutes 40 --heap-probe

Starts `uv run dagster dev` (the repository's dagster.yaml and workspace.yaml, in a fresh working
directory under <data>/benchmarks/soak) against the fake GitHub feed at a 1 s poll interval, with
`--batch` new real recorded events (trimmed to today's shape, fresh ids, cycling through the 255
recorded events) arriving every second,
and lets the real daemon and sensor poll until `--polls` poll runs have succeeded. Every 10 s it
samples the RSS of the daemon, the webserver and the code server, and the sizes of the Dagster
home (by part: run shards, index.db, runs.db, schedules.db, compute logs; with `--postgres`,
pg_database_size of a real throw-away PostgreSQL and the instance in deploy/postgres/dagster.yaml),
the warehouse, the landing files and the reader snapshots (also to <data>/benchmarks/soak-samples.jsonl).
`--minutes` bounds the polling; the figures are printed for however many polls succeeded. Then
it stops dagster dev and prints:

- Dagster storage per poll run: the growth of data/dagster_home over the soak divided by the poll
  runs (at the soak's cadence), by part; each poll run's own bytes (run shard, compute logs, its
  rows in the asset index) for runs that redrew the charts and runs in between; and the bytes a
  poll costs at one poll a minute: 9 between-redraw runs and 1 redraw in 10 (charts every 10
  min), a fifteenth of a data_quality_checks run (every 15 min), 12 sensor ticks, and runs.db's share;
- warehouse / landing / snapshot bytes per poll and per event;
- RSS over time (mean of each quarter of the samples, and the trend: MB per 100 poll runs over the
  whole soak and over its second half, a least-squares slope);
- the housekeeping job's effect: `housekeep` with the cutoff at the middle of the soak;
- the 30-day projection of data/ at one poll a minute with the default retention settings: what
  retention caps (a day of Dagster runs, the ticks dagster.yaml keeps, GH_PIPELINE_RAW_RETENTION_DAYS
  of raw JSON and landing files, GH_PIPELINE_UNTRACKED_RETENTION_DAYS of untracked events' rows)
  and what grows forever (the typed rows of tracked events, the tracked-event tables and their
  reader snapshots), at the soak's events per poll and at the
  feed's maximum of 300 (per-event bytes from this soak and from the disk cost benchmark);
- the UI's runs page and asset page GraphQL queries (p50/p95 of 20 calls each) against
  `dagster-webserver` once `--ui-runs` run records exist (cloned from the soak's real poll runs
  through DagsterInstance.add_run; their event logs are not cloned).

With `--heap-probe` the daemon and the code server also trace their Python heap
(heap_probe/sitecustomize.py, on their PYTHONPATH): per process, RSS and tracemalloc's traced
bytes by half of the soak and the types whose live objects grew most in the second half.

The figures are also written to <data>/benchmarks/soak.json.
"""

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx

from gh_pipeline import settings
from gh_pipeline.defs.live.jobs import POLL_JOB_NAME
from gh_pipeline.defs.ops.quality import QUALITY_JOB_NAME
from gh_pipeline_tests.benchmarks.disk_cost import _compacted
from gh_pipeline_tests.support import system_packages
from gh_pipeline_tests.support.dagster_process import (
    BIN,
    REPO_ROOT,
    base_env,
    free_port,
    group_processes,
    kill_group,
    process_environ,
    running,
    wait_for,
)
from gh_pipeline_tests.support.dagster_storage import POSTGRES_HOME
from gh_pipeline_tests.support.fake_github import FakeGitHub, numbered_feed, trim_event
from gh_pipeline_tests.support.postgres_server import PgDatabase, postgres_server

DAY_POLLS = 1440  # one poll a minute
SAMPLE_EVERY_S = 10.0
HEAP_PROBE = Path(__file__).resolve().parent / "heap_probe"  # its sitecustomize.py
# At one poll a minute: one poll run in 10 redraws the charts (every 10 minutes), a
# data_quality_checks run every 15 minutes, the poll sensor ticks every 5 s (11 skipped ticks and
# one that launches the run).
REDRAW_EVERY = settings.DEFAULT_CHART_REFRESH_MINUTES
QUALITY_RUNS_PER_POLL = 1 / 15
SKIPPED_TICKS_PER_POLL, RUN_TICKS_PER_POLL = 11, 1
# dagster.yaml's tick retention: skipped and successful ticks 1 day (quality schedule every
# 15 min and housekeeping hourly tick successfully too), each kept as long as the runs it launched.
TICKS_KEPT = DAY_POLLS * (SKIPPED_TICKS_PER_POLL + RUN_TICKS_PER_POLL) * 1 + (96 + 24) * 1
# The disk cost benchmark's per-event bytes (`--events 1000000 --shape trimmed`: a million events
# cycled from a larger pool of real events than the soak's 255; docs/operations.md#retention):
# landing gzip, warehouse in use with raw JSON less the compacted warehouse after retention, that
# compacted warehouse, and of it a tracked event's bytes (its typed row and filtered-table row)
# and an untracked one's (its typed row, until the rollup deletes it). The tracked figure still
# fell with scale (289, 193, 157 bytes at 0.1, 0.3, 1 M events: fixed block costs spread out).
DISK_COST_PER_EVENT = {
    "landing": 279,
    "warehouse_json": 477 - 82,
    "warehouse_typed": 81,
    "warehouse_typed_tracked": 157,
    "warehouse_typed_untracked": 66,
    # The tracked tables' reader snapshots, one Parquet part a table (`--events 300000 --shape
    # trimmed`), per tracked event. The benchmark's pool repeats its repositories and actors, which
    # Parquet's dictionaries compress better than a month of distinct names: a low estimate.
    "snapshot_per_tracked": 15.5,
}
# Share of the live feed's events of a tracked type: 33 of the 155 distinct events of the recorded
# GET /events session (gh_pipeline_tests/fixtures/api/events-2019-10-21-page*.json); the GH Archive
# samples there give 305 of 1,850 (16.5 %).
TRACKED_SHARE = 33 / 155
# Retention runs hourly (minute 17): raw JSON goes by ingested_at, so at most an hour past its
# window; landing files go by the hour they were written, so up to 1 h 17 min past it. Untracked
# rows also wait out retention.REPEAT_SPAN past the oldest landing file left: up to 2 h 17 min
# past the longer of their window and the raw one.
RAW_JSON_EXTRA_DAYS = 1 / 24
LANDING_EXTRA_DAYS = (1 + 17 / 60) / 24
UNTRACKED_EXTRA_DAYS = (2 + 17 / 60) / 24
RETENTION_CHOICES = (1, 2, 3, 7, 30)


def _du(path: Path) -> int:
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _files(pattern_dir: Path, prefix: str) -> int:
    return sum(_du(p) for p in pattern_dir.glob(f"{prefix}*")) if pattern_dir.exists() else 0


class Store:
    """Where the soak's Dagster storage lives: SQLite files under data/dagster_home (dagster.yaml)
    or a throw-away PostgreSQL database (deploy/postgres/dagster.yaml)."""

    def __init__(self, work: Path, database: PgDatabase | None) -> None:
        self.work = work
        self.database = database
        self.home = work / "data" / "dagster_home"
        self.history = self.home / "storage" / "history"

    @property
    def name(self) -> str:
        return "postgres" if self.database else "sqlite"

    @property
    def instance_dir(self) -> Path:
        return self.work / POSTGRES_HOME if self.database else self.work

    def env(self) -> dict[str, str]:
        if self.database is None:
            return {}
        return {"DAGSTER_HOME": str(self.instance_dir), **self.database.env()}

    def query(self, sql: str, db: str = "runs") -> list[tuple]:
        try:
            if self.database is not None:
                conn = self.database.connect()
                try:
                    cur = conn.cursor()
                    cur.execute(sql)
                    return cur.fetchall()
                finally:
                    conn.close()
            path = {
                "runs": self.history / "runs.db",
                "index": self.history / "runs" / "index.db",
                "schedules": self.home / "storage" / "schedules" / "schedules.db",
            }[db]
            if not path.exists():
                return []
            with sqlite3.connect(path, timeout=5) as conn:
                return conn.execute(sql).fetchall()
        except Exception as exc:  # tables not created yet
            if "does not exist" in str(exc) or "no such table" in str(exc):
                return []
            raise

    def runs(self) -> list[tuple[str, str, str]]:
        return [
            (r[0], r[1], r[2])
            for r in self.query(
                "SELECT run_id, pipeline_name, status FROM runs ORDER BY create_timestamp"
            )
        ]

    def parts(self) -> dict[str, int]:
        logs = _du(self.home / "logs")
        if self.database is not None:
            (size,) = self.query("SELECT pg_database_size(current_database())")[0]
            return {"pg_database": int(size), "logs": logs}
        runs_dir = self.history / "runs"
        index = _files(runs_dir, "index.db")
        return {
            "run_shards": _du(runs_dir) - index,
            "index_db": index,
            "runs_db": _files(self.history, "runs.db"),
            "schedules_db": _du(self.home / "storage" / "schedules"),
            "logs": logs,
        }

    def run_shard(self, run_id: str) -> int:
        return 0 if self.database else _files(self.history / "runs", f"{run_id}.db")

    def index_bytes_by_run(self) -> dict[str, int]:
        """The JSON each run left in the cross-run tables: its mirrored events (on PostgreSQL all
        its events: there is one event_logs table) and its check executions."""
        out: dict[str, int] = {}
        for sql in (
            "SELECT run_id, sum(length(event)) FROM event_logs GROUP BY run_id",
            "SELECT run_id, sum(length(coalesce(evaluation_event, ''))) "
            "FROM asset_check_executions GROUP BY run_id",
        ):
            for run_id, size in self.query(sql, db="index"):
                out[run_id] = out.get(run_id, 0) + int(size or 0)
        return out

    def ticks(self) -> int:
        return int(self.query("SELECT count(*) FROM job_ticks", db="schedules")[0][0])

    def table_sizes(self) -> dict[str, int]:
        if self.database is None:
            return {}
        rows = self.query(
            "SELECT relname, pg_total_relation_size(relid) FROM pg_catalog.pg_statio_user_tables "
            "ORDER BY 2 DESC LIMIT 8"
        )
        return {name: int(size) for name, size in rows}


def _group_rss(pgid: int) -> dict[str, int]:
    """RSS (bytes) of the dagster dev process group, by role (run workers: "other")."""
    out: dict[str, int] = {}
    for process in group_processes(pgid):
        try:
            status = Path(f"/proc/{process.pid}/status").read_text(encoding="ascii")
        except OSError:
            continue  # ended while we looked
        rss = next(
            (
                int(line.split()[1]) * 1024
                for line in status.splitlines()
                if line.startswith("VmRSS")
            ),
            0,
        )
        out[process.role] = out.get(process.role, 0) + rss
    return out


def _sizes(data: Path, store: Store) -> dict[str, Any]:
    parts = store.parts()
    return {
        "dagster": sum(parts.values()),
        "dagster_parts": parts,
        "warehouse": _du(settings.warehouse_path(data)),
        "landing": _du(settings.landing_dir(data)),
        "snapshot": _du(settings.snapshot_dir(data)),
    }


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


RUNS_QUERY = """
query Runs($limit: Int) { runsOrError(limit: $limit) { __typename ... on Runs { results {
  id runId status jobName startTime endTime updateTime tags { key value } assetSelection { path }
} } } }
"""
ASSET_QUERY = """
query Asset($key: AssetKeyInput!) { assetOrError(assetKey: $key) { __typename ... on Asset {
  key { path }
  assetMaterializations(limit: 25) { runId timestamp metadataEntries { label __typename } }
  definition { description groupName }
} } }
"""


def _time_query(url: str, query: str, variables: dict[str, Any], n: int = 20) -> dict[str, float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        answer = httpx.post(
            f"{url}/graphql", json={"query": query, "variables": variables}, timeout=120
        )
        times.append(time.perf_counter() - start)
        answer.raise_for_status()
        assert "errors" not in answer.json(), answer.text[:500]
    return {"p50_s": round(_pct(times, 0.5), 3), "p95_s": round(_pct(times, 0.95), 3)}


def _ui_timings(work: Path, ui_runs: int, log: Path) -> dict[str, Any]:
    import dagster as dg

    os.chdir(work)
    with dg.DagsterInstance.from_config(str(work)) as instance:
        polls = instance.get_runs(filters=dg.RunsFilter(job_name=POLL_JOB_NAME), limit=50)
        existing = instance.get_runs_count()
        start = time.perf_counter()
        for i in range(max(0, ui_runs - existing)):
            template = polls[i % len(polls)]
            instance.add_run(template._replace(run_id=str(uuid.uuid4())))
        cloned_s = time.perf_counter() - start
        total = instance.get_runs_count()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        str(BIN / "dagster-webserver"),
        "-w",
        "workspace.yaml",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    with running(args, cwd=work, env=base_env(), log=log):
        wait_for(lambda: _up(url), timeout_s=240, what="dagster-webserver")
        _time_query(url, RUNS_QUERY, {"limit": 30}, n=2)  # warm-up
        runs_page = _time_query(url, RUNS_QUERY, {"limit": 30})
        asset_page = {
            name: _time_query(url, ASSET_QUERY, {"key": {"path": [name]}})
            for name in ("raw_events", "event_counts")
        }
    return {
        "runs_in_history": total,
        "cloned_runs_s": round(cloned_s, 1),
        "runs_page": runs_page,
        "asset_page": asset_page,
        "load_average": os.getloadavg(),
    }


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/server_info", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def _postgres(enabled: bool) -> Iterator[PgDatabase | None]:
    if not enabled:
        yield None
        return
    with postgres_server(system_packages.ensure(system_packages.POSTGRESQL)) as server:
        yield server.create_database(prefix="soak")


def _median(values: list[int]) -> int | None:
    return int(statistics.median(values)) if values else None


def _per_run(
    store: Store, runs: list[tuple[str, str, str]], start: dict[str, int]
) -> dict[str, Any]:
    """Each poll run's own bytes (redraw vs between redraws) and a quality run's, and what a poll
    costs at one poll a minute (REDRAW_EVERY, QUALITY_RUNS_PER_POLL, the sensor's ticks)."""
    import dagster as dg

    from gh_pipeline.defs.warehouse.keys import PR_INTERVALS

    cwd = Path.cwd()
    os.chdir(store.work)
    with dg.DagsterInstance.from_config(str(store.instance_dir)) as instance:
        redraws = {
            r.run_id for r in instance.fetch_materializations(PR_INTERVALS, limit=10_000).records
        }
    os.chdir(cwd)
    index = store.index_bytes_by_run()
    parts = store.parts()
    # Scale each run's JSON in the shared tables by what those tables grew by on disk per byte
    # (from the first sample: the empty schema is not a run's).
    key = "pg_database" if store.database else "index_db"
    scale = (parts[key] - start[key]) / max(1, sum(index.values()))
    runs_db_per_run = (parts.get("runs_db", 0) - start.get("runs_db", 0)) / max(1, len(runs))
    groups: dict[str, list[dict[str, int]]] = {"redraw": [], "between": [], "quality": []}
    for run_id, job, status in runs:
        if status != "SUCCESS":
            continue
        if job == POLL_JOB_NAME:
            group = "redraw" if run_id in redraws else "between"
        elif job == QUALITY_JOB_NAME:
            group = "quality"
        else:
            continue
        groups[group].append(
            {
                "run_shard": store.run_shard(run_id),
                "compute_logs": _du(store.home / "logs" / run_id),
                "index": round(index.get(run_id, 0) * scale),
            }
        )
    out: dict[str, Any] = {"runs": {k: len(v) for k, v in groups.items()}}
    own: dict[str, int | None] = {}
    for group, rows in groups.items():
        medians = {key: _median([r[key] for r in rows]) for key in ("run_shard", "compute_logs")}
        medians["index"] = _median([r["index"] for r in rows])
        medians["runs_db"] = round(runs_db_per_run)
        out[f"{group}_median_bytes"] = medians
        own[group] = sum(v for v in medians.values() if v) if rows else None
    ticks = store.ticks() if store.database is None else 0
    per_tick = (parts.get("schedules_db", 0) - start.get("schedules_db", 0)) / max(1, ticks)
    between, redraw = own["between"], own["redraw"]
    if between is None or redraw is None:
        return out
    poll_run = ((REDRAW_EVERY - 1) * between + redraw) / REDRAW_EVERY
    quality = (own["quality"] or 0) * QUALITY_RUNS_PER_POLL
    tick_bytes = per_tick * (SKIPPED_TICKS_PER_POLL + RUN_TICKS_PER_POLL)
    out.update(
        {
            "poll_run_at_one_poll_a_minute": round(poll_run),
            "quality_share_per_poll": round(quality),
            "ticks_per_poll": round(tick_bytes),
            "bytes_per_tick": round(per_tick),
            "dagster_bytes_per_poll_at_one_poll_a_minute": round(poll_run + quality + tick_bytes),
            "runs_kept_bytes_per_day": round((poll_run + quality) * DAY_POLLS),
            "ticks_kept_bytes": round(per_tick * TICKS_KEPT),
            "index_scale": round(scale, 2),
        }
    )
    return out


def _warehouse_per_event(data: Path, events: int) -> dict[str, float]:
    """Bytes per event of a compacted copy of the warehouse with its raw JSON and without
    (retention's pruning applied to everything)."""
    from gh_pipeline import warehouse
    from gh_pipeline.ops import retention
    from gh_pipeline.warehouse import catalogue

    with tempfile.TemporaryDirectory() as tmp:
        # An empty warehouse's tables and indexes, compacted: not any event's.
        with warehouse.connect(Path(tmp) / "empty.duckdb") as conn:
            warehouse.ensure_schema(conn)
            empty = _compacted(conn, Path(tmp), "empty-compact")
        copy = Path(tmp) / "warehouse.duckdb"
        shutil.copy(settings.warehouse_path(data), copy)
        with duckdb.connect(str(copy)) as conn:
            full = _compacted(conn, Path(tmp), "full")
            retention.prune_raw_json(conn, cutoff=datetime.now(UTC) + timedelta(days=1))
            typed = _compacted(conn, Path(tmp), "typed")
            # The tracked tables' reader snapshots at scale: each table's parts merged into one
            # Parquet file, as snapshot compaction keeps them. The soak's snapshot directory is
            # mostly per-part overhead (up to 64 small parts a table) and metric-table versions,
            # fixed costs that a per-event figure would multiply by a month of events.
            parquet = 0
            for table in (t.name for t in catalogue.FILTERED_TABLES.values()):
                out = Path(tmp) / f"{table}.parquet"
                conn.execute(f"COPY {table} TO $path (FORMAT parquet)", {"path": str(out)})
                parquet += out.stat().st_size
    return {
        "warehouse_json": round((full - typed) / max(1, events)),
        "warehouse_typed": round(max(0, typed - empty) / max(1, events)),
        "warehouse_empty_schema_bytes": empty,
        "snapshot": parquet / max(1, events),
    }


def _projection(
    per_event: dict[str, float],
    dagster_30d: int,
    events_per_poll: float,
    raw_days: int,
    untracked_days: int | None = settings.DEFAULT_UNTRACKED_RETENTION_DAYS,
) -> dict[str, Any]:
    day = events_per_poll * DAY_POLLS
    # None (0 in the setting) keeps untracked rows for the whole month; they also stay as long as
    # raw retention keeps their landing files.
    untracked_kept = (
        30 if untracked_days is None else max(untracked_days, raw_days) + UNTRACKED_EXTRA_DAYS
    )
    tracked_bytes = per_event.get("warehouse_typed_tracked", per_event["warehouse_typed"])
    untracked_bytes = per_event.get("warehouse_typed_untracked", per_event["warehouse_typed"])
    out = {
        "events_per_poll": round(events_per_poll, 1),
        "raw_retention_days": raw_days,
        "untracked_retention_days": untracked_days,
        "raw_days_kept_at_peak": round(raw_days + LANDING_EXTRA_DAYS, 2),
        "untracked_days_kept_at_peak": round(min(30, untracked_kept), 2),
        "dagster_mb": round(dagster_30d / 1e6),
        # Grows forever: tracked events' typed rows and their tables' snapshots.
        "warehouse_tracked_rows_mb": round(tracked_bytes * TRACKED_SHARE * day * 30 / 1e6),
        "snapshots_mb": round(per_event["snapshot"] * day * 30 / 1e6),
        # Capped: untracked rows by GH_PIPELINE_UNTRACKED_RETENTION_DAYS (then hourly counts of
        # a few hundred rows a day), raw JSON and landing files by raw retention.
        "warehouse_untracked_rows_mb": round(
            untracked_bytes * (1 - TRACKED_SHARE) * day * min(30, untracked_kept) / 1e6
        ),
        "warehouse_raw_json_mb": round(
            per_event["warehouse_json"] * day * (raw_days + RAW_JSON_EXTRA_DAYS) / 1e6
        ),
        "landing_mb": round(per_event["landing"] * day * (raw_days + LANDING_EXTRA_DAYS) / 1e6),
    }
    out["total_mb"] = sum(v for k, v in out.items() if k.endswith("_mb"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--polls", type=int, default=300, help="successful poll runs (default 300)")
    parser.add_argument("--batch", type=int, default=12, help="new events a second (default 12)")
    parser.add_argument(
        "--ui-runs", type=int, default=10_000, help="runs for the UI timing; 0 skips"
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="stop polling after this long even if fewer polls succeeded (default: polls x 20 s, "
        "at least 10 minutes)",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="Dagster storage in a throw-away PostgreSQL (deploy/postgres/dagster.yaml)",
    )
    parser.add_argument(
        "--data-dir", default=None, help="where benchmark output goes (default ./data)"
    )
    parser.add_argument(
        "--heap-probe",
        action="store_true",
        help="trace the daemon's and code server's Python heap (tracemalloc and live objects by "
        "type, every 60 s) to tell a Python-level leak from RSS growth below Python",
    )
    parser.add_argument(
        "--native-window",
        nargs=2,
        type=float,
        metavar=("AFTER_MIN", "FOR_MIN"),
        default=None,
        help="with --heap-probe: record the daemon's mallocs with native stacks (memray) from "
        "AFTER_MIN minutes after start for FOR_MIN minutes, and print what it allocated in that "
        "window and still held at its end, by allocating stack; polling lasts past the window",
    )
    parser.add_argument(
        "--malloc-arena-max",
        type=int,
        default=None,
        help="MALLOC_ARENA_MAX for dagster dev (default: unset, so the project's cap of 2 applies; "
        "0 for glibc's own default, to compare)",
    )
    parser.add_argument(
        "--ui-only",
        action="store_true",
        help="only the UI timing, on the history a previous soak left in <data>/benchmarks/soak",
    )
    args = parser.parse_args()
    if args.native_window and not args.heap_probe:
        parser.error("--native-window needs --heap-probe")

    out_dir = settings.data_dir(args.data_dir).resolve() / "benchmarks"
    suffix = "-postgres" if args.postgres else ""
    work = out_dir / f"soak{suffix}"
    if args.ui_only:
        print(json.dumps(_ui_timings(work, args.ui_runs, out_dir / "soak-webserver.log"), indent=2))
        return
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for name in ("dagster.yaml", "workspace.yaml"):
        shutil.copy(REPO_ROOT / name, work / name)
    (work / POSTGRES_HOME).mkdir(parents=True)
    shutil.copy(REPO_ROOT / POSTGRES_HOME / "dagster.yaml", work / POSTGRES_HOME)
    data = work / "data"
    log = out_dir / f"soak{suffix}-dagster-dev.log"
    log.unlink(missing_ok=True)
    samples_file = out_dir / f"soak{suffix}-samples.jsonl"
    samples_file.unlink(missing_ok=True)

    heap_dir = out_dir / f"soak{suffix}-heap"
    if heap_dir.exists():
        shutil.rmtree(heap_dir)
    probe_env: dict[str, str] = {}
    if args.heap_probe:
        heap_dir.mkdir(parents=True)
        probe_env = {
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(HEAP_PROBE), os.environ.get("PYTHONPATH", "")) if p
            ),
            "SOAK_HEAP_DIR": str(heap_dir),
            "SOAK_HEAP_EVERY_S": "60",
        }
        if args.native_window:
            after_min, for_min = args.native_window
            probe_env["SOAK_NATIVE_AFTER_S"] = str(after_min * 60)
            probe_env["SOAK_NATIVE_FOR_S"] = str(for_min * 60)

    feed = [trim_event(e) for e in numbered_feed(150, serial=0)]
    stop = threading.Event()
    samples: list[dict[str, Any]] = []
    cwd = Path.cwd()
    with _postgres(args.postgres) as database, FakeGitHub(feed, poll_interval=1) as fake:
        store = Store(work, database)
        if database is not None:  # this process opens the instance too (housekeeping, figures)
            os.environ.update(database.env())

        def arrive() -> None:
            serial = 0
            while not stop.wait(1.0):
                serial += 1
                batch = numbered_feed(args.batch, serial=serial, offset=serial * args.batch)
                fake.push([trim_event(e) for e in batch])

        pusher = threading.Thread(target=arrive, daemon=True)
        pusher.start()
        arena_env = (
            {}
            if args.malloc_arena_max is None
            else {"MALLOC_ARENA_MAX": str(args.malloc_arena_max)}
        )
        env = base_env(GITHUB_API_URL=fake.url, **store.env(), **probe_env, **arena_env)
        port = free_port()
        cmd = [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-p", str(port)]
        started = time.monotonic()
        with running(cmd, cwd=work, env=env, log=log) as proc:
            wait_for(lambda: _up(f"http://127.0.0.1:{port}"), timeout_s=300, what="the UI")
            ui_up_s = time.monotonic() - started
            # What the processes really run with, read from /proc: the daemon's MALLOC_ARENA_MAX.
            arena_max_seen = next(
                (
                    process_environ(p.pid).get("MALLOC_ARENA_MAX", "unset")
                    for p in group_processes(proc.pid)
                    if p.role == "daemon"
                ),
                "no daemon found",
            )
            print(
                f"UI up after {ui_up_s:.0f} s ({store.name}, daemon MALLOC_ARENA_MAX="
                f"{arena_max_seen}); polling until {args.polls} poll "
                "runs succeed",
                flush=True,
            )
            bound_s = args.minutes * 60 if args.minutes else max(600, args.polls * 20)
            # The daemon's native window is counted from its start (about when the UI came up);
            # its file is written when the window closes, so polling goes on a minute past that.
            native_end = (
                started + ui_up_s + sum(args.native_window) * 60 + 60 if args.native_window else 0
            )
            bound_s = max(bound_s, native_end - time.monotonic())
            deadline = time.monotonic() + bound_s
            while time.monotonic() < deadline:
                runs = store.runs()
                ok = sum(
                    1 for _, job, status in runs if job == POLL_JOB_NAME and status == "SUCCESS"
                )
                sample = {
                    "t_s": round(time.monotonic() - started),
                    "at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "load_average": os.getloadavg()[0],
                    "poll_runs_ok": ok,
                    "runs": len(runs),
                    **_sizes(data, store),
                    "rss": _group_rss(proc.pid),
                }
                samples.append(sample)
                with samples_file.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(sample) + "\n")
                print(
                    f"  t={sample['t_s']:>5}s load={sample['load_average']:.1f} polls={ok:>4} "
                    f"runs={len(runs):>4} dagster={sample['dagster'] / 1e6:7.1f} MB "
                    f"warehouse={sample['warehouse'] / 1e6:6.1f} MB "
                    + " ".join(f"{k}={v / 1e6:.0f}MB" for k, v in sorted(sample["rss"].items())),
                    flush=True,
                )
                if ok >= args.polls and time.monotonic() > native_end:
                    break
                time.sleep(SAMPLE_EVERY_S)
            kill_group(proc)
        stop.set()
        served = len(fake.requests)
        result = _analyse(store, data, samples, served, ui_up_s, args.polls)
        result["malloc_arena_max"] = arena_max_seen
        if args.heap_probe:
            result["heap"] = _heap_summary(heap_dir)
        if args.native_window:
            result["native_held"] = _native_summary(heap_dir)
        os.chdir(cwd)
        _report(result, out_dir, suffix)
    if args.ui_runs and not args.postgres:
        result["ui"] = _ui_timings(work, args.ui_runs, out_dir / "soak-webserver.log")
        os.chdir(cwd)
        _report(result, out_dir, suffix)


def _heap_summary(heap_dir: Path) -> dict[str, Any]:
    """Per probed process: RSS and Python's traced heap, mean of the first and second half of the
    samples after the first (tracing starts there), and the types whose live count grew most
    from the middle sample to the last."""
    out: dict[str, Any] = {}
    for path in sorted(heap_dir.glob("*.jsonl")):
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()][1:]
        if len(records) < 4:
            out[path.stem] = {"samples": len(records), "note": "too few samples"}
            continue
        half = len(records) // 2

        def halves(key: str, rows: list[dict[str, Any]] = records, h: int = half) -> list[float]:
            return [
                round(statistics.fmean(r[key] for r in rows[:h]) / 1e6, 1),
                round(statistics.fmean(r[key] for r in rows[h:]) / 1e6, 1),
            ]

        middle, last = records[half]["types"], records[-1]["types"]
        grew = sorted(
            ((last.get(k, 0) - middle.get(k, 0), k) for k in set(middle) | set(last)),
            reverse=True,
        )
        out[path.stem] = {
            "samples": len(records),
            "minutes": round((records[-1]["t_s"] - records[0]["t_s"]) / 60, 1),
            "rss_mb_halves": halves("rss_bytes"),
            "traced_mb_halves": halves("traced_bytes"),
            "traced_mb_min_max_second_half": [
                round(min(r["traced_bytes"] for r in records[half:]) / 1e6, 1),
                round(max(r["traced_bytes"] for r in records[half:]) / 1e6, 1),
            ],
            "types_grown_middle_to_last": {k: n for n, k in grew[:8] if n > 0},
        }
    return out


def _native_summary(heap_dir: Path, top: int = 15) -> dict[str, Any]:
    """What the daemon allocated inside the native window and still held when it closed, by
    allocating stack (memray's leak records, threads merged), largest first."""
    import memray  # a dev dependency, needed only here

    out: dict[str, Any] = {}
    for path in sorted(heap_dir.glob("*.memray")):
        reader = memray.FileReader(path)
        records = sorted(
            reader.get_leaked_allocation_records(merge_threads=True), key=lambda r: -r.size
        )
        held = sum(r.size for r in records)
        stacks = [_split_stack(r) for r in records]  # hybrid stacks are not cheap: read once
        by_python: dict[str, int] = {}
        for record, (_, python) in zip(records, stacks, strict=True):
            key = python[0] if python else "(no Python frame)"
            by_python[key] = by_python.get(key, 0) + record.size
        window_s = (reader.metadata.end_time - reader.metadata.start_time).total_seconds()
        out[path.stem] = {
            "window_minutes": round(window_s / 60, 1),
            "held_mb": round(held / 1e6, 2),
            "held_allocations": sum(r.n_allocations for r in records),
            "peak_mb": round(reader.metadata.peak_memory / 1e6, 1),
            "by_python_frame_kb": {
                k: round(v / 1e3, 1)
                for k, v in sorted(by_python.items(), key=lambda kv: -kv[1])[:top]
            },
            "top": [
                {
                    "kb": round(r.size / 1e3, 1),
                    "allocations": r.n_allocations,
                    "native": native,
                    "python": python,
                }
                for r, (native, python) in zip(records[:top], stacks, strict=False)
            ],
        }
    return out


def _split_stack(record: Any) -> tuple[list[str], list[str]]:
    """A held allocation's stack, innermost first, as the native frames below the first Python
    frame (which library allocated) and the Python frames (which code asked), CPython's own
    interpreter frames left out of the latter."""
    frames = [
        (f"{function} {Path(file).name}:{line}", file.endswith(".py") or file.startswith("<"))
        for function, file, line in record.hybrid_stack_trace()
    ]
    first_py = next((i for i, (_, is_py) in enumerate(frames) if is_py), len(frames))
    native = [text for text, _ in frames[:first_py]][:12]
    python = [text for text, is_py in frames[first_py:] if is_py][:12]
    return native, python


def _analyse(
    store: Store,
    data: Path,
    samples: list[dict[str, Any]],
    served: int,
    ui_up_s: float,
    polls_wanted: int,
) -> dict[str, Any]:
    runs = store.runs()
    first = next(s for s in samples if s["poll_runs_ok"] >= 1)
    last = samples[-1]
    n = last["poll_runs_ok"] - first["poll_runs_ok"]
    per_poll = {
        key: round((last[key] - first[key]) / n) if n else None
        for key in ("dagster", "warehouse", "landing", "snapshot")
    }
    per_poll_parts = {
        key: round((last["dagster_parts"][key] - first["dagster_parts"][key]) / n) if n else None
        for key in last["dagster_parts"]
    }
    with duckdb.connect(str(settings.warehouse_path(data)), read_only=True) as conn:
        events = conn.execute("SELECT count(*) FROM raw_events").fetchone()[0]
        tracked = conn.execute(
            "SELECT (SELECT count(*) FROM watch_events) + (SELECT count(*) FROM "
            "pull_request_events) + (SELECT count(*) FROM issues_events)"
        ).fetchone()[0]
    quarter = max(1, len(samples) // 4)

    def rss_of(part: list[dict[str, Any]]) -> dict[str, float]:
        roles = {r for s in part for r in s["rss"]} - {"other"}
        return {r: round(statistics.mean(s["rss"].get(r, 0) for s in part) / 1e6, 1) for r in roles}

    def rss_trend(part: list[dict[str, Any]]) -> dict[str, float]:
        """Least-squares slope of each process's RSS over `part`, in MB per 100 poll runs: a
        process that levels off after warming up shows ~0 over the second half."""
        roles = {r for s in part for r in s["rss"]} - {"other"}
        out: dict[str, float] = {}
        xs = [s["poll_runs_ok"] for s in part]
        if len(part) < 3 or max(xs) == min(xs):
            return out
        for role in sorted(roles):
            ys = [s["rss"].get(role, 0) / 1e6 for s in part]
            out[role] = round(statistics.linear_regression(xs, ys).slope * 100, 1)
        return out

    own = _per_run(store, runs, samples[0]["dagster_parts"])

    # Housekeeping: everything created before the middle of the soak is past the window.
    import dagster as dg

    from gh_pipeline.definitions import defs
    from gh_pipeline.defs.ops.housekeeping import housekeep

    os.chdir(store.work)
    with dg.DagsterInstance.from_config(str(store.instance_dir)) as instance:
        records = instance.get_run_records(filters=dg.RunsFilter(job_name=POLL_JOB_NAME))
        times = sorted(r.create_timestamp for r in records)
        middle = times[len(times) // 2]
        before = store.parts()
        report = housekeep(
            instance,
            success_cutoff=middle,
            failure_cutoff=middle,
            check_keys=defs().resolve_asset_graph().asset_check_keys,
        )
        after = store.parts()
        remaining = instance.get_runs_count()
    housekeeping: dict[str, Any] = {
        "runs_before": len(runs),
        "runs_deleted": len(report.deleted),
        "runs_kept_for_latest": len(report.kept_for_latest),
        "runs_after": remaining,
        "dagster_before_mb": round(sum(before.values()) / 1e6, 2),
        "dagster_after_mb": round(sum(after.values()) / 1e6, 2),
        "parts_before": before,
        "parts_after": after,
    }
    if store.database is not None:
        housekeeping["tables_after"] = store.table_sizes()
        conn = store.database.connect()
        try:
            conn.autocommit = True
            conn.cursor().execute("VACUUM")  # what autovacuum does in time: space reusable
        finally:
            conn.close()
        housekeeping["after_vacuum"] = store.parts()

    # 30 days at one poll a minute, default retention.
    per_event = {
        "landing": last["landing"] / max(1, events),
        **_warehouse_per_event(data, events),
    }
    run_days = settings.DEFAULT_RUN_RETENTION_DAYS
    dagster_30d = (
        # Housekeeping runs hourly: up to an hour past the window at its peak.
        own["runs_kept_bytes_per_day"] * (run_days + 1 / 24) + own["ticks_kept_bytes"]
        if "runs_kept_bytes_per_day" in own
        else 0
    )
    disk_cost = {
        **DISK_COST_PER_EVENT,
        "snapshot": DISK_COST_PER_EVENT["snapshot_per_tracked"] * TRACKED_SHARE,
    }
    events_per_poll = events / max(1, last["poll_runs_ok"])
    projection = {
        "soak_per_event_bytes": {
            k: round(v) for k, v in per_event.items() if k != "warehouse_empty_schema_bytes"
        },
        "warehouse_empty_schema_bytes": per_event["warehouse_empty_schema_bytes"],
        "disk_cost_benchmark_per_event_bytes": DISK_COST_PER_EVENT,
        "defaults": {
            "soak_rate_soak_bytes": _projection(
                per_event, dagster_30d, events_per_poll, settings.DEFAULT_RAW_RETENTION_DAYS
            ),
            "feed_maximum_soak_bytes": _projection(
                per_event, dagster_30d, 300, settings.DEFAULT_RAW_RETENTION_DAYS
            ),
            "feed_maximum_disk_cost_bytes": _projection(
                disk_cost, dagster_30d, 300, settings.DEFAULT_RAW_RETENTION_DAYS
            ),
        },
        "feed_maximum_disk_cost_bytes_by_raw_retention_days": {
            days: _projection(disk_cost, dagster_30d, 300, days)["total_mb"]
            for days in RETENTION_CHOICES
        },
    }
    return {
        "storage": store.name,
        "polls_wanted": polls_wanted,
        "polls_ok": last["poll_runs_ok"],
        "soak_minutes": round(last["t_s"] / 60, 1),
        "load_average_first_last": [first["load_average"], last["load_average"]],
        "load_average_mean": round(statistics.mean(s["load_average"] for s in samples), 1),
        "runs_total": len(runs),
        "requests_served": served,
        "events_stored": events,
        "tracked_events_stored": tracked,
        "ui_up_s": round(ui_up_s),
        "per_poll_run_bytes_at_soak_cadence": per_poll,
        "dagster_parts_per_poll_run_at_soak_cadence": per_poll_parts,
        "dagster_per_run": own,
        "rss_mb_first_quarter": rss_of(samples[:quarter]),
        "rss_mb_last_quarter": rss_of(samples[-quarter:]),
        "rss_mb_by_quarter": [
            rss_of(samples[i * quarter : (i + 1) * quarter if i < 3 else None]) for i in range(4)
        ],
        "rss_mb_per_100_polls_second_half": rss_trend(samples[len(samples) // 2 :]),
        "rss_mb_per_100_polls_whole_soak": rss_trend(samples),
        "housekeeping": housekeeping,
        "projection_30d": projection,
        "samples": samples,
    }


def _report(result: dict[str, Any], out_dir: Path, suffix: str) -> None:
    printable = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(printable, indent=2), flush=True)
    (out_dir / f"soak{suffix}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
