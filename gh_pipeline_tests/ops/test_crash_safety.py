"""kill -9 during writes, many times: the warehouse opens, no load is half there, no id twice.

Each round lands a few new files (as polls do), then starts a real worker process that loads
every landing file and refreshes the filtered and metric tables (the tick), or rebuilds the whole
warehouse from the landing files and swaps it in. The test kills the worker with SIGKILL at a
random moment once it has opened the warehouse, then opens the warehouse itself and checks the
invariants. At the end an uninterrupted worker must bring everything to the exact expected state.

The worker is gh_pipeline_tests.support.crash_worker.
"""

import gzip
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb

from gh_pipeline import settings, warehouse
from gh_pipeline.live import landing
from gh_pipeline.ops import quality
from gh_pipeline.warehouse import catalogue
from gh_pipeline_tests.support.crash_worker import AS_OF
from gh_pipeline_tests.support.fake_github import archive_fixture_events

REPO_ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 20
FILES_PER_ROUND = 3
EVENTS_PER_FILE = 30
BAD_LINES = ("{not json at all\n", '{"id": "bad-%d", "type": "PushEvent", "created_at": "soon"}\n')


# -- the test -------------------------------------------------------------------------------


def _real_events() -> list[dict[str, Any]]:
    events: dict[str, dict[str, Any]] = {}
    for event in archive_fixture_events():
        events.setdefault(str(event["id"]), event)
    return list(events.values())


def _land(root: Path, index: int, events: list[dict[str, Any]]) -> tuple[str, set[str], int]:
    """Write one landing file (every fourth with two lines the loader must reject)."""
    poll_id = f"poll-{index:03d}"
    path = landing.landing_path(root, source="api", poll_id=poll_id, at=AS_OF)
    path.parent.mkdir(parents=True, exist_ok=True)
    bad = [BAD_LINES[0], BAD_LINES[1] % index] if index % 4 == 0 else []
    tmp = path.with_name(f".{path.name}.tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as fh:
        for event in events:
            fh.write(json.dumps(event) + "\n")
        fh.writelines(bad)
    tmp.replace(path)
    return poll_id, {str(e["id"]) for e in events}, len(bad)


def _start(mode: str, data_dir: Path, seed: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gh_pipeline_tests.support.crash_worker",
            mode,
            str(data_dir),
            str(seed),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _check_invariants(
    data_dir: Path, files: dict[str, tuple[set[str], int]], *, final: bool = False
) -> None:
    # The warehouse opens (DuckDB replays or discards its WAL here).
    conn = duckdb.connect(str(settings.warehouse_path(data_dir)))
    try:
        warehouse.ensure_schema(conn)
        raw = conn.execute("SELECT count(*), count(DISTINCT event_id) FROM raw_events").fetchall()
        assert raw[0][0] == raw[0][1], "an event id is stored twice"
        per_poll = dict(
            conn.execute("SELECT poll_id, count(*) FROM raw_events GROUP BY poll_id").fetchall()
        )
        rejected = dict(
            conn.execute(
                "SELECT poll_id, count(*) FROM rejected_events GROUP BY poll_id"
            ).fetchall()
        )
        for poll_id, (ids, bad) in files.items():
            # All of a file's rows or none: its events and its rejected lines commit together.
            got = per_poll.get(poll_id, 0)
            assert got in (0, len(ids)), f"{poll_id}: {got} of {len(ids)} rows"
            assert rejected.get(poll_id, 0) == (bad if got else 0), poll_id
            if final:
                assert got == len(ids), f"{poll_id} never loaded"
        assert set(per_poll) <= set(files)
        for name, table in catalogue.FILTERED_TABLES.items():
            dup = warehouse.scalar(conn, f"SELECT count(*) - count(DISTINCT event_id) FROM {name}")
            assert dup == 0, f"{name} holds an event twice"
            # Every filtered row is a raw event of its type (nothing half-written or invented).
            stray = warehouse.scalar(
                conn,
                f"SELECT count(*) FROM {name} f WHERE NOT EXISTS (SELECT 1 FROM raw_events r"
                " WHERE r.event_id = f.event_id AND r.event_type = $t)",
                {"t": table.event_type},
            )
            assert stray == 0, f"{name} has rows that are not in raw_events"
            if final:
                missing = warehouse.scalar(
                    conn,
                    f"SELECT count(*) FROM raw_events r WHERE event_type = $t AND NOT EXISTS"
                    f" (SELECT 1 FROM {name} f WHERE f.event_id = r.event_id)",
                    {"t": table.event_type},
                )
                assert missing == 0, f"{name} misses raw events"
        # Metric tables may lag the filtered ones after a kill, but are never half-written.
        valid = quality.check_pr_intervals(conn)
        for problem in ("negative_interval", "avg_without_two", "two_without_avg"):
            assert valid.metadata.get(problem, 0) == 0, valid.summary
        cells = warehouse.scalar(
            conn, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'event_counts'"
        )
        if cells:
            assert warehouse.scalar(conn, "SELECT count(*) FROM event_counts") in (0, 15)
        if final:
            for check in (
                quality.check_unique_ids,
                quality.check_pr_intervals,
                quality.check_repo_pr_counts,
                quality.check_event_counts,
            ):
                finding = check(conn)
                assert finding.passed, finding.summary
    finally:
        conn.close()


def test_kill_9_during_loads_ticks_and_rebuilds(data_dir: Path) -> None:
    rng = random.Random(20251007)
    pool = _real_events()
    rng.shuffle(pool)
    root = settings.landing_dir(data_dir)
    files: dict[str, tuple[set[str], int]] = {}
    interrupted = 0
    for round_ in range(ROUNDS):
        for _ in range(FILES_PER_ROUND):
            index = len(files)
            chunk = pool[index * EVENTS_PER_FILE : (index + 1) * EVENTS_PER_FILE]
            poll_id, ids, bad = _land(root, index, chunk)
            files[poll_id] = (ids, bad)
        mode = "rebuild" if round_ % 4 == 3 else "load"
        proc = _start(mode, data_dir, seed=round_)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            # Rebuilds run longer (they replay every file): give the kill a wider window.
            delay = rng.uniform(0.0, 2.0 if mode == "rebuild" else 0.8)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            finished = "done" in proc.stdout.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        interrupted += not finished
        _check_invariants(data_dir, files)

    # The kills must have landed mid-write, or this test proves nothing.
    assert interrupted >= ROUNDS // 2, f"only {interrupted} of {ROUNDS} workers were interrupted"

    # A restart with nobody killing it completes the work exactly once.
    final = _start("load", data_dir, seed=999)
    assert final.wait(timeout=120) == 0
    _check_invariants(data_dir, files, final=True)
    expected = set().union(*(ids for ids, _ in files.values()))
    with duckdb.connect(str(settings.warehouse_path(data_dir)), read_only=True) as conn:
        stored = {r[0] for r in conn.execute("SELECT event_id FROM raw_events").fetchall()}
    assert stored == expected
