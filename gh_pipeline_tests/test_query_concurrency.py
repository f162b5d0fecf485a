"""Readers in another process never fail and never make the pipeline fail.

The pipeline polls the fake GitHub (real HTTP, X-Poll-Interval 1) and materialises raw ->
filtered -> metrics again and again in this process, while a separate Python process calls every
gh_pipeline.query function in a tight loop against the same data directory.
"""

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from gh_pipeline import query
from gh_pipeline.defs.jobs import POLL_JOB_NAME
from gh_pipeline.models import TRACKED_EVENT_TYPES
from gh_pipeline_tests.fake_github import (
    FakeGitHub,
    load_recorded,
    recorded_2019_feed,
    redate,
    trim_event,
)

RUNS = 5
FIRST_BATCH = 60
BATCH = 25

# Runs in a fresh interpreter that imports only gh_pipeline.query (no Dagster), as a notebook would.
READER = r"""
import json, sys, time, traceback
from pathlib import Path
from gh_pipeline import query

data_dir, stop_file = sys.argv[1], Path(sys.argv[2])
errors, calls, seen_states, max_events = [], 0, set(), 0
print("ready", flush=True)
while not stop_file.exists():
    try:
        published = query.last_updated(data_dir=data_dir)
        seen_states.add(tuple(published["published_at"].astype(str)))
        events = query.events(data_dir=data_dir)
        # Snapshots only ever grow: fewer events than an earlier read would mean a torn or
        # rolled-back file.
        if len(events) < max_events:
            errors.append(f"events went from {max_events} to {len(events)}")
        max_events = max(max_events, len(events))
        if events["event_id"].duplicated().any():
            errors.append("duplicate event ids in one read")
        counts = query.event_counts(1440, data_dir=data_dir)
        if len(events) and sorted(counts["event_type"]) != sorted(
            ["WatchEvent", "PullRequestEvent", "IssuesEvent"]
        ):
            errors.append(f"event_counts rows: {counts['event_type'].tolist()}")
        intervals = query.pr_intervals(data_dir=data_dir)
        if (intervals["pr_opened"] < 1).any():
            errors.append("pr_intervals row with no opened PR")
        query.repo_pr_counts(10, data_dir=data_dir)
        query.event_intervals("WatchEvent", data_dir=data_dir)
        query.active_repos("PullRequestEvent", 1, data_dir=data_dir)
        query.top_repos(data_dir=data_dir)
        query.user_sessions(data_dir=data_dir)
        calls += 9
    except Exception:
        errors.append(traceback.format_exc(limit=3))
    time.sleep(0.02)  # a busy notebook, not a spin loop starving the pipeline of the 2 CPUs
print(json.dumps({"errors": errors, "calls": calls, "states": len(seen_states),
                  "max_events": max_events}), flush=True)
"""


def _pool() -> list[dict[str, Any]]:
    """Real recorded events in today's trimmed shape, to be re-dated to 'now' batch by batch."""
    return [
        trim_event(e)
        for e in recorded_2019_feed() + load_recorded("repo-events-duckdb-2023-page01.json")
    ]


def _batch(pool: list[dict[str, Any]], start: int, size: int, serial: int) -> list[dict[str, Any]]:
    fresh = redate(pool[start : start + size], newest=datetime.now(UTC), step_s=2)
    for event in fresh:
        event["id"] = f"{event['id']}{serial:03d}"  # unique across batches, like the real feed
    return fresh


def test_readers_never_fail_and_never_fail_a_run(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = _pool()
    assert len(pool) >= FIRST_BATCH + (RUNS - 1) * BATCH
    stop_file = tmp_path / "stop-reader"
    with FakeGitHub(poll_interval=1) as fake:
        monkeypatch.setenv("GITHUB_API_URL", fake.url)
        pushed = _batch(pool, 0, FIRST_BATCH, serial=0)
        fake.push(pushed)
        from gh_pipeline.definitions import defs

        job = defs().resolve_job_def(POLL_JOB_NAME)
        instance = dg.DagsterInstance.ephemeral()
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, str(data_dir), str(stop_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        failed_runs: list[str] = []
        run_seconds: list[float] = []
        try:
            assert reader.stdout is not None
            assert reader.stdout.readline().strip() == "ready"
            for run in range(RUNS):
                if run:
                    batch = _batch(pool, FIRST_BATCH + (run - 1) * BATCH, BATCH, serial=run)
                    fake.push(batch)
                    pushed += batch
                started = time.perf_counter()
                result = job.execute_in_process(instance=instance, raise_on_error=False)
                run_seconds.append(time.perf_counter() - started)
                if not result.success:
                    failed_runs.append(result.run_id)
        finally:
            stop_file.touch()
            out, err = reader.communicate(timeout=120)
    report = json.loads(out.strip().splitlines()[-1])
    # Figures for the log (pytest -s), not assertions: speed depends on the machine.
    print(
        f"{RUNS} runs ({', '.join(f'{s:.1f}' for s in run_seconds)} s); reader: "
        f"{report['calls']} calls, {report['states']} snapshot states seen"
    )
    assert failed_runs == []
    assert reader.returncode == 0, err
    assert report["errors"] == []
    # The reader really ran alongside the pipeline: it saw several different publications.
    assert report["calls"] > 0
    assert report["states"] >= 2
    # And the final snapshot holds every tracked event the fake served, once.
    tracked = {e["id"] for e in pushed if e["type"] in TRACKED_EVENT_TYPES}
    final = query.events(data_dir=data_dir)
    assert set(final["event_id"]) == tracked
    assert report["max_events"] <= len(tracked)
    assert len(query.last_updated(data_dir=data_dir)) == 6
