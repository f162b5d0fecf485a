"""Readers in another process never fail and never make the pipeline fail.

The pipeline polls the fake GitHub (real HTTP, X-Poll-Interval 1) and materialises raw ->
filtered -> metrics again and again in this process, while a separate Python process calls every
gh_pipeline.read.query function in a tight loop against the same data directory.
"""

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from gh_pipeline.defs.live.jobs import POLL_JOB_NAME
from gh_pipeline.read import query
from gh_pipeline.warehouse.catalogue import TRACKED_EVENT_TYPES
from gh_pipeline_tests.support.fake_github import (
    FakeGitHub,
    load_recorded,
    recorded_2019_feed,
    redate,
    trim_event,
)
from gh_pipeline_tests.support.query_reader import reader_process

RUNS = 5
FIRST_BATCH = 60
BATCH = 25


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
        failed_runs: list[str] = []
        run_seconds: list[float] = []
        # The reader pauses 20 ms between rounds: a busy notebook, not a spin loop starving the
        # pipeline of the 2 CPUs.
        with reader_process(data_dir, stop_file, pause_s=0.02) as report:
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
    # Figures for the log (pytest -s), not assertions: speed depends on the machine.
    print(
        f"{RUNS} runs ({', '.join(f'{s:.1f}' for s in run_seconds)} s); reader: "
        f"{report['calls']} calls, {report['states']} snapshot states seen"
    )
    assert failed_runs == []
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
